"""Stages 4 and 5 of the method (paper 3.2.3 cropping, 3.2.4 replacing).

Cropping: the (warped) source keeps only its hair, as a soft matte refined on the image so
fine strands and the hairline blend; the target loses its hair (a morphological closing plus a
small dilation so no fringe pixel survives at the edge). Replacing: the source's hair laid over
the hairless target. Where the paper paints everything else white, we keep the target's own
background; what the old hair covered is rebuilt by :mod:`hairtryon.inpainting`.

All arrays here live in the target's work frame: images (S, S, 3) uint8 RGB, masks (S, S) bool,
mattes (S, S) float32 in [0, 1], labels (S, S) uint8 class ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .framing import disk


def normalized_blur(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``image`` (S, S, C) float32 over the pixels where ``weight`` (S, S) is
    high; (S, S, C) float32, NaN where no weighted pixel is near. Computed at a resolution
    reduced to suit ``sigma`` (the result is smooth at that scale anyway)."""
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


# --------------------------------------------------------------------------- cropping: source
@dataclass
class HairLayer:
    """The source's hair, cut out and placed in the target frame.

    ``alpha``: (S, S) float32 soft matte. ``foreground``: (S, S, 3) float32 hair colours with the
    source's own background unmixed from the edges (0-255). ``mask``: (S, S) bool, alpha > 0.5.
    """

    alpha: np.ndarray
    foreground: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.alpha > 0.5

    def on_white(self) -> np.ndarray:
        """(S, S, 3) uint8: the hair over white, as the paper shows the cropped source."""
        a = self.alpha[..., None]
        return np.clip(self.foreground * a + 255.0 * (1 - a), 0, 255).astype(np.uint8)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def pull_matte(image: np.ndarray, hair: np.ndarray, band: float) -> HairLayer:
    """Soft hair matte and unmixed hair colours from the parser's hair mask.

    The mask ((S, S) bool) gives a trimap: sure hair and sure background are the pixels more
    than half a ``band`` inside and outside its edge. In the band between, each pixel's alpha is
    where its colour lies on the line from the local background colour B to the local hair colour
    F (both averaged from the sure pixels nearby), trusted as far as F and B differ, and a smooth
    ramp across the mask's edge elsewhere. The colours are then unmixed,
    F = (I - (1 - a) B) / a, so no rim of the source's old background travels with the hair.
    ``image`` (S, S, 3) uint8.
    """
    img = image.astype(np.float32)
    r = max(1, int(round(band / 2)))
    hair_u8 = hair.astype(np.uint8)
    sure_fg = cv2.erode(hair_u8, disk(r)).astype(bool)
    sure_bg = ~cv2.dilate(hair_u8, disk(r)).astype(bool)
    fg_col = normalized_blur(img, sure_fg, band)
    bg_col = normalized_blur(img, sure_bg, band)
    fallback = np.median(img[sure_fg], axis=0) if sure_fg.any() else img.reshape(-1, 3).mean(0)
    fg_ok = ~np.isnan(fg_col[..., 0])
    bg_ok = ~np.isnan(bg_col[..., 0])
    fg_col = np.where(fg_ok[..., None], fg_col, fallback)
    bg_col = np.where(bg_ok[..., None], bg_col, fg_col)
    d = fg_col - bg_col
    dd = (d * d).sum(-1)
    a_colour = np.clip(((img - bg_col) * d).sum(-1) / np.maximum(dd, 1e-3), 0.0, 1.0)
    trust = np.clip(np.sqrt(dd) / 60.0, 0.0, 1.0) * fg_ok * bg_ok
    a_prob = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), max(1.0, band / 4))
    alpha = trust * a_colour + (1.0 - trust) * a_prob
    alpha = np.where(sure_fg, 1.0, np.where(sure_bg, 0.0, alpha)).astype(np.float32)
    # light edge-aware smoothing of the colour estimate's pixel noise
    alpha = cv2.ximgproc.guidedFilter(img / 255.0, alpha, 2, 1e-4)
    alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    alpha[alpha < 0.02] = 0.0
    a = alpha[..., None]
    solved = np.clip((img - (1.0 - a) * bg_col) / np.maximum(a, 0.05), 0, 255)
    # trust the unmixed colour where alpha is high and hair and background colours differ
    w = _smoothstep((a - 0.3) / 0.5) * np.maximum(trust, sure_fg)[..., None]
    foreground = (w * solved + (1 - w) * fg_col).astype(np.float32)
    return HairLayer(alpha, foreground)


def crop_source_hair(warped_source: np.ndarray, warped_hair: np.ndarray) -> HairLayer:
    """Cropping of the source (3.2.3): only its hair, as a :class:`HairLayer`.

    ``warped_source``: (S, S, 3) uint8 source image already moved onto the target's head;
    ``warped_hair``: (S, S) bool its hair mask, warped the same way."""
    s = warped_source.shape[0]
    return pull_matte(warped_source, warped_hair, band=max(3.0, s / 80))


# --------------------------------------------------------------------------------- replacing
def replace_hair(hairless_target: np.ndarray, layer: HairLayer) -> np.ndarray:
    """Replacing (3.2.4): the hair layer over the hairless target, (S, S, 3) uint8."""
    a = layer.alpha[..., None]
    out = hairless_target.astype(np.float32) * (1.0 - a) + layer.foreground * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
