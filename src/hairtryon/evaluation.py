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
