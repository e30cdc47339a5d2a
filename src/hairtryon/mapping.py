"""Face and hair mapping (paper 3.2): the target's regions and the mapping mask.

The mapping mask is the semantic map the try-on is meant to produce: the target's own labels,
with what its old hair covered given the class that lies under it, and the new hair on top.
What lies under old hair is decided by outlines, never by a nearest-class rule (which grows
skin plates in the old hair's shape):

- **face**: only inside the face's own outline (the Face Mesh silhouette, raised a little at
  the top where the mesh stops below the hairline);
- **neck and clothes**: inside the body's outline: the visible neck and clothes, their mirror
  image across the face's axis, a neck column under the jaw, and the shoulders MediaPipe Pose
  placed (also under hair);
- **hair**: the gaps between the face and a new hairstyle made for another head, above the
  mouth (the new hair is grown there: no skin plates beside the face), and a sliver of the
  target's own background, lighter than the hair, between its cheek and new hair that lay
  against the source's cheek;
- **background**: everything else.

Long hair that went behind the source's shoulders (it ends at their top in its photo) goes
behind the target's clothes (:func:`hair_behind_body`), and so does hair that the source photo's
bottom edge cut off inside the target photo; hair that hangs down the source's chest stays in
front.

Arrays live in the target's work frame: images (S, S, 3) uint8 RGB, masks (S, S) bool, labels
(S, S) uint8 class ids (:mod:`hairtryon.segmentation`), points (N, 2) float (x, y) frame pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .framing import disk, grow, parts_in_boxes
from .segmentation import BACKGROUND, EARS, FACE, HAIR, NECK


# ------------------------------------------------------------------------ the old hair
def joined(candidates: np.ndarray, anchor: np.ndarray, link: Optional[np.ndarray] = None) -> np.ndarray:
    """The ``candidates`` ((S, S) bool) that reach ``anchor`` ((S, S) bool) through each other:
    those in an 8-connected component of ``link`` (default ``candidates | anchor``) that holds
    an anchor pixel."""
    link = (candidates | anchor) if link is None else link
    n, comp = cv2.connectedComponents(link.astype(np.uint8), connectivity=8)
    ids = np.unique(comp[anchor])
    return candidates & np.isin(comp, ids[ids > 0])


def remove_hair(image: np.ndarray, labels: np.ndarray, hair_prob: np.ndarray, closing_px: int,
                margin_px: int, face_margin_px: int, strand_band_px: int = 0,
                keep: Optional[np.ndarray] = None) -> np.ndarray:
    """Cropping of the target (3.2.3): the region its hair occupied, (S, S) bool.

    The hair mask (labels, plus pixels with hair probability > 0.3 so faint edge strands count)
    is closed (the paper's morphological closing) and dilated by ``margin_px`` so the region
    never borders leftover fringe pixels; flyaway strands the parser missed, within
    ``strand_band_px`` of it, are added (:func:`stray_strands`). Into the face it reaches only
    ``face_margin_px``, and only over pixels darker than the face's skin (the shadow at a
    fringe's edge, strands over the skin), never over ``keep`` ((S, S) bool: the eyes, brows and
    lips), so the face stays the target's own pixels, eyebrows under a fringe included."""
    hair = ((labels == HAIR) | (hair_prob > 0.3)).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_CLOSE, disk(closing_px))
    face = labels == FACE
    ears = labels == EARS  # the target's own ears stay (what the hair hid of them is not invented)
    if strand_band_px > 0 and hair.any():
        hair = (hair.astype(bool) | stray_strands(image, hair.astype(bool), face, strand_band_px)).astype(np.uint8)
    wide = grow(hair.astype(bool), margin_px)
    if face_margin_px <= 0 or face.sum() < 50 or not hair.any():
        return wide & ~face & ~ears
    # strands and their shadow over the face: face pixels near the hair whose colour is nearer
    # the hair's than the skin's (or much darker than the skin)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin = face & ~grow(hair.astype(bool), face_margin_px)
    if keep is not None:
        skin &= ~keep
    if skin.sum() < 50:
        skin = face
    skin_col = np.median(lab[skin], axis=0).astype(np.float32)
    hair_col = np.median(lab[hair.astype(bool)], axis=0).astype(np.float32)
    d_skin = _distance(lab, skin_col)
    d_hair = _distance(lab, hair_col)
    spread = 1.4826 * np.median(np.abs(lab[skin][:, 0] - skin_col[0])) + 1.0
    near = grow(hair.astype(bool) & ~face, face_margin_px)
    # hair-coloured, or darker than the skin around it (the hair's shadow, baby hairs and
    # translucent strands along the hairline)
    from .compositing import normalized_blur

    local = normalized_blur(lab, skin, 1.5 * face_margin_px)[..., 0]
    local = np.where(np.isnan(local), skin_col[0], local)
    darker = (lab[..., 0] < skin_col[0] - 3.0 * spread) | \
        (lab[..., 0] < np.minimum(local, skin_col[0] + spread) - max(2.0 * spread, 8.0))
    taken = face & near & ((d_hair < 0.6 * d_skin) | darker)
    if keep is not None:
        taken &= ~keep
    taken = joined(taken, hair.astype(bool))  # only what is connected to the hair
    # and the thin dark line the hair's edge leaves along what was taken
    rim = face & grow(taken | (hair.astype(bool) & ~face), max(2.0, face_margin_px / 3)) & \
        (lab[..., 0] < local - 1.0)
    if keep is not None:
        rim &= ~keep
    taken |= rim
    return ((wide & ~face) | taken | (hair.astype(bool) & ~face)) & ~ears


