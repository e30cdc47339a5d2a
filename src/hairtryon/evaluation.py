"""Quality of a try-on, measured: the field's figures for one result, a summary of many, and a
contact sheet to look at the worst.

:func:`evaluate` scores one :class:`~hairtryon.pipeline.TryOnResult`. A *scoring parser*
(``scorer``, any :class:`~hairtryon.segmentation.Segmenter`) parses the target, the source and
the result again, each in the target's or source's work frame; every measure is taken in the
target's work frame, over pixels inside the target photo (pixels outside the frame are the
target's own, bit for bit, and would only flatter the figures):

- ``hair_iou``: IoU of the result's hair (as the scorer parses it) with the *aligned source
  hair*: the source's hair (as the scorer parses the source) moved onto the target by the
  try-on's own transform (``result.meta['warp']``).
- ``hair_delta_e``: CIEDE2000 between the median Lab colour of the result's hair and of the
  source's hair.
- ``nonhair_psnr`` / ``nonhair_ssim``: PSNR (dB, identical pixels count as 100 dB) and SSIM
  (:func:`hairtryon.metrics.ssim`), result against target, over the pixels that are non-hair
  both in the target and in the result, less a band of ``tolerance`` of the frame around either
  hair (the width by which two parses of one edge differ; the new hair's soft edge lies there).
- ``leftover``: result hair outside the intended hair (the try-on's mapping mask, hair, grown by
  ``tolerance``), as a fraction of the target's face area: old hair the try-on failed to remove.
- ``skin_delta_e``: CIEDE2000 between the median Lab colour of newly uncovered skin (hair in the
  target, face in the result, away from the result's hair by ``tolerance``) and of the target's
  own skin (its face less the eyes, brows and lips, :func:`facial_features`); NaN when less than
  0.5% of the face area was uncovered.
- ``face_psnr``: PSNR over the target's face (shrunk by ``tolerance``) that the new hair does
  not touch and the try-on did not take as old hair or its shade: the person's own face, kept
  (100 dB when bit-identical).
- ``face_taken``: the share of the face (as the try-on parsed it) that the try-on took for old
  hair (rebuilt) or for its shade (tone lifted, texture kept).

**Which parser scores.** By default the scorer is the try-on's own parser. Scoring with the
parser that also made the result flatters it: the try-on removed and re-filled exactly what
that parser calls hair, and fast marching repaired exactly where that parser disagreed with the
plan. Score with another parser (``scorer=load_segmenter('unet:PATH')``, ``hairtryon eval
--segmenter unet:PATH``) for an independent view; ``../shared/judge`` is a third one that shares
no code with the project.

The new hair as a layer (issue 13): :func:`painted_background` and :func:`blue_leak` (the halo
test: no colour of the source's background reaches the target), :func:`cut_difference` (the
cut-off does not depend on that colour), :func:`hair_layer_measures` (sharpness, high-frequency
energy and grain of the new hair against the target photo's own, at its resolution) and
:func:`layer_colour_difference` (the hair's colour kept).
"""
from __future__ import annotations

import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .alignment import warp_labels
from .framing import disk, resize
from .metrics import area_fraction, colour_difference, iou, psnr, ssim
from .segmentation import FACE, HAIR, Segmenter, labels_from_probs, segment_frame

# name -> (True when higher is better, how the summary prints it)
MEASURES: Dict[str, bool] = {
    "hair_iou": True,
    "hair_delta_e": False,
    "nonhair_psnr": True,
    "nonhair_ssim": True,
    "leftover": False,
    "skin_delta_e": False,
    "face_psnr": True,
    "face_taken": False,
}
PSNR_MAX_DB = 100.0  # identical pixels are reported as 100 dB (JSON and CSV have no infinity)
SKIN_MIN_SHARE = 0.005  # skin ΔE needs uncovered skin of at least this share of the face area


# Face Mesh's outer lip contour (the eyes and brows are named in hairtryon.landmarks)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)


