"""Quality of a try-on, measured (the figures the benchmarks and tests report).

All measures are taken in the target's work frame, over pixels inside the target photo:

- ``hair_iou``: IoU of the output's hair (parsed again) with the warped source hair mask (its
  matte > 0.5).
- ``hair_delta_e``: CIEDE2000 between the median Lab colour of the output's hair and of the
  source's hair.
- ``face_psnr``: PSNR (dB) over the target's face pixels the new hair does not touch, output vs
  target; the face mask is the parser's shrunk by ``tolerance`` of the frame size (its edge is
  where a fringe's shadow lies, which the try-on may take for old hair, and where two parses of
  one edge differ).
- ``face_taken``: the share of the parser's face pixels that the try-on took for old hair (a
  fringe's shadow next to the hair).
- ``old_hair``: pixels parsed as hair in the output outside the new hair mask (the warped source
  hair and what it was grown over beside the face, matte > 0.5; grown by
  ``tolerance`` of the frame size, the width two parses of one edge differ by), as a fraction of
  the target's face area.

The new hair as a layer (issue 13): :func:`painted_background` and :func:`blue_leak` (the halo
test: no colour of the source's background reaches the target), :func:`cut_difference` (the
cut-off does not depend on that colour), :func:`hair_layer_measures` (sharpness, high-frequency
energy and grain of the new hair against the target photo's own, at its resolution) and
:func:`layer_colour_difference` (the hair's colour kept).
"""
from __future__ import annotations

from typing import Dict

import cv2
import numpy as np

from .framing import disk
from .metrics import colour_difference, iou, psnr
from .segmentation import FACE, HAIR


def evaluate(result, tool, tolerance: float = 0.01) -> Dict[str, float]:
    """Measures of a :class:`~hairtryon.pipeline.TryOnResult` made by ``tool`` (a HairTryOn,
    whose segmenter re-parses the output)."""
    tgt, src = result.target, result.source
    s = tgt.frame.size
    inside = tgt.inside
    out = tgt.frame.extract(result.image)
    parsed = tool.parse_crop(out).labels
    new_hair = result.masks["hair_alpha"] > 0.5
    out_hair = (parsed == HAIR) & inside
    tol = max(1, int(round(tolerance * s)))
    grown = cv2.dilate(new_hair.astype(np.uint8), disk(tol))
    face = (tgt.semantic.labels == FACE) & inside
    taken = face & result.masks["removed"]
    inner_face = cv2.erode(face.astype(np.uint8), disk(tol)).astype(bool)
    untouched = inner_face & (result.masks["hair_alpha"] == 0)
    src_hair = (src.semantic.labels == HAIR) & src.inside
    return {
        "hair_iou": iou(out_hair, (result.masks["source_hair"] > 0.5) & inside),
        "hair_delta_e": colour_difference(out, out_hair & new_hair, src.crop, src_hair),
        "face_psnr": psnr(out, tgt.crop, untouched),
        "old_hair": float((out_hair & ~grown.astype(bool)).sum() / max(face.sum(), 1)),
        "face_taken": float(taken.sum() / max(face.sum(), 1)),
    }


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
