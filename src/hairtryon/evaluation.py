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
  not touch: the person's own face, kept.
- ``face_taken``: the share of the face (as the try-on parsed it) that the try-on took for old
  hair.

**Which parser scores.** By default the scorer is the try-on's own parser. Scoring with the
parser that also made the result flatters it: the try-on removed and re-filled exactly what
that parser calls hair, and fast marching repaired exactly where that parser disagreed with the
plan. Score with another parser (``scorer=load_segmenter('unet:PATH')``, ``hairtryon eval
--segmenter unet:PATH``) for an independent view; ``../shared/judge`` is a third one that shares
no code with the project.
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
    untouched = shrink(tgt_face) & (result.masks["hair_alpha"] == 0)
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
        "face_taken": area_fraction(tool_face & result.masks["removed"], tool_face),
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