def hair_shade(image: np.ndarray, face: np.ndarray, removed: np.ndarray, reach_px: float,
               keep: Optional[np.ndarray] = None) -> np.ndarray:
    """The old hair's soft shadow on the face, (S, S) bool: ``face`` pixels ((S, S) bool, the
    parsed face) within ``reach_px`` of ``removed`` ((S, S) bool, the old hair's place), joined
    to it, that are darker than the skin beyond them, by less the nearer the hair (a graded
    shade, which would stay as a line along the old hair's edge once the hair is gone). Never
    ``keep`` ((S, S) bool, eyes, brows and lips). ``image`` (S, S, 3) uint8. These pixels keep
    their texture: only their tone is made good (:func:`hairtryon.rebuild.restore_tone`)."""
    from .compositing import normalized_blur

    face = face & ~removed
    if keep is not None:
        face = face & ~keep
    if face.sum() < 50 or not removed.any():
        return np.zeros_like(removed)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lum = lab[..., 0]
    beyond = face & ~grow(removed, 1.3 * reach_px)
    if beyond.sum() < 50:
        return np.zeros_like(removed)
    far = normalized_blur(lab, beyond, 1.3 * reach_px)[..., 0]
    far = np.where(np.isnan(far), float(np.median(lum[beyond])), far)
    spread = 1.4826 * float(np.median(np.abs(lum[beyond] - np.median(lum[beyond])))) + 1.0
    dist = cv2.distanceTransform((~removed).astype(np.uint8), cv2.DIST_L2, 3)
    smooth = cv2.GaussianBlur(lum, (0, 0), max(1.0, reach_px / 9))
    # the allowed darkening grows to 10 levels at the shade's reach
    allowed = max(2.0, 0.5 * spread) + 10.0 * dist / max(reach_px, 1.0)
    return joined(face & (dist <= reach_px) & (smooth < far - allowed), removed)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance along the last axis, in float32 (no photo-sized float64 temporaries)."""
    d = np.subtract(a, b, dtype=np.float32)
    np.multiply(d, d, out=d)
    return np.sqrt(d.sum(axis=-1, dtype=np.float32))


def stray_strands(image: np.ndarray, hair: np.ndarray, face: np.ndarray, band_px: int) -> np.ndarray:
    """Flyaway strands beside the parsed hair ((S, S) bool): pixels within ``band_px`` of it,
    outside the face, whose colour is nearer the hair's own colours than the colour of what
    surrounds them there (the background's or clothes' local average, taken beyond the band).
    ``image`` (S, S, 3) uint8. Returns (S, S) bool, connected to the hair."""
    from .compositing import normalized_blur

    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    h8 = hair.astype(np.uint8)
    band = grow(hair, band_px) & ~hair & ~face
    if not band.any():
        return np.zeros_like(hair)
    core = cv2.erode(h8, disk(max(1, band_px // 3))).astype(bool)
    if core.sum() < 50:
        core = hair
    far = ~grow(hair, 2 * band_px) & ~face
    sigma = 2.0 * band_px
    hair_col = normalized_blur(lab, core, sigma)
    bg_col = normalized_blur(lab, far, sigma)
    global_hair = np.median(lab[core], axis=0).astype(np.float32)
    hair_col = np.where(np.isnan(hair_col), global_hair, hair_col)
    ok = ~np.isnan(bg_col[..., 0])
    bg_col = np.where(ok[..., None], bg_col, hair_col)
    d_hair = _distance(lab, hair_col)
    d_bg = np.where(ok, _distance(lab, bg_col), np.inf)
    separation = _distance(hair_col, bg_col)
    strand = band & ok & (separation > 12.0) & (d_hair < 0.6 * d_bg)
    return joined(strand, hair)  # only what touches the hair (through other strand pixels)


def flyaways(image: np.ndarray, removed: np.ndarray, background: np.ndarray, band_px: float,
             kernel_px: int, min_contrast: float = 6.0) -> np.ndarray:
    """Flyaway strands of the old hair out in the background, (S, S) bool: within ``band_px`` of
    ``removed`` ((S, S) bool, the old hair's place) and on ``background`` ((S, S) bool), the thin
    lines a median filter of ``kernel_px`` takes away (CIELAB distance to the filtered image
    over ``min_contrast`` and over 3 times its median in the band: a strand against a blurred
    scene, not the scene's own texture), joined to the old hair through each other.
    ``image`` (S, S, 3) uint8."""
    band = grow(removed, band_px) & ~removed & background
    if not band.any():
        return np.zeros_like(removed)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    med = cv2.medianBlur(lab, max(3, int(kernel_px) | 1))
    dev = _distance(lab.astype(np.float32), med.astype(np.float32))
    line = band & (dev > max(min_contrast, 3.0 * float(np.median(dev[band]))))
    # a strand's breaks of a pixel do not cut it off the hair
    return grow(joined(line, removed, cv2.dilate((line | removed).astype(np.uint8), disk(1))), 1) & band


def hair_halo(image: np.ndarray, removed: np.ndarray, background: np.ndarray, hair: np.ndarray,
              rim_px: float, min_tint: float = 3.0) -> np.ndarray:
    """The old hair's halo in the background, (S, S) bool: ``background`` pixels ((S, S) bool)
    within ``rim_px`` of ``removed`` ((S, S) bool) tinted towards the hair's colour (``hair``:
    (S, S) bool, its pixels) by more than ``min_tint`` CIELAB units against the background just
    beyond (the faint ends of curls, the lens' and JPEG's blur of the hair's edge: an outline of
    the old hairstyle once it is gone), joined to it. ``image`` (S, S, 3) uint8. Like the
    shade on the face, only their tone is made good."""
    from .compositing import normalized_blur

    rim = grow(removed, rim_px) & ~removed & background
    if not rim.any() or hair.sum() < 50:
        return np.zeros_like(removed)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    beyond = grow(removed, 4 * rim_px) & ~grow(removed, 2 * rim_px) & background
    behind = normalized_blur(lab, beyond, 2 * rim_px)
    ok = ~np.isnan(behind[..., 0])
    behind = np.where(ok[..., None], behind, 0.0)
    toward = np.median(lab[hair], axis=0) - behind
    norm = np.sqrt((toward ** 2).sum(-1))
    tint = ((cv2.GaussianBlur(lab, (0, 0), 1.0) - behind) * toward).sum(-1) / np.maximum(norm, 1e-3)
    return joined(rim & ok & (norm > 10.0) & (tint > min_tint), removed)


# ------------------------------------------------------------------------ outlines
def face_outline(oval: np.ndarray, eye_y: float, chin_y: float, parsed_face: np.ndarray,
                 lift: float = 0.12) -> np.ndarray:
    """The face's own outline, (S, S) bool: the Face Mesh silhouette ``oval`` ((K, 2) frame
    points) raised above the eyes by ``lift`` of the eye-chin distance (the mesh stops below the
    hairline), united with the parsed face ``parsed_face`` ((S, S) bool)."""
    s = parsed_face.shape[0]
    pts = np.array(oval, np.float64).copy()
    up = np.clip((eye_y - pts[:, 1]) / max(eye_y - pts[:, 1].min(), 1e-6), 0, 1)
    pts[:, 1] -= up * lift * (chin_y - eye_y)
    mask = np.zeros((s, s), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool) | parsed_face


def reflection(axis_point, axis_dir) -> np.ndarray:
    """(2, 3) affine matrix of the reflection across the line through ``axis_point`` (x, y)
    along ``axis_dir`` (x, y)."""
    d = np.asarray(axis_dir, np.float64)
    d = d / max(np.linalg.norm(d), 1e-9)
    r = 2.0 * np.outer(d, d) - np.eye(2)
    p = np.asarray(axis_point, np.float64)
    return np.hstack([r, (p - r @ p)[:, None]])


def _quadratic(p0, p1, p2, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def body_outline(labels: np.ndarray, removed: np.ndarray, oval: np.ndarray, chin, axis_dir,
                 shoulders: Optional[np.ndarray] = None):
    """Where neck and clothes are, also under the old hair: (body, neck), both (S, S) bool,
    ``neck`` the neck's own column within the body.

    The visible neck+clothes (``labels`` == NECK outside ``removed``) and their mirror image
    across the face's axis (through ``chin`` (x, y) along ``axis_dir``, chin to forehead); and a
    smooth silhouette of neck and shoulders: a neck about half the face's width hanging from the
    jaw (``oval``: (K, 2) the face silhouette), and, when Pose placed them (``shoulders``: (2, 2)
    frame points, image-left then image-right), shoulders curving from the neck's base out to a
    little beyond each shoulder joint and down to the frame's bottom."""
    s = labels.shape[0]
    visible = ((labels == NECK) & ~removed).astype(np.uint8)
    mirrored = cv2.warpAffine(visible, reflection(chin, axis_dir), (s, s), flags=cv2.INTER_NEAREST)
    chin = np.asarray(chin, np.float64)
    up = np.asarray(axis_dir, np.float64) / max(np.linalg.norm(axis_dir), 1e-9)
    down, side = -up, np.array([up[1], -up[0]])  # side points to the image's right when upright
    if side[0] < 0:
        side = -side
    rel = oval - chin
    across, along = rel @ side, rel @ up
    face_width = float(np.ptp(across))
    half = 0.27 * face_width
    # the neck hangs from the jaw where the jaw is as wide as the neck
    def attach(sign: float) -> np.ndarray:
        on_side = sign * across > 0
        cand = np.where(on_side & (np.abs(across) >= half))[0]
        height = along[cand].min() if len(cand) else 0.3 * face_width
        return chin + sign * side * half + up * max(0.0, min(height, 0.6 * face_width))
    top_l, top_r = attach(-1.0), attach(1.0)
    if shoulders is not None:
        sl, sr = np.asarray(shoulders, np.float64)
        width = float(np.linalg.norm(sr - sl))
    else:  # a typical build: shoulders about 2.3 face widths apart, 1.1 below the chin
        width = 2.3 * face_width
        sl = chin - side * width / 2 + down * 1.1 * face_width
        sr = chin + side * width / 2 + down * 1.1 * face_width
    base = (sl + sr) / 2.0 + up * 0.16 * width  # the neck's base, above the joints' line
    lift = up * 0.05 * width  # the shoulder's outline runs a little above the joint (a trapezius falls about 15° to it)
    out = side * 0.10 * width
    far = down * 3.0 * s / max(abs(down[1]), 0.3)
    neck_l = base - side * half * 1.15
    neck_r = base + side * half * 1.15
    # the shoulder's line falls gently from the neck's base to the shoulder's tip, then rounds
    # down over the arm
    def shoulder(neck_pt, tip):
        ctrl = np.array([tip[0] + 0.5 * (neck_pt[0] - tip[0]), neck_pt[1] + 0.35 * (tip[1] - neck_pt[1])])
        return _quadratic(neck_pt, ctrl, tip)
    left = shoulder(neck_l, sl + lift - out)
    right = shoulder(neck_r, sr + lift + out)
    poly = np.vstack([[top_l], [neck_l], left, [sl - out * 1.2 + far], [sr + out * 1.2 + far], right[::-1],
                      [neck_r], [top_r]])
    outline = np.zeros((s, s), np.uint8)
    cv2.fillPoly(outline, [np.round(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    neck = np.zeros((s, s), np.uint8)
    cv2.fillPoly(neck, [np.round(np.array([top_l, neck_l, base, neck_r, top_r])).astype(np.int32)], 1)
    # a side hidden by the old hair whose other side is well in sight: that side's mirror image is
    # its silhouette (a body is near symmetric; the drawn outline is only a guess)
    across_px = (np.arange(s)[None, :] - chin[0]) * side[0] + (np.arange(s)[:, None] - chin[1]) * side[1]
    seen = visible.astype(bool) & ~neck.astype(bool)
    for sign in (-1.0, 1.0):
        this, other = sign * across_px > 0, sign * across_px < 0
        seen_other, seen_this = (seen & other).sum(), (seen & this).sum()
        drawn_other = (outline.astype(bool) & other & ~neck.astype(bool)).sum()
        if seen_other > 2 * seen_this and seen_other > 0.3 * max(drawn_other, 1):
            outline[this & ~neck.astype(bool)] = 0
    above = _above_seen_shoulders(labels, removed, neck.astype(bool), chin)
    outline[above] = 0
    mirrored[above] = 0
    return (visible | mirrored | outline).astype(bool), neck.astype(bool)


MAX_SHOULDER_GAP = 0.3  # of the frame: the widest hidden stretch of the body's top line interpolated


def _above_seen_shoulders(labels: np.ndarray, removed: np.ndarray, neck: np.ndarray, chin) -> np.ndarray:
    """(S, S) bool: where no drawn or mirrored body may lie, above the body's top line where that
    line is seen. In every column where visible neck+clothes meet visible background above them
    (a real silhouette, not an edge hidden by hair), the body's top is known; between such
    columns it is interpolated (across hidden stretches of at most :data:`MAX_SHOULDER_GAP`,
    the neck's own columns not counted). The neck's column is never cut."""
    s = labels.shape[0]
    body = (labels == NECK) & ~removed
    back = (labels == BACKGROUND) & ~removed
    below = np.arange(s)[:, None] > chin[1]
    body &= below
    has = body.any(axis=0)
    top = np.where(has, body.argmax(axis=0), s)
    cols = np.nonzero(has & (top > 0))[0]
    if len(cols) == 0:
        return np.zeros((s, s), bool)
    above = top[cols] - 1
    seen = back[np.maximum(above, 0), cols] & back[np.maximum(above - 2, 0), cols]
    known = cols[seen]
    if len(known) < 8:
        return np.zeros((s, s), bool)
    line = np.interp(np.arange(s), known, top[known].astype(np.float64))
    # only between seen columns not far apart (a whole hidden shoulder is left to the mirror
    # image and the drawn outline), never beyond the outermost ones
    gap_ok = np.zeros(s, bool)
    neck_cols = neck.any(axis=0)
    for a, b in zip(known[:-1], known[1:]):
        hidden = int((~neck_cols[a:b + 1]).sum())  # the neck's own columns are not shoulder
        if hidden <= MAX_SHOULDER_GAP * s:
            gap_ok[a:b + 1] = True
    line = np.where(gap_ok, line, -np.inf)
    return (np.arange(s)[:, None] < line[None, :] - 2) & ~neck


def valid_shoulders(shoulders: Optional[np.ndarray], chin, face_width: float) -> Optional[np.ndarray]:
    """``shoulders`` ((2, 2) frame points) when they belong to this face's person: below the
    chin, about centred under it, and at least as far apart as the face is wide; else None."""
    if shoulders is None:
        return None
    left, right = np.asarray(shoulders, np.float64)
    mid = (left + right) / 2.0
    width = np.linalg.norm(right - left)
    if not (mid[1] > chin[1] - 0.1 * face_width and abs(mid[0] - chin[0]) < 0.6 * width
            and 1.0 * face_width < width < 6.0 * face_width):
        return None
    return np.asarray(shoulders, np.float64)


def face_mirror(mesh: np.ndarray, oval_index: np.ndarray) -> Optional[np.ndarray]:
    """(3, 3) homography taking each point of the face to its mirror partner (left cheek to right
    cheek), fitted on the Face Mesh's symmetric points: the silhouette ``mesh[oval_index]``
    walked from the forehead (its k-th point pairs with its (K-k)-th), both eyes, both brows and
    the mouth corners. ``mesh``: (468, 2) frame points. None when the fit fails."""
    from .landmarks import EYEBROWS, IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE, MOUTH_CORNERS

    oval = mesh[oval_index]
    k = len(oval)
    src = [oval, mesh[list(IMAGE_LEFT_EYE)].mean(0, keepdims=True), mesh[list(IMAGE_RIGHT_EYE)].mean(0, keepdims=True),
           mesh[[MOUTH_CORNERS[0]]], mesh[[MOUTH_CORNERS[1]]],
           mesh[list(EYEBROWS[:10])].mean(0, keepdims=True), mesh[list(EYEBROWS[10:])].mean(0, keepdims=True)]
    dst = [oval[(-np.arange(k)) % k], src[2], src[1], src[4], src[3], src[6], src[5]]
    a, b = np.vstack(src).astype(np.float32), np.vstack(dst).astype(np.float32)
    m, _ = cv2.findHomography(a, b, 0)  # least squares: RANSAC keeps too few of these points
    return m


# ------------------------------------------------------------------------ the mapping mask
def side_gaps(new_hair: np.ndarray, face: np.ndarray, removed: np.ndarray, width: int, below: float,
              mass: float = 0.0, min_area: float = 0.0) -> np.ndarray:
    """Where the old hair was, the horizontal gaps (up to ``width`` pixels) between the face and
    the new hair, above row ``below`` (the chin): the new hairstyle was made for another head,
    and on this one it would hang there. Only gaps against a mass of hair count: ``new_hair``
    ((S, S) bool) is opened by ``mass`` pixels first, so a few loose strands beside the face do
    not turn the space between into a block of hair. Gaps smaller than ``min_area`` pixels are
    left out: notches along a hairline, which grown hair would fill with opaque dark specks among
    the fine hairs around them. (S, S) bool."""
    body = new_hair
    if mass > 0:
        body = cv2.morphologyEx(new_hair.astype(np.uint8), cv2.MORPH_OPEN, disk(mass)).astype(bool)
    kernel = np.ones((1, 2 * int(width) + 1), np.uint8)
    closed = cv2.morphologyEx((body | face).astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    gaps = closed & ~new_hair & ~face & removed
    # rows where face and hair stood a little farther apart would leave a notch in it
    tall = np.ones((2 * int(width) + 1, 1), np.uint8)
    gaps |= cv2.morphologyEx(gaps.astype(np.uint8), cv2.MORPH_CLOSE, tall).astype(bool) & ~new_hair & ~face & removed
    gaps[int(max(0, below)):] = False
    if min_area > 0 and gaps.any():
        n, lab, stats, _ = cv2.connectedComponentsWithStats(gaps.astype(np.uint8), connectivity=8)
        gaps = (stats[:, cv2.CC_STAT_AREA] >= min_area)[lab] & gaps
    return gaps


def hair_behind_body(new_alpha: np.ndarray, source_body: np.ndarray, target_body: np.ndarray,
                     neck: np.ndarray, below: float, touch: float, margin: float,
                     feather_px: float = 1.0, source_photo: Optional[np.ndarray] = None) -> np.ndarray:
    """Where the source's hair went behind its shoulders, the target's shoulders in front of
    the new hair: ``new_alpha`` (S, S) float32 with the target's body cut out of it.

    Long hair that falls down the back ends, in its photo, at the top of the shoulders: the
    shoulder hides the rest. Laid on a target whose shoulders sit higher, that end would lie over
    the target's shirt as a straight cut. A column of the frame (below row ``below``, the chin)
    counts as hair behind the body where the source's hair (``new_alpha`` > 0.5) ends within
    ``touch`` pixels above, or ``margin`` pixels below, the top of the source's body in it
    (``source_body`` (S, S) bool, the source's neck and clothes moved into this frame); hair that
    goes on well below the shoulder's top hangs in front of the chest and stays in front. In
    those columns the target's body (``target_body`` (S, S) bool: its clothes, as the photo shows
    them) takes the hair's place, except its neck (``neck`` (S, S) bool: hair beside a neck lies
    in front of it). Given ``source_photo`` ((S, S) bool, where the source photo lies in this
    frame, or beyond the target photo, where no cut can be seen), a column also counts where the
    hair reaches, below the chin, to within ``touch`` pixels of the bottom edge of the source
    photo: the photo cut the hair off there, and nothing shows how it goes on; behind the
    target's clothes, its end is hidden instead of fading out on the chest. Each lock of new hair over those clothes goes behind them whole, where most of
    it lies in such columns, or stays in front whole. The cut follows the target's own outline,
    softened over ``feather_px`` pixels. All masks in the target's work
    frame."""
    s = new_alpha.shape[0]
    hair = new_alpha > 0.5
    rows = np.arange(s)[:, None]
    low = rows >= below
    src = source_body & low & ~neck
    has_src = src.any(axis=0)
    top_src = np.where(has_src, np.argmax(src, axis=0), s)
    hair_low = hair & low
    has_hair = hair_low.any(axis=0)
    def last_row(m):  # per column, the lowest row where ``m`` holds
        return s - 1 - np.argmax(m[::-1], axis=0)

    end = np.where(has_hair, last_row(hair_low), -1)
    behind = has_src & has_hair & (end >= top_src - touch) & (end <= top_src + margin)
    if source_photo is not None:  # hair that the source photo's bottom edge cut off
        seen = source_photo.any(axis=0)
        bottom = np.where(seen, last_row(source_photo), s - 1)
        behind |= seen & has_hair & (bottom < s - 1) & (bottom >= below) & (end >= bottom - touch)
    # no lone columns: a run of them shorter than the touch distance is noise of the outline
    k = max(1, int(round(touch)))
    run = cv2.morphologyEx(behind.astype(np.uint8)[None, :], cv2.MORPH_OPEN, np.ones((1, 2 * k + 1), np.uint8))
    behind = run[0].astype(bool)
    if not behind.any():
        return new_alpha
    # decided per lock of hair over the clothes, so that no lock is cut along a column
    body = target_body & ~neck
    over = (new_alpha > 0.05) & body
    n, lab = cv2.connectedComponents(over.astype(np.uint8), connectivity=8)
    if n <= 1:
        return new_alpha
    total = np.bincount(lab.ravel(), minlength=n)
    back = np.bincount(lab[over & behind[None, :]], minlength=n)
    chosen = back >= 0.6 * np.maximum(total, 1)
    chosen[0] = False
    cover = chosen[lab]
    if not cover.any():
        return new_alpha
    soft = cover.astype(np.float32)
    if feather_px > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), feather_px)
    return (new_alpha * (1.0 - np.clip(soft, 0.0, 1.0))).astype(np.float32)


def hair_against_face(new_alpha: np.ndarray, face: np.ndarray, background: np.ndarray,
                      source_face: np.ndarray, width: int, above: float, below: float, mass: float = 0.0,
                      min_area: float = 0.0, rim_px: float = 2.0, image: Optional[np.ndarray] = None,
                      foreground: Optional[np.ndarray] = None, lighter: float = 10.0) -> np.ndarray:
    """The target's own background (``background`` (S, S) bool: background it shows, not the
    old hair's place) in the gaps between its face (``face`` (S, S) bool) and the new hair
    (``new_alpha`` (S, S) float32, the matte; hair where > 0.5), where the source's face lay
    (``source_face`` (S, S) bool, warped onto this head) or the hair's own soft edge: there the
    source's hair fell against its cheek, and on this narrower or turned face it would hang off
    it with a sliver of the wall between, a cut-out look. Gaps as :func:`side_gaps` finds
    them (``width``, ``below``, ``mass``, ``min_area``), from row ``above`` (the eyes: higher
    up, gaps inside the hairline are :func:`enclosed_by_hair`'s, and a gap open to the scene
    above the head is no cheek's), only the parts that touch the face, with the pixels within
    ``rim_px`` of them on the face's edge and in the hair's soft edge: the face's outermost
    pixels carry the old background's colour, and the wall would show through the soft edge,
    a pale or green line between cheek and hair once the hair lies there. Given ``image``
    ((S, S, 3) uint8, the target) and ``foreground`` ((S, S, 3) float32 0-255, the new hair's
    colours), only gaps whose own pixels are lighter (CIE L*, median) than the opaque hair
    beside them by more than ``lighter``: a darker gap reads as the hair's shadow on the cheek
    and is left as the photo has it; a lighter one reads as a hole through the head.
    (S, S) bool."""
    gaps = side_gaps(new_alpha > 0.5, face, background & (source_face | (new_alpha > 0.02)), width, below,
                     mass=mass, min_area=min_area)
    gaps[:int(max(0, above))] = False
    if not gaps.any():
        return gaps
    gaps = joined(gaps, grow(face, 1.5) & ~face) & ~face
    if image is not None and foreground is not None and gaps.any():
        gaps &= _lighter_than_hair(gaps, image, foreground, new_alpha > 0.95, width, lighter)
    return gaps | (grow(gaps, rim_px) & (face | (new_alpha < 0.99)))


def _lighter_than_hair(parts_mask: np.ndarray, image: np.ndarray, foreground: np.ndarray, hair: np.ndarray,
                       reach: float, lighter: float) -> np.ndarray:
    """The parts (8-connected) of ``parts_mask`` whose median L* in ``image`` exceeds that of
    ``foreground`` over the ``hair`` pixels within ``reach`` of them by more than ``lighter``."""
    out = np.zeros_like(parts_mask)
    r = max(2, int(round(reach)))
    for part, box, sub in parts_in_boxes(parts_mask, r):
        ring = grow(sub, r) & hair[box] & ~sub
        if ring.sum() < 20:
            continue
        own = cv2.cvtColor(image[box], cv2.COLOR_RGB2LAB)[..., 0][sub]
        fg = np.clip(np.round(foreground[box]), 0, 255).astype(np.uint8)
        beside = cv2.cvtColor(fg, cv2.COLOR_RGB2LAB)[..., 0][ring]
        if (float(np.median(own)) - float(np.median(beside))) * 100.0 / 255.0 > lighter:
            out |= part
    return out


def skin_under_hairline(face: np.ndarray, new_alpha: np.ndarray, removed: np.ndarray, band_px: float,
                        above: float) -> np.ndarray:
    """``face`` ((S, S) bool, the skin under the new hairstyle) with the band of ``band_px``
    pixels around it that the new hair's soft edge covers (``new_alpha`` (S, S) float32 > 0.02),
    where the old hair was (``removed``), above row ``above`` (the eyes): a hairline's fine hairs
    lie on skin, and the background rebuilt there would show through them as a pale or dark rim
    around the forehead. (S, S) bool."""
    band = grow(face, band_px) & (new_alpha > 0.02) & removed
    band[int(max(0, above)):] = False
    return face | band


def enclosed_by_hair(face: np.ndarray, new_alpha: np.ndarray, above: float, rim_px: float = 2.0) -> np.ndarray:
    """The holes that the new hair (``new_alpha`` (S, S) float32 > 0.5) and the face (``face``
    (S, S) bool) close all round and that touch the face, above row ``above`` (the eyes): a
    notch between a fringe that lifts off the source's temple and this head's narrower one,
    where the wall behind would show inside the hairline as a pale or dark patch. The gaps
    between strands out in the hair do not touch the face and are kept. With the hair's own
    soft edge round each hole (``rim_px`` wide, off the face): once the hole is hair, that edge
    is no edge, and the wall would show through it as a pale rim. (S, S) bool."""
    new_hair = new_alpha > 0.5
    # everything not walled in that the frame's border reaches is outside: flood from a ring
    # of open pixels round the frame
    flood = np.pad((face | new_hair).astype(np.uint8), 1)
    cv2.floodFill(flood, None, (0, 0), 2)
    holes = flood[1:-1, 1:-1] == 0
    holes[int(max(0, above)):] = False
    if not holes.any():
        return holes
    n, parts = cv2.connectedComponents(holes.astype(np.uint8), connectivity=4)
    touching = np.zeros(n, bool)
    touching[np.unique(parts[holes & grow(face, 1.5)])] = True
    touching[0] = False
    holes &= touching[parts]
    return holes | (grow(holes, rim_px) & (new_alpha > 0.02) & (new_alpha < 0.99) & ~face)


def under_hair(labels: np.ndarray, removed: np.ndarray, face: np.ndarray, body: np.ndarray) -> np.ndarray:
    """What lies under the target's old hair, (S, S) uint8 labels: the target's own labels, and
    in ``removed`` face inside ``face`` (its outline), neck+clothes inside ``body``, background
    elsewhere (ears the hair hid are not invented). All masks (S, S) bool."""
    out = labels.copy()
    out[removed] = BACKGROUND
    out[removed & body] = NECK
    out[removed & face] = FACE
    return out


def mapping_mask(under: np.ndarray, new_hair: np.ndarray) -> np.ndarray:
    """The paper's mapping mask: ``under`` (S, S) uint8 (:func:`under_hair`) with the new hair
    (``new_hair`` (S, S) bool) on top."""
    out = under.copy()
    out[new_hair] = HAIR
    return out


@dataclass
class TargetRegions:
    """What is decided once per target photo, in its work frame (all (S, S) bool):
    ``removed`` where its old hair was (to rebuild), ``face`` its face's own outline, ``body``
    its neck and clothes' outline, ``neck`` the neck's column within it; ``mirror`` the (3, 3)
    face-mirror homography or None; ``body_mirror`` the (3, 3) reflection across the face's
    axis, which takes one shoulder to the other; ``tinted`` the pixels beside the old hair that
    keep their texture but lose its shade (on the face) or its tint (in the background)."""

    removed: np.ndarray
    face: np.ndarray
    body: np.ndarray
    neck: np.ndarray
    mirror: Optional[np.ndarray]
    body_mirror: Optional[np.ndarray] = None  # (3, 3): the reflection across the face's axis (shoulder to shoulder)
    tinted: Optional[np.ndarray] = None  # (S, S) bool: next to the old hair, its shade or tint (tone made good, texture kept)


def feature_hulls(mesh: np.ndarray, size: int) -> dict:
    """Each of the face's features ('left_eye', 'right_eye', 'left_brow', 'right_brow', 'lips':
    the person's left and right, as MediaPipe names them) as the convex hull of its Face Mesh
    points (``mesh`` (468, 2) frame points): name -> (S, S) bool."""
    from .landmarks import feature_indices

    out = {}
    for name, idx in feature_indices().items():
        mask = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(mesh[idx]).astype(np.int32)), 1)
        out[name] = mask.astype(bool)
    return out