def facial_features(analysis, grow: float = 0.02) -> np.ndarray:
    """(S, S) bool in ``analysis``' work frame: the eyes, brows and lips (convex hulls of their
    Face Mesh points) grown by ``grow`` of the frame's side; what of the face is not skin."""
    from .landmarks import EYEBROWS, IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE

    s = analysis.frame.size
    mask = np.zeros((s, s), np.uint8)
    half = len(EYEBROWS) // 2
    for idx in (IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE, LIPS, EYEBROWS[:half], EYEBROWS[half:]):
        pts = analysis.frame.to_frame_points(analysis.landmarks.mesh[list(idx)])
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    return cv2.dilate(mask, disk(grow * s)).astype(bool)


def _labels(image: np.ndarray, frame, segmenter: Segmenter) -> np.ndarray:
    return labels_from_probs(segment_frame(image, frame, segmenter))


def evaluate(result, tool, scorer: Optional[Segmenter] = None, tolerance: float = 0.01) -> Dict[str, float]:
    """The measures (see the module's docstring) of a :class:`~hairtryon.pipeline.TryOnResult`
    made by ``tool`` (a :class:`~hairtryon.pipeline.HairTryOn`). ``scorer``: the parser that
    scores (default: the tool's own). ``tolerance``: the width of edge bands, as a fraction of
    the work frame's side. Returns {name: float}; NaN where a measure does not apply."""
    tgt, src = result.target, result.source
    s = tgt.frame.size
    inside = tgt.inside
    out = tgt.frame.extract(result.image)
    scorer = scorer or tool.segmenter
    own = scorer is tool.segmenter
    res_labels = _labels(result.image, tgt.frame, scorer)
    tgt_labels = tgt.semantic.labels if own else _labels(tgt.image, tgt.frame, scorer)
    src_labels = src.semantic.labels if own else _labels(src.image, src.frame, scorer)
    src_hair = (src_labels == HAIR) & src.inside
    if "warp" in result.meta:
        aligned = (warp_labels(src_hair.astype(np.uint8), result.meta["warp"], (s, s)) > 0) & inside
    else:  # a result without its transform: the try-on's own warped source hair
        aligned = (result.masks["source_hair"] > 0.5) & inside

    tol = max(1, int(round(tolerance * s)))
    grow = lambda m: cv2.dilate(m.astype(np.uint8), disk(tol)).astype(bool)  # noqa: E731
    shrink = lambda m: cv2.erode(m.astype(np.uint8), disk(tol)).astype(bool)  # noqa: E731
    res_hair = (res_labels == HAIR) & inside
    tgt_hair = (tgt_labels == HAIR) & inside
    tgt_face = (tgt_labels == FACE) & inside
    intended = (result.masks["mapping_mask"] == HAIR) | (result.masks["hair_alpha"] > 0.5)
    nonhair = inside & ~grow(tgt_hair | res_hair)
    uncovered = tgt_hair & (res_labels == FACE) & ~grow(res_hair) & inside
    own_skin = tgt_face & (res_labels == FACE) & ~facial_features(tgt, tolerance * 2) & ~uncovered
    face_area = int(tgt_face.sum())
    # the face the try-on neither covers with new hair nor takes as old hair (strands, their
    # shade: rebuilt on purpose, counted by face_taken)
    changed = result.masks["removed"] | result.masks["tinted"]  # rebuilt, or its shade lifted (texture kept)
    untouched = shrink(tgt_face) & (result.masks["hair_alpha"] == 0) & ~grow(changed)
    tool_face = (tgt.semantic.labels == FACE) & inside
    return {
        "hair_iou": iou(res_hair, aligned),
        "hair_delta_e": colour_difference(out, res_hair, src.crop, src_hair),
        "nonhair_psnr": psnr(out, tgt.crop, nonhair, max_db=PSNR_MAX_DB),
        "nonhair_ssim": ssim(out, tgt.crop, nonhair),
        "leftover": area_fraction(res_hair & ~grow(intended), tgt_face),
        "skin_delta_e": colour_difference(out, uncovered, tgt.crop, own_skin,
                                          min_pixels=max(20, int(SKIN_MIN_SHARE * face_area))),
        "face_psnr": psnr(out, tgt.crop, untouched, max_db=PSNR_MAX_DB),
        "face_taken": area_fraction(tool_face & changed, tool_face),
    }


