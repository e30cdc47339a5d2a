"""The field's measures of a try-on, as pure functions: arrays in, numbers out.

Used by :mod:`hairtryon.evaluation` (which decides *which* pixels each measure looks at), the
benchmarks and the tests. Images are (H, W, 3) uint8 RGB and masks (H, W) bool, all of one
image's frame; no function here parses, loads or looks at a model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def median_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) float CIELAB (D65) median colour of the masked pixels of ``image``; NaN when the
    mask is empty. The median is taken per channel of the Lab values."""
    from skimage.color import rgb2lab

    pixels = image[mask].reshape(-1, 1, 3)
    if len(pixels) == 0:
        return np.full(3, np.nan)
    return np.median(rgb2lab(pixels).reshape(-1, 3), axis=0)


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """CIEDE2000 between two (3,) CIELAB colours (NaN if either is NaN)."""
    from skimage.color import deltaE_ciede2000

    if np.isnan(lab_a).any() or np.isnan(lab_b).any():
        return float("nan")
    return float(deltaE_ciede2000(np.asarray(lab_a, float), np.asarray(lab_b, float)))


def colour_difference(image_a: np.ndarray, mask_a: np.ndarray, image_b: np.ndarray, mask_b: np.ndarray,
                      min_pixels: int = 1) -> float:
    """CIEDE2000 between the median Lab colours of two masked regions (e.g. two heads of hair,
    or newly shown skin and a face's own skin). NaN when either region has fewer than
    ``min_pixels`` pixels."""
    if int(mask_a.sum()) < max(1, min_pixels) or int(mask_b.sum()) < max(1, min_pixels):
        return float("nan")
    return delta_e(median_lab(image_a, mask_a), median_lab(image_b, mask_b))


def psnr(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None, max_db: Optional[float] = None) -> float:
    """Peak signal-to-noise ratio in dB of two (H, W, 3) uint8 images over the masked pixels
    (all channels). Identical pixels give inf, or ``max_db`` when given (a finite number for
    reports); an empty mask gives NaN."""
    if mask is None:
        mask = np.ones(a.shape[:2], bool)
    if not mask.any():
        return float("nan")
    diff = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    value = float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
    return value if max_db is None else min(value, float(max_db))


def ssim(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Structural similarity of two (H, W, 3) uint8 images, averaged over the masked pixels:
    the SSIM map of Wang et al. (2004) — Gaussian window sigma 1.5, K1 0.01, K2 0.03, per
    colour channel, channels averaged — as scikit-image computes it, then its mean over
    ``mask``. Pixels outside the mask still enter the 11-pixel windows of those inside it.
    1.0 for identical images; NaN for an empty mask."""
    from skimage.metrics import structural_similarity

    if mask is None:
        mask = np.ones(a.shape[:2], bool)
    if not mask.any():
        return float("nan")
    ys, xs = np.nonzero(mask)
    pad = 6  # half the Gaussian window: the map inside the box does not depend on what lies beyond it
    y0, y1 = max(0, ys.min() - pad), min(a.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(a.shape[1], xs.max() + 1 + pad)
    a, b, mask = a[y0:y1, x0:x1], b[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    if min(a.shape[:2]) < 7:
        return float("nan")
    _, smap = structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return float(smap.mean(axis=2)[mask].mean())


def area_fraction(mask: np.ndarray, area: np.ndarray) -> float:
    """``mask``'s pixel count over ``area``'s (e.g. leftover old hair over the face area);
    0 when ``mask`` is empty, NaN when ``area`` is empty and ``mask`` is not."""
    n, d = int(mask.sum()), int(area.sum())
    if n == 0:
        return 0.0
    return float(n / d) if d else float("nan")
