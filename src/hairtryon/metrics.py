"""The field's measures of a try-on, used by the benchmarks, the evaluation and the tests.

Images (H, W, 3) uint8 RGB; masks (H, W) bool, all in the same frame.
"""
from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def median_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) CIELAB median colour of the masked pixels (D65)."""
    from skimage.color import rgb2lab

    pixels = image[mask].reshape(-1, 1, 3)
    if len(pixels) == 0:
        return np.full(3, np.nan)
    return np.median(rgb2lab(pixels).reshape(-1, 3), axis=0)


def colour_difference(image_a: np.ndarray, mask_a: np.ndarray, image_b: np.ndarray, mask_b: np.ndarray) -> float:
    """CIEDE2000 between the median Lab colours of two masked regions (e.g. two heads of hair)."""
    from skimage.color import deltaE_ciede2000

    return float(deltaE_ciede2000(median_lab(image_a, mask_a), median_lab(image_b, mask_b)))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray = None) -> float:
    """Peak signal-to-noise ratio in dB over the masked pixels (inf when identical)."""
    if mask is None:
        mask = np.ones(a.shape[:2], bool)
    if not mask.any():
        return float("nan")
    diff = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
