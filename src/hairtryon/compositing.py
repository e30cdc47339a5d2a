"""Stage 5 of the method (paper 3.2.4, replacing): the source's hair laid over the hairless target.

The source's hair as a layer is cut out by :mod:`hairtryon.matting` (3.2.3, re-exported here
as :class:`HairLayer`); the target's old hair is found by :mod:`hairtryon.mapping` and what it
covered is rebuilt by :mod:`hairtryon.rebuild`. Where the paper paints everything else white we
keep the target's own photo.

All arrays here live in the target's work frame: images (S, S, 3) uint8 RGB, masks (S, S) bool,
mattes (S, S) float32 in [0, 1].
"""
from __future__ import annotations

import cv2
import numpy as np

from .matting import HairLayer  # noqa: F401  (the layer's home is matting.py)


def normalized_blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``image`` (S, S, C) float32, C >= 2, over the pixels where ``weight``
    (S, S) is high; (S, S, C) float32, NaN where no weighted pixel is near. Computed at a
    resolution reduced to suit ``sigma`` (the result is smooth at that scale anyway)."""
    h, w_ = weight.shape
    k = max(1, int(sigma // 3))
    sh, sw = max(1, h // k), max(1, w_ // k)
    wt = cv2.resize(weight.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    num = cv2.resize(image * weight[..., None].astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    wt = cv2.GaussianBlur(wt, (0, 0), sigma / k)
    num = cv2.GaussianBlur(num, (0, 0), sigma / k)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(wt[..., None] > 1e-3, num / np.maximum(wt[..., None], 1e-6), np.nan).astype(np.float32)
    return cv2.resize(avg, (w_, h), interpolation=cv2.INTER_LINEAR)


def replace_hair(hairless_target: np.ndarray, layer: HairLayer) -> np.ndarray:
    """Replacing (3.2.4): the hair layer over the hairless target, (S, S, 3) uint8."""
    a = layer.alpha[..., None]
    out = hairless_target.astype(np.float32) * (1.0 - a) + layer.foreground * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
