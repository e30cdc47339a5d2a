"""What the method cannot do well, found before it runs: each check looks at one photo (or the
pair) and says, in words a person understands, why the result would look edited.

Every :class:`Concern` names the photo (target or source) and the reason. The pipeline declines
a pair with a :class:`CannotDoWell` error (one sentence, exit status 2 on the command line) when
a concern is serious, and otherwise gives the result with the concern as a warning line and in
its metadata (``meta['concerns']``). ``force=True`` turns declines into warnings.

| check | measured on | warn | decline |
| --- | --- | --- | --- |
| headwear | parser's ``hat`` part over hair+hat | source: hat >= 15% | hat >= 40% (source or target) |
| head turned | yaw from Face Mesh's 3-D points (``Landmarks.yaw_degrees``) | > 25° | > 40° |
| heads turned apart | target yaw - source yaw | > 30° | > 45° |
| hair cut off by the photo | source hair along the photo's edges, where it lands inside the target photo | one side | two or more sides |
| hairstyle outside the target photo | the share of the new hair's matte inside the target photo: all of it, and above the eyes | above the eyes < 60% | both < 45% |
| hands | MediaPipe Hands | | a hand touches the source's hair, or what the try-on changes in the target |
| other people | other faces found in the photo | | another head touches the source's hair, or what the try-on changes in the target |
| body to invent | target's neck and shoulders hidden under old hair and left bare | large | large, with no clothes visible to copy |
| hidden features | an eye or eyebrow (Face Mesh hull) under the target's old hair, which the new hair leaves bare | > 8% of it | > 15% of it |
| too much to invent | what the target's old hair hid and the new hair leaves bare (scene, clothes, skin), over the face's area | > 1.0x | > 1.3x |
| head to invent | the top of the head (:func:`hairtryon.mapping.skull`) beside the face, under the target's old hair, that the new hair leaves bare and the rebuild would make scene, over the face's area | > 0.8% | > 1.2% |

Arrays are in a photo's work frame: masks (S, S) bool, points (N, 2) frame pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import cv2
import numpy as np

from .errors import HairTryOnError
from .framing import grow as grow_mask

HAT_WARN, HAT_DECLINE = 0.15, 0.40
HEAD_WARN, HEAD_DECLINE = 0.008, 0.012  # bare head over face area (head_check)
HAIR_TOO_LITTLE = 0.12  # source hair over face area; measured: babies and shaved heads 0.05-0.08, buzz cuts 0.25+
YAW_WARN, YAW_DECLINE = 25.0, 40.0
YAW_DIFF_WARN, YAW_DIFF_DECLINE = 30.0, 45.0


class CannotDoWell(HairTryOnError):
    """The pair is one the method cannot do well (headwear, a turned head, ...): declined."""

    def __init__(self, concerns: Sequence["Concern"]):
        self.concerns = list(concerns)
        self.reasons = " ".join(c.message for c in self.concerns if c.decline)  # without the CLI's hint
        super().__init__(self.reasons + " (use --force to try anyway).")


@dataclass(frozen=True)
class Concern:
    """One reason a result would look edited. ``code``: short name (headwear, yaw, cut_off,
    hands, other_people, no_hair, body, features, invent, outside); ``photo``: 'target' or 'source'; ``message``: one sentence;
    ``decline``: serious enough to decline; ``value``: the measured figure."""

    code: str
    photo: str
    message: str
    decline: bool
    value: float = float("nan")


@dataclass
class Checks:
    """All concerns of one pair."""

    concerns: List[Concern] = field(default_factory=list)

    @property
    def declines(self) -> List[Concern]:
        return [c for c in self.concerns if c.decline]

    @property
    def warnings(self) -> List[str]:
        return [c.message for c in self.concerns if not c.decline]

    def raise_if_declined(self, force: bool = False) -> None:
        if self.declines and not force:
            raise CannotDoWell(self.declines)


# ------------------------------------------------------------------------------------ measures
def hat_share(hair_prob: np.ndarray, hat_prob: np.ndarray) -> float:
    """Share of the hair+headwear pixels ((S, S) float32 probabilities of the 5-class hair, which
    includes headwear, and of the parser's hat part) that are headwear."""
    hair = hair_prob > 0.5
    if hair.sum() < 50:
        return 0.0
    return float((hat_prob[hair] > 0.5).mean())


def cut_lines(hair: np.ndarray, inside: np.ndarray, width: int = 3) -> dict:
    """Where the photo's edges cut the hair off: for each side ('top', 'bottom', 'left', 'right')
    of the photo's boundary inside the frame (where ``inside`` (S, S) bool ends), the hair pixels
    ((S, S) bool) within ``width`` pixels of it, as (S, S) bool masks (only the sides that do)."""
    out = {}
    ys, xs = np.nonzero(inside)
    if not len(ys):
        return out
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    s = inside.shape[0]
    sides = {"top": (y0 > 0, np.s_[y0:y0 + width, :]), "bottom": (y1 < s - 1, np.s_[y1 - width + 1:y1 + 1, :]),
             "left": (x0 > 0, np.s_[:, x0:x0 + width]), "right": (x1 < s - 1, np.s_[:, x1 - width + 1:x1 + 1])}
    for name, (is_edge, sl) in sides.items():
        line = np.zeros_like(hair)
        line[sl] = hair[sl] & inside[sl]
        if is_edge and line.any():
            out[name] = line
    return out


def cut_off_check(visible: dict, face_width: float) -> List[Concern]:
    """A concern where the source photo's edges cut its hair off where it shows on the target:
    ``visible`` maps each side to the length (target-frame pixels) of its cut line that lands
    inside the target photo. Two or more sides with a cut longer than a quarter of the face's
    width decline (the hair would end in straight lines); one side warns (it is continued)."""
    sides = [k for k, v in visible.items() if v >= 0.25 * face_width]
    if len(sides) >= 2:
        return [Concern("cut_off", "source", f"In the source photo, the hairstyle is cut off by the photo's "
                                             f"{' and '.join(sides)} edges, and on this target it would end there.",
                        True, len(sides))]
    if sides:
        return [Concern("cut_off", "source", f"In the source photo, the hairstyle is cut off by the photo's "
                                             f"{sides[0]} edge; it was continued there.", False, 1)]
    return []


def plausible_hands(hands: Sequence[np.ndarray], face_height: float, image: Optional[np.ndarray] = None,
                    skin_lab: Optional[np.ndarray] = None, min_size: float = 0.45,
                    max_delta_e: float = 30.0) -> List[np.ndarray]:
    """The hands (each (21, 2) points, in ``image`` pixels) that look like hands: at least
    ``min_size`` of ``face_height`` long (a hand is about as long as a face; much smaller 'hands'
    are the detector seeing an ear), and, given the photo (``image`` (H, W, 3) uint8) and the
    face's skin colour (``skin_lab``, CIELAB (3,)), with skin inside them (median colour within
    ``max_delta_e`` of it; the detector also sees hands in hair), spanning an area, not a line."""
    out = []
    for h in hands:
        length = float(np.ptp(h, axis=0).max())
        if length < min_size * face_height:
            continue
        # a hand's 21 points span an area; a detection collapsed onto a line is not a hand
        if cv2.contourArea(cv2.convexHull(h.astype(np.float32))) < 0.1 * length ** 2:
            continue
        if image is not None and skin_lab is not None:
            x0, y0 = np.floor(h.min(0)).astype(int)
            x1, y1 = np.ceil(h.max(0)).astype(int)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(image.shape[1], x1 + 1), min(image.shape[0], y1 + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            box = image[y0:y1, x0:x1]
            inside = _hull_mask(h - [x0, y0], max(box.shape[:2]), 0)[:box.shape[0], :box.shape[1]]
            if inside.sum() < 10:
                continue
            lab = cv2.cvtColor(box, cv2.COLOR_RGB2LAB).astype(np.float32)[inside]
            lab = lab * [100 / 255, 1, 1] - [0, 128, 128]
            if np.linalg.norm(np.median(lab, axis=0) - skin_lab) > max_delta_e:
                continue
        out.append(h)
    return out


def _hull_mask(points: np.ndarray, size: int, grow: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return grow_mask(mask.astype(bool), grow)


def touches(points_list: Sequence[np.ndarray], region: np.ndarray, grow: float) -> bool:
    """Whether any of the point sets ((N, 2) frame pixels, e.g. a hand's landmarks or another
    face's mesh), as a convex hull grown by ``grow`` pixels, overlaps ``region`` ((S, S) bool)."""
    s = region.shape[0]
    return any((_hull_mask(p, s, grow) & region).any() for p in points_list
               if len(p) and np.isfinite(p).all() and (p.min() < s and p.max() > 0))


# ------------------------------------------------------------------------------------ the checks
def _name(role: str) -> str:
    return f"the {role} photo"


def photo_checks(role: str, hair_prob: np.ndarray, hat_prob: Optional[np.ndarray], yaw: float,
                 inside: np.ndarray, hands: Sequence[np.ndarray], other_faces: Sequence[np.ndarray],
                 face_width: float, face_area: Optional[float] = None) -> List[Concern]:
    """Concerns about one photo in its work frame: ``hair_prob`` (S, S) float32 (5-class hair,
    headwear included), ``hat_prob`` (S, S) float32 or None (the parser has no hat part),
    ``yaw`` the head's yaw in degrees (:attr:`hairtryon.landmarks.Landmarks.yaw_degrees`),
    ``hands`` and ``other_faces`` lists of (N, 2) point sets in frame pixels; ``inside`` (S, S)
    bool; ``face_width`` in frame pixels; ``face_area`` the face's pixels (a source with hair
    under :data:`HAIR_TOO_LITTLE` of it is declined: a bald or shaved head leaves nothing to copy,
    and the try-on would have to invent a scalp)."""
    out: List[Concern] = []
    name = _name(role)
    hair = hair_prob > 0.5
    hat = hat_share(hair_prob, hat_prob) if hat_prob is not None else None
    if role == "source" and face_area:
        share = float((hair & inside).sum()) / face_area
        if share < HAIR_TOO_LITTLE and not (hat is not None and hat >= HAT_DECLINE):
            out.append(Concern("no_hair", role, f"In {name}, there is almost no hair to copy (hair covers "
                                                f"{share:.0%} of the face's area): the try-on would have to "
                                                "invent a bald scalp.", True, share))
    # on a head turned beyond the limit the parser's hat part is unreliable (it calls thick braids
    # seen from the side a hat): that photo is declined for its turn alone
    if hat is not None and abs(yaw) <= YAW_DECLINE:
        share = hat
        if share >= HAT_DECLINE:
            what = "its hairstyle is mostly hidden under headwear" if role == "source" else \
                "the person wears headwear, and the head under it cannot be seen"
            out.append(Concern("headwear", role, f"In {name}, {what} (a hat or hood covers "
                                                 f"{share:.0%} of the hair).", True, share))
        elif share >= HAT_WARN and role == "source":
            out.append(Concern("headwear", role, f"In {name}, headwear covers {share:.0%} of the hair; "
                                                 "it may be carried over as hair.", False, share))
    if abs(yaw) > YAW_DECLINE:
        out.append(Concern("yaw", role, f"In {name}, the head is turned too far ({abs(yaw):.0f}° from frontal; "
                                        f"the 4-point mapping works up to {YAW_DECLINE:.0f}°).", True, yaw))
    elif abs(yaw) > YAW_WARN:
        out.append(Concern("yaw", role, f"In {name}, the head is turned {abs(yaw):.0f}° from frontal; "
                                        "the hairstyle may sit a little off.", False, yaw))
    grow = 0.08 * face_width
    if role == "source":
        if touches(hands, hair, grow):
            out.append(Concern("hands", role, f"In {name}, a hand covers part of the hair.", True))
        if touches(other_faces, hair, grow):
            out.append(Concern("other_people", role, f"In {name}, another person touches the hair.", True))
    return out


def pair_checks(yaw_target: float, yaw_source: float, changed: np.ndarray, hands: Sequence[np.ndarray],
                other_faces: Sequence[np.ndarray], face_width: float) -> List[Concern]:
    """Concerns about the pair, once the mapping is known: the two heads turned too differently
    (``yaw_target``, ``yaw_source`` in degrees), and the target's hands or other people
    (``hands``, ``other_faces``: (N, 2) point sets in the target's frame) touching what the try-on
    changes there (``changed`` (S, S) bool: the new hair and the rebuilt regions)."""
    out: List[Concern] = []
    diff = abs(yaw_target - yaw_source)
    if diff > YAW_DIFF_DECLINE:
        out.append(Concern("yaw", "pair", f"The two heads are turned {diff:.0f}° apart (target {yaw_target:+.0f}°, "
                                          f"source {yaw_source:+.0f}°): the hairstyle cannot be mapped.", True, diff))
    elif diff > YAW_DIFF_WARN:
        out.append(Concern("yaw", "pair", f"The two heads are turned {diff:.0f}° apart; the hairstyle may sit "
                                          "a little off.", False, diff))
    grow = 0.05 * face_width
    if touches(hands, changed, grow):
        out.append(Concern("hands", "target", "In the target photo, a hand is where the new hair or the rebuilt "
                                              "background would go.", True))
    if touches(other_faces, changed, grow):
        out.append(Concern("other_people", "target", "In the target photo, another person is right beside the "
                                                     "hair and would be painted over.", True))
    return out


FEATURE_WARN, FEATURE_DECLINE = 0.08, 0.15  # share of an eye's or brow's hull the old hair hid and the new leaves bare
_FEATURE_WORDS = {"eye": "eye", "brow": "eyebrow"}


def hidden_features(hulls: dict, old_hair: np.ndarray, new_hair: np.ndarray) -> dict:
    """For each eye and brow (``hulls``: name -> (S, S) bool, :func:`mapping.feature_hulls`), the
    share of it that the target's old hair (``old_hair`` (S, S) bool) hides and the new hair
    (``new_hair`` (S, S) bool) does not cover: what the try-on would have to draw."""
    out = {}
    for name, hull in hulls.items():
        if name == "lips" or hull.sum() < 10:
            continue
        out[name] = float((hull & old_hair & ~new_hair).sum()) / float(hull.sum())
    return out


def features_check(shares: dict, image_left_is: str = "right") -> List[Concern]:
    """A concern where the target's old hair hides part of an eye or eyebrow that the new
    hairstyle would show (``shares``: :func:`hidden_features`): the try-on cannot draw a feature it
    has not seen (it would be a flat patch or a dark stump of the old hair). More than 15% of an
    eye's or brow's outline declines, 8% warns. ``image_left_is``: which of the person's sides
    ('left', 'right') is on the photo's left (the person's right, facing the camera)."""
    worst = max(shares.items(), key=lambda kv: kv[1], default=None)
    if worst is None or worst[1] <= FEATURE_WARN:
        return []
    side, kind = worst[0].split("_")
    where = "photo's left" if side == image_left_is else "photo's right"
    feature = f"the {_FEATURE_WORDS[kind]} on the {where}"
    if worst[1] > FEATURE_DECLINE:
        return [Concern("features", "target", f"In the target photo, the hair hides part of {feature}, and the new "
                                              f"hairstyle would show it: the try-on cannot draw an {_FEATURE_WORDS[kind]} "
                                              "that the photo does not show.", True, worst[1])]
    return [Concern("features", "target", f"In the target photo, the hair hid a little of {feature}; it was "
                                          "filled in: look closely at it.", False, worst[1])]


def body_check(invented: np.ndarray, clothes_visible: np.ndarray, face_area: float) -> List[Concern]:
    """A concern when much of the target's neck and shoulders, hidden under its old hair, must be
    invented (``invented`` (S, S) bool) with little or nothing of its clothes visible to copy
    (``clothes_visible`` (S, S) bool); ``face_area`` in frame pixels."""
    share = float(invented.sum()) / max(face_area, 1.0)
    if share < 0.6:
        return []
    if clothes_visible.sum() < 0.3 * invented.sum():
        return [Concern("body", "target", "In the target photo, long hair hides the neck and shoulders and too "
                                          "little of them is visible to rebuild them for a shorter hairstyle.",
                        True, share)]
    return [Concern("body", "target", "In the target photo, the neck and shoulders under the long hair were "
                                      "rebuilt from what is visible of them; look closely at them.", False, share)]


SHOWN_WARN, SHOWN_DECLINE = 0.60, 0.45  # share of the new hair inside the target photo (shown_check)


def shown_check(new_hair: np.ndarray, inside: np.ndarray, eyes_y: float) -> List[Concern]:
    """A concern when the target photo's edges cut off the top of the new hairstyle: a photo
    cropped at the forehead has no room for the hair above it, and the result barely shows the
    hairstyle asked for. ``new_hair`` (S, S) float32 the moved source hair's matte in the
    target's frame; ``inside`` (S, S) bool the frame pixels inside the target photo; ``eyes_y``
    the eyes' row in the frame.

    Two shares are measured: of the whole hairstyle, and of its part above the eyes. Long hair
    that runs out of the photo below is a photo's ordinary crop (the top shows): no concern. When
    under 60% of the part above the eyes is inside the photo, it warns; when under 45% of both
    is, it declines. Measured on ``../shared/portraits`` targets cropped at the forehead, under a
    mohawk, a bob, an afro and long locs: the results that look almost unchanged (short hair on
    top, a bob's crown) keep 19-36% of the whole and 15-31% of the top inside; those where the
    new hairstyle shows plainly (the afro's sides, the locs) 57-74% of the whole; the other targets
    74% and more of the top. The concern's ``value`` is the share that decided it: of the whole
    when it declines, of the top when it warns."""
    total = float(new_hair.sum())
    rows = max(0, int(round(eyes_y)))
    upper = float(new_hair[:rows].sum())
    if total <= 0 or upper <= 0:
        return []
    whole = float(new_hair[inside].sum()) / total
    top = float(new_hair[:rows][inside[:rows]].sum()) / upper
    if whole < SHOWN_DECLINE and top < SHOWN_DECLINE:
        return [Concern("outside", "target", f"In the target photo, the top of the head is cut off by the photo's "
                                             f"edge: only {whole:.0%} of the new hairstyle would be inside the photo, "
                                             "and the result would hardly show it.", True, whole)]
    if top < SHOWN_WARN:
        return [Concern("outside", "target", f"In the target photo, the photo's edge cuts off the top of the new "
                                             f"hairstyle ({top:.0%} of it above the eyes is inside the photo).",
                        False, top)]
    return []


INVENT_WARN, INVENT_DECLINE = 1.0, 1.3  # bare rebuilt area over the face's area (see invent_check)


def invent_check(invented: np.ndarray, face_area: float) -> List[Concern]:
    """A concern when the new hairstyle leaves bare much of what the target's old hair hid
    (``invented`` (S, S) bool: the old hair's place that the new hair does not cover, scene,
    clothes and skin alike; ``face_area`` in frame pixels). Long hair to a short style can leave
    more than the face's own area to rebuild; from the target's own pixels that many are a
    painted-looking scene and a mosaic of clothes. Measured on ordinary photos: results that pass
    by eye leave 0.04-0.82 of the face's area bare; those that look painted 1.68-1.86 (long curls,
    an afro or loose hair to an updo or a crop). Over 1.3 declines, over 1.0 warns."""
    share = float(invented.sum()) / max(face_area, 1.0)
    if share > INVENT_DECLINE:
        return [Concern("invent", "target", f"In the target photo, the hair hides much of the scene and "
                                            f"shoulders around the head ({share:.1f} times the face's area), and the "
                                            "new hairstyle would show them: too much of the photo would have to be "
                                            "invented.", True, share)]
    if share > INVENT_WARN:
        return [Concern("invent", "target", f"In the target photo, the hair hid much of the scene around "
                                            f"the head ({share:.1f} times the face's area); it was rebuilt from the "
                                            "rest of the photo: look closely at it.", False, share)]
    return []


def head_check(bare: np.ndarray, face_area: float, axis_x: float) -> List[Concern]:
    """A concern when the new hairstyle leaves bare part of the target's head that its old hair
    covered (``bare`` (S, S) bool: inside :func:`hairtryon.mapping.skull`, beside the face, old
    hair that the new hair leaves uncovered and that would be rebuilt as the scene behind;
    ``face_area`` in frame pixels; ``axis_x`` the face's middle, in frame pixels, to name the
    side). The try-on cannot draw a head it has not seen: the wall comes up to the face and the
    head looks cut off (one-sided braids on a short-haired head, a side part onto a fuller
    side). Measured on ordinary photos: results that pass by eye leave 0-0.3% of the face's
    area of head bare, the two that looked cut off 1.7% and 1.8%. Over 1.2% declines, over 0.8%
    warns."""
    share = float(bare.sum()) / max(face_area, 1.0)
    if share <= HEAD_WARN:
        return []
    xs = np.nonzero(bare)[1]
    side = "right" if (xs >= axis_x).sum() >= (xs < axis_x).sum() else "left"
    if share > HEAD_DECLINE:
        return [Concern("head", "target", f"In the target photo, the hair covers the side of the head on the "
                                          f"photo's {side}, and the new hairstyle would leave it bare: the try-on "
                                          "cannot draw a head it has not seen, and the head would look cut off "
                                          "there.", True, share)]
    return [Concern("head", "target", f"In the target photo, the hair covered the side of the head on the photo's "
                                      f"{side}, which the new hairstyle leaves bare; the head may look narrow "
                                      "there: look closely at it.", False, share)]