def skull(oval: np.ndarray, eyes: np.ndarray, chin: np.ndarray, size: int, wide: float = 1.1,
          tall: float = 0.95) -> np.ndarray:
    """The top of the head above the eyes ((S, S) bool): half an ellipse on the face's axis
    (from the chin to the eyes' midpoint), as wide as the face's outline above the cheekbones
    (``oval`` (K, 2) frame points, Face Mesh's silhouette) times ``wide``, and reaching ``tall``
    times the eyes-to-chin distance above the eyes (a head's eyes sit about halfway up it).
    ``eyes``, ``chin``: (2,) frame points. Under old hair that lies on the head, what is inside
    it is the head itself, never the scene."""
    eyes = np.asarray(eyes, np.float64)
    axis = eyes - np.asarray(chin, np.float64)
    d = float(np.linalg.norm(axis))
    if d < 1:
        return np.zeros((size, size), bool)
    axis /= d
    side = np.array([-axis[1], axis[0]])
    rel = np.asarray(oval, np.float64) - eyes
    across = (rel @ side)[rel @ axis > -0.1 * d]
    if not len(across):
        return np.zeros((size, size), bool)
    centre = eyes + side * 0.5 * (across.max() + across.min())
    half = 0.5 * (across.max() - across.min()) * wide
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))), (int(round(half)), int(round(tall * d))),
                float(np.degrees(np.arctan2(side[1], side[0]))), 0, 360, 1, -1)
    yy, xx = np.mgrid[:size, :size]
    return mask.astype(bool) & (((xx - eyes[0]) * axis[0] + (yy - eyes[1]) * axis[1]) > 0)