# ------------------------------------------------------------------------------ many pairs
def _finite(values) -> List[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def summarize(rows: Sequence[dict], worst: int = 5) -> dict:
    """A summary of evaluation rows (dicts with ``pair``, ``status`` and the measures):
    counts per status, and per measure the median, the mean, how many pairs it applies to and
    the ``worst`` pairs with their values."""
    ok = [r for r in rows if r.get("status") == "ok"]
    summary = {"pairs": len(rows), "ok": len(ok),
               "declined": sum(r.get("status") == "declined" for r in rows),
               "failed": sum(r.get("status") == "failed" for r in rows), "measures": {}}
    for name, higher in MEASURES.items():
        vals = [(r["pair"], r[name]) for r in ok if _finite([r.get(name)])]
        if not vals:
            summary["measures"][name] = {"n": 0, "median": None, "mean": None, "worst": []}
            continue
        nums = [v for _, v in vals]
        ranked = sorted(vals, key=lambda pv: pv[1], reverse=not higher)
        summary["measures"][name] = {
            "n": len(nums), "median": statistics.median(nums), "mean": statistics.fmean(nums),
            "worst": [{"pair": p, "value": v} for p, v in ranked[:worst]]}
    return summary


def badness_order(rows: Sequence[dict]) -> List[int]:
    """Indices of ``rows``, worst first: failed pairs, then the scored pairs by their mean rank
    over the measures (each measure ranked from worst to best; a measure that does not apply to
    a pair counts as middling), then declined pairs."""
    ok = [i for i, r in enumerate(rows) if r.get("status") == "ok"]
    score = {i: 0.0 for i in ok}
    for name, higher in MEASURES.items():
        vals = {i: rows[i].get(name) for i in ok}
        have = [i for i in ok if _finite([vals[i]])]
        have.sort(key=lambda i: vals[i], reverse=not higher)  # worst first
        for rank, i in enumerate(have):
            score[i] += 1.0 - rank / max(1, len(have) - 1) if len(have) > 1 else 0.5
        for i in ok:
            if i not in have:
                score[i] += 0.5
    failed = [i for i, r in enumerate(rows) if r.get("status") == "failed"]
    declined = [i for i, r in enumerate(rows) if r.get("status") == "declined"]
    return failed + sorted(ok, key=lambda i: (-score[i], i)) + declined


def _caption(row: dict) -> Tuple[str, str]:
    """Two lines above a pair on the contact sheet: its name, and its figures (or why not)."""
    if row.get("status") != "ok":
        return row["pair"], f"{row['status'].upper()}: {row.get('message', '')}"
    f = lambda k, fmt: ("-" if not _finite([row.get(k)]) else fmt.format(row[k]))  # noqa: E731
    return row["pair"], (f"IoU {f('hair_iou', '{:.3f}')}  hair dE {f('hair_delta_e', '{:.1f}')}  "
                         f"PSNR {f('nonhair_psnr', '{:.1f}')}  SSIM {f('nonhair_ssim', '{:.3f}')}  "
                         f"leftover {f('leftover', '{:.1%}')}  skin dE {f('skin_delta_e', '{:.1f}')}")


def contact_sheet(rows: Sequence[dict], thumbs: Sequence[Optional[dict]], limit: int = 40,
                  tile: int = 192) -> np.ndarray:
    """One picture, a row per pair, worst first (:func:`badness_order`): target | source |
    result, with the pair's name and figures (or why it was declined or failed) above.
    ``thumbs[i]``: None or {'target', 'source', 'result'} -> (h, w, 3) uint8 pictures. Returns
    (H, 3 * tile, 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    order = badness_order(rows)[:limit]
    bar = 32
    canvas = Image.new("RGB", (3 * tile, max(1, len(order)) * (tile + bar)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for k, i in enumerate(order):
        y = k * (tile + bar)
        name, figures = _caption(rows[i])
        draw.text((4, y + 2), f"{k + 1}. {name}"[:90], fill=(0, 0, 0), font=font)
        draw.text((4, y + 16), figures[:95], fill=(0, 0, 0) if rows[i].get("status") == "ok" else (180, 0, 0),
                  font=font)
        for c, name in enumerate(("target", "source", "result")):
            pic = (thumbs[i] or {}).get(name)
            if pic is None:
                pic = np.full((tile, tile, 3), 200, np.uint8)
            h, w = pic.shape[:2]
            r = tile / max(h, w)
            pic = resize(pic, (max(1, round(h * r)), max(1, round(w * r))), cv2.INTER_AREA)
            box = np.full((tile, tile, 3), 235, np.uint8)
            oy, ox = (tile - pic.shape[0]) // 2, (tile - pic.shape[1]) // 2
            box[oy:oy + pic.shape[0], ox:ox + pic.shape[1]] = pic
            canvas.paste(Image.fromarray(box), (c * tile, y + bar))
    return np.asarray(canvas)


# ------------------------------------------------------------------ the new hair as a layer
def painted_background(analysis, colour, rim: float = 0.08, match: float = 25.0) -> np.ndarray:
    """A copy of the analysed photo ((H, W, 3) uint8) whose background is painted ``colour``
    (RGB): the parser's background class in the work frame, plus the pixels of the hair's outer
    band (``rim`` of the face's size deep) whose colour is the background's own (within CIE76
    ``match`` of the background's local average colour, and nearer it than the hair's by a
    factor 0.7): parsers
    leave a rim of background there. Pixels outside the work frame stay as they are. Used by
    the halo test: whatever of ``colour`` reaches a try-on came from the source's background.
    ``analysis``: a :class:`~hairtryon.pipeline.FaceAnalysis`."""
    from .compositing import normalized_blur
    from .matting import _lab
    from .segmentation import BACKGROUND

    f = analysis.frame
    crop, labels, inside = analysis.crop, analysis.semantic.labels, analysis.inside
    bg = (labels == BACKGROUND) & inside
    hair = (labels == HAIR) & inside
    face_px = float(np.linalg.norm(analysis.points[0] - analysis.points[3]))
    depth = max(2.0, rim * face_px)
    # hair pixels near the background (within `depth` of it)
    to_bg = cv2.distanceTransform((~bg).astype(np.uint8), cv2.DIST_L2, 3)
    band = hair & (to_bg <= depth)
    img = crop.astype(np.float32)
    sigma = max(2.0, depth)
    bg_col = normalized_blur(img, bg, sigma)
    hair_col = normalized_blur(img, hair & (to_bg > depth), 2 * sigma)
    lab = _lab(crop)
    d_bg = np.linalg.norm(lab - _lab(np.nan_to_num(bg_col)), axis=-1)
    d_hair = np.linalg.norm(lab - _lab(np.nan_to_num(hair_col)), axis=-1)
    ok = ~np.isnan(bg_col[..., 0])
    rim_px = band & ok & (d_bg < match) & (np.isnan(hair_col[..., 0]) | (d_bg < 0.7 * d_hair))
    paint = bg | rim_px
    out = analysis.image.copy()
    rows, cols, brows, bcols = f.roi()
    big = f.to_image_box(paint.astype(np.uint8), cv2.INTER_NEAREST)[brows, bcols].astype(bool)
    region = out[rows, cols]
    region[big] = np.asarray(colour, np.uint8)
    return out


def blue_leak(result, radius: int = 15, b_star: float = -30.0) -> Dict[str, float]:
    """Strongly blue pixels (CIELAB b* < ``b_star``) of a try-on within ``radius`` work-frame
    pixels of its new hair (matte > 0.5), beyond those the target photo already had there:
    ``leak`` their count over the hair's area, ``pixels`` the count, ``hair`` the hair's area
    (all in the target's work frame, inside the photo). The halo test swaps sources whose
    background was painted blue (:func:`painted_background`); blue in the result came from
    the source's background."""
    from .matting import _lab

    tgt = result.target
    inside = tgt.inside
    hair = (result.masks["hair_alpha"] > 0.5) & inside
    near = cv2.dilate(hair.astype(np.uint8), disk(radius)).astype(bool) & inside
    out = tgt.frame.extract(result.image)
    blue = _lab(out)[..., 2] < b_star
    had = _lab(tgt.crop)[..., 2] < b_star
    n = int((blue & ~had & near).sum())
    return {"leak": n / max(1, int(hair.sum())), "pixels": n, "hair": int(hair.sum())}


def detail_ratio(gray: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy of a photo's region, independent of its contrast: the energy of
    the finest octave of the luma (``gray`` (H, W) float32 minus its Gaussian blur of sigma 1)
    over that of the next octave (blur 1 minus blur 2), over the pixels of ``mask`` ((H, W)
    bool). Blur, upscaling and smoothing lower it; sharpening and grain raise it. NaN when the
    mask is empty."""
    if mask.sum() < 50:
        return float("nan")
    box = tuple(slice(max(0, a.min() - 8), a.max() + 9) for a in np.nonzero(mask))
    g = gray[box].astype(np.float32)
    m = mask[box]
    g1 = cv2.GaussianBlur(g, (0, 0), 1.0)
    g2 = cv2.GaussianBlur(g, (0, 0), 2.0)
    fine = ((g - g1)[m] ** 2).mean()
    mid = ((g1 - g2)[m] ** 2).mean()
    return float(fine / max(mid, 1e-9))


def _photo_mask(frame, arr: np.ndarray, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """A work-frame array ((S, S)) brought to the frame's photo, (H, W) float32 (0 outside the frame)."""
    out = np.zeros(frame.image_hw, np.float32)
    rows, cols, brows, bcols = frame.roi()
    out[rows, cols] = frame.to_image_box(arr.astype(np.float32), interpolation)[brows, bcols]
    return out


def hair_layer_measures(result, erode: float = 0.01) -> Dict[str, float]:
    """How the new hair of a try-on sits in the target photo, measured at the target photo's
    own resolution (the result as delivered, against the target photo itself), each measure
    normalised by the source photo so that the hair is compared with itself:

    - ``sharpness``: edge blur (:func:`hairtryon.matting.edge_blur`, a sigma in pixels) of the
      target's face over that of the new hair, divided by the same of the source's face over
      its hair (in the source's frame): 1 when the new hair is as sharp next to the target's
      face as it was next to its own; below 1 softer (e.g. enlarged), above 1 crisper.
    - ``detail``: the same with the high-frequency energy (:func:`detail_ratio`) in place of
      the blur: the new hair's over the target face's, divided by the source hair's over the
      source face's.
    - ``noise``: the new hair's grain level (:func:`hairtryon.matting.grain_level`) over the
      target face's, both at the target photo's resolution; ``noise_bg``: over the target's
      background and clothes near the head (often blurred or flattened by JPEG).
    - the terms: ``hair_blur``, ``face_blur``, ``source_hair_blur``, ``source_face_blur``,
      ``hair_detail``, ``face_detail``, ``source_hair_detail``, ``source_face_detail``,
      ``hair_noise``, ``face_noise``, ``background_noise``.
    Regions: the new hair where its matte is above 0.95 and the faces and hair of the parsers,
    each eroded by ``erode`` of the frame's size (no edges), inside the photos."""
    from .matting import _luma, edge_blur, grain_level
    from .segmentation import BACKGROUND, NECK

    tgt, src = result.target, result.source
    f = tgt.frame
    r = max(1, int(round(erode * f.side)))
    shrink = lambda m: cv2.erode(m.astype(np.uint8), disk(r)).astype(bool)
    hair = shrink(_photo_mask(f, result.masks["hair_alpha"]) > 0.95)
    labels = _photo_mask(f, tgt.semantic.labels, cv2.INTER_NEAREST).astype(np.uint8)
    inside = _photo_mask(f, np.ones((f.size, f.size), np.float32), cv2.INTER_NEAREST) > 0
    face = shrink((labels == FACE) & inside)
    flat = shrink(np.isin(labels, (BACKGROUND, NECK)) & inside)
    out_y, tgt_y = _luma(result.image), _luma(tgt.image)
    rs = max(1, int(round(erode * src.frame.size)))
    s_shrink = lambda m: cv2.erode(m.astype(np.uint8), disk(rs)).astype(bool)
    s_hair = s_shrink((src.semantic.labels == HAIR) & src.inside)
    s_face = s_shrink((src.semantic.labels == FACE) & src.inside)
    src_y = _luma(src.crop)
    m = {"hair_blur": edge_blur(out_y, hair), "face_blur": edge_blur(tgt_y, face),
         "source_hair_blur": edge_blur(src_y, s_hair), "source_face_blur": edge_blur(src_y, s_face),
         "hair_detail": detail_ratio(out_y, hair), "face_detail": detail_ratio(tgt_y, face),
         "source_hair_detail": detail_ratio(src_y, s_hair), "source_face_detail": detail_ratio(src_y, s_face),
         "hair_noise": grain_level(out_y, hair)[0], "face_noise": grain_level(tgt_y, face)[0],
         "background_noise": grain_level(tgt_y, flat)[0]}
    own = shrink((labels == HAIR) & inside)
    m["target_hair_blur"] = edge_blur(tgt_y, own)
    m["target_hair_detail"] = detail_ratio(tgt_y, own)
    m["sharpness_own"] = m["target_hair_blur"] / m["hair_blur"]
    m["detail_own"] = m["hair_detail"] / m["target_hair_detail"]
    m["sharpness"] = (m["face_blur"] / m["hair_blur"]) / (m["source_face_blur"] / m["source_hair_blur"])
    m["detail"] = (m["hair_detail"] / m["face_detail"]) / (m["source_hair_detail"] / m["source_face_detail"])
    m["noise"] = m["hair_noise"] / m["face_noise"] if m["face_noise"] > 0 else float("nan")
    m["noise_bg"] = m["hair_noise"] / m["background_noise"] if m["background_noise"] > 0 else float("nan")
    return m


def cut_difference(a, b, width: float = 0.015) -> float:
    """How differently two try-ons onto one target cut the new hair (the halo test's blue and
    grey copies of one source): the part of the two warped source hair masks (matte > 0.5) that
    only one of them has and that is more than ``width`` of the frame's size from both edges
    (two parses of one photo differ along the edge anyway; a cut straight across, or a smear
    one of them has, is a thick region), over the hair's area. 0 when they agree."""
    ha, hb = a.masks["source_hair"] > 0.5, b.masks["source_hair"] > 0.5
    r = max(1, int(round(width * ha.shape[0])))
    thick = cv2.erode((ha ^ hb).astype(np.uint8), disk(r)).astype(bool)
    return float(thick.sum() / max(1, int((ha | hb).sum())))


def layer_colour_difference(result) -> float:
    """CIEDE2000 between the median colour of the new hair in the try-on and that of the same
    hair in the source: the mapping image's pixels (the new hair over the rebuilt target, work
    frame, before fast marching repaints what the re-parse disputes) where the warped source
    hair's matte is above 0.95, inside the photo, against the source pixels they came from (that
    region moved back by the try-on's own transform). What matting, grain and sharpening did to
    the colour, not a difference of two parses."""
    from .alignment import estimate_alignment

    tgt, src = result.target, result.source
    f = tgt.frame
    align = estimate_alignment(src.landmarks.points, tgt.landmarks.points, (f.x0, f.y0, f.x0 + f.side, f.y0 + f.side))
    warp = f.matrix() @ align.matrix @ np.linalg.inv(src.frame.matrix())
    out = result.stages["mapping image"]  # the new hair over the rebuilt target, before fast marching
    hair = (result.masks["source_hair"] > 0.95) & tgt.inside
    s = src.frame.size
    back = cv2.warpPerspective(hair.astype(np.uint8), np.linalg.inv(warp), (s, s), flags=cv2.INTER_NEAREST) > 0
    return colour_difference(out, hair, src.crop, back & src.inside)