def features_mask(mesh: np.ndarray, size: int, grow: float) -> np.ndarray:
    """The face's eyes, brows and lips ((S, S) bool): the union of :func:`feature_hulls`, grown by
    ``grow`` pixels."""
    mask = np.logical_or.reduce(list(feature_hulls(mesh, size).values())).astype(np.uint8)
    return cv2.dilate(mask, disk(grow)).astype(bool)


def target_regions(crop: np.ndarray, labels: np.ndarray, hair_prob: np.ndarray, mesh: np.ndarray,
                   oval_index: np.ndarray, shoulders: Optional[np.ndarray], inside: np.ndarray,
                   unit: Optional[float] = None) -> TargetRegions:
    """The target's :class:`TargetRegions` in its work frame, once per photo. ``crop`` (S, S, 3)
    uint8; ``labels`` (S, S) uint8 and ``hair_prob`` (S, S) float32 its parse; ``mesh`` (468, 2)
    Face Mesh points and ``shoulders`` (2, 2) or None, frame pixels; ``inside`` (S, S) bool the
    frame pixels inside the photo; ``unit`` the size widths are relative to (default the frame's
    side)."""
    size = labels.shape[0]
    s = unit or size
    features = features_mask(mesh, size, grow=max(2, s / 100))
    removed = remove_hair(crop, labels, hair_prob, closing_px=max(2, int(s / 100)), margin_px=max(2, int(s / 120)),
                          face_margin_px=max(1, int(s / 50)), strand_band_px=max(3, int(s / 60)), keep=features) & inside
    oval = mesh[oval_index]
    from .landmarks import CHIN, FOREHEAD, IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE

    eyes = np.stack([mesh[list(IMAGE_LEFT_EYE)].mean(0), mesh[list(IMAGE_RIGHT_EYE)].mean(0)])
    eye_y, chin = eyes[:, 1].mean(), mesh[CHIN].astype(np.float64)
    face = face_outline(oval, eye_y, chin[1], labels == FACE)
    # only this person's hair: the parts of it that reach this face (in a group photo the parser
    # also finds the hair of the people around)
    removed = joined(removed, grow(face, s / 20) & removed, link=removed)
    # (away from the photo's border, where the frame's padding is no scene to judge strands against)
    inner = cv2.erode(inside.astype(np.uint8), disk(max(2, int(s / 60)))).astype(bool)
    scene = (labels == BACKGROUND) & inner
    removed |= flyaways(crop, removed, scene, band_px=s / 10, kernel_px=int(s / 100))
    # what keeps its texture and only loses the old hair's shade or tint
    tinted = hair_shade(crop, labels == FACE, removed, reach_px=s / 33, keep=features) | \
        hair_halo(crop, removed, scene, removed & (labels == HAIR), rim_px=s / 80)
    face_width = float(np.ptp(oval[:, 0]))
    axis = mesh[FOREHEAD] - mesh[CHIN]
    body, neck = body_outline(labels, removed, oval, chin, axis, valid_shoulders(shoulders, chin, face_width))
    body_mirror = np.vstack([reflection(chin, axis), [0.0, 0.0, 1.0]])
    return TargetRegions(removed, face, body & ~face, neck & ~face, face_mirror(mesh, oval_index), body_mirror,
                         tinted & inside)


__all__ = ["hair_behind_body", "feature_hulls", "features_mask", "target_regions", "joined", "remove_hair", "stray_strands", "flyaways", "hair_shade", "hair_halo", "face_outline", "body_outline", "valid_shoulders", "face_mirror",
           "side_gaps", "hair_against_face", "skull", "skin_under_hairline", "enclosed_by_hair", "under_hair", "mapping_mask", "reflection", "TargetRegions"]
