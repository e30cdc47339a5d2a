"""Stages 4 and 5 of the method (paper 3.2.3 cropping, 3.2.4 replacing).

Cropping: the source's hair is cut out as a layer by :mod:`hairtryon.matting`; the target
loses its hair (a morphological closing plus a small dilation so no fringe pixel survives at
the edge). Replacing: the source's hair laid over
the hairless target. Where the paper paints everything else white, we keep the target's own
background; what the old hair covered is rebuilt by :mod:`hairtryon.inpainting`.

All arrays here live in the target's work frame: images (S, S, 3) uint8 RGB, masks (S, S) bool,
mattes (S, S) float32 in [0, 1], labels (S, S) uint8 class ids.
"""
from __future__ import annotations

import cv2
import numpy as np

from .framing import disk
# the source's hair as a layer lives in matting.py (trimap, alpha, unmixed colours, warping, grain);
# re-exported for the code that still imports it from here
from .matting import HairLayer  # noqa: F401
from .segmentation import BACKGROUND, EARS, FACE, HAIR, NECK


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


# --------------------------------------------------------------------------- cropping: target
def remove_hair(image: np.ndarray, labels: np.ndarray, hair_prob: np.ndarray, closing_px: int,
                margin_px: int, face_margin_px: int) -> np.ndarray:
    """Cropping of the target (3.2.3): the region its hair occupied, (S, S) bool.

    The hair mask (labels, plus pixels with hair probability > 0.4 so faint edge strands count)
    is closed (the paper's morphological closing) and dilated by ``margin_px`` so the region
    never borders leftover fringe pixels. Into the face it reaches only ``face_margin_px``, and
    only over pixels darker than the face's skin (the shadow at a fringe's edge), so the face
    stays the target's own pixels, eyebrows under a fringe included. (Thin strand tips of a
    fringe that the parser calls face stay too: telling them from skin texture proved unsafe.)"""
    hair = ((labels == HAIR) | (hair_prob > 0.4)).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_CLOSE, disk(closing_px))
    wide = cv2.dilate(hair, disk(margin_px)).astype(bool) if margin_px > 0 else hair.astype(bool)
    face = labels == FACE
    if face_margin_px <= 0 or face.sum() < 50:
        return wide & ~face
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float32)
    vals = lum[face]
    median = np.median(vals)
    spread = 1.4826 * np.median(np.abs(vals - median)) + 1.0
    near = cv2.dilate((hair.astype(bool) & ~face).astype(np.uint8), disk(face_margin_px)).astype(bool)
    taken = face & near & (lum < median - spread)
    return (wide & ~face) | taken | (hair.astype(bool) & ~face)


def mapping_mask(target_labels: np.ndarray, removed: np.ndarray, new_hair: np.ndarray,
                 face_region: np.ndarray) -> np.ndarray:
    """The semantic map the mapping is meant to produce ((S, S) uint8 labels), the paper's
    "mapping mask".

    The target's own labels, where the removed old hair becomes what lies under it: face inside
    ``face_region`` ((S, S) bool, the face silhouette from the landmarks: the forehead under a
    fringe), elsewhere the nearest visible class among background, neck+clothes and ears; then the
    new hair (``new_hair``, (S, S) bool) on top."""
    out = target_labels.copy()
    under_face = removed & face_region
    out[under_face] = FACE
    rest = removed & ~face_region
    if rest.any():
        best = np.full(out.shape, np.inf, np.float32)
        choice = np.full(out.shape, BACKGROUND, np.uint8)
        for cls in (BACKGROUND, NECK, EARS):
            seeds = (target_labels == cls) & ~removed
            if not seeds.any():
                continue
            dist = cv2.distanceTransform((~seeds).astype(np.uint8), cv2.DIST_L2, 5)
            closer = dist < best
            best[closer] = dist[closer]
            choice[closer] = cls
        out[rest] = choice[rest]
    out[new_hair] = HAIR
    return out


def side_gaps(new_hair: np.ndarray, face: np.ndarray, removed: np.ndarray, width: int, below: int) -> np.ndarray:
    """Where the old hair was, the horizontal gaps (up to ``width`` pixels) between the face and
    the new hair, above row ``below`` (the mouth): the new hairstyle was made for another head,
    and on this one it would hang there. (S, S) bool."""
    kernel = np.ones((1, 2 * int(width) + 1), np.uint8)
    closed = cv2.morphologyEx((new_hair | face).astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    gaps = closed & ~new_hair & ~face & removed
    gaps[int(max(0, below)):] = False
    return gaps


def extend_hair(layer: HairLayer, gaps: np.ndarray, rng_seed: int = 0) -> HairLayer:
    """The hair layer grown over ``gaps`` ((S, S) bool): the hair's own colours spread in by a
    pyramid fill, with the hair's fine grain, fully opaque there."""
    from .inpainting import push_pull

    if not gaps.any():
        return layer
    core = layer.alpha > 0.9
    s = gaps.shape[0]
    k = max(1, s // 256)  # the spread colours are smooth: computed at a quarter of the size or less
    small = cv2.resize(layer.foreground, (s // k, s // k), interpolation=cv2.INTER_AREA)
    small_core = cv2.resize(core.astype(np.float32), (s // k, s // k), interpolation=cv2.INTER_AREA) > 0.99
    grown = cv2.resize(push_pull(small, small_core), (s, s), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(rng_seed)
    grey = layer.foreground.mean(-1)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
    sigma = 1.4826 * np.median(np.abs(detail[core])) if core.any() else 0.0
    streaks = cv2.GaussianBlur(rng.standard_normal(gaps.shape, dtype=np.float32), (0, 0), sigmaX=0.6, sigmaY=4.0)
    grown = grown + (streaks * sigma * 3.0)[..., None]
    soft = cv2.GaussianBlur(gaps.astype(np.float32), (0, 0), 2.0)
    alpha = np.maximum(layer.alpha, np.where(gaps, 1.0, soft)).astype(np.float32)
    fg = np.where(gaps[..., None] | (layer.alpha < 0.5)[..., None] & (soft[..., None] > 0), grown, layer.foreground)
    return HairLayer(alpha, np.clip(fg, 0, 255).astype(np.float32))


# --------------------------------------------------------------------------------- replacing
def replace_hair(hairless_target: np.ndarray, layer: HairLayer) -> np.ndarray:
    """Replacing (3.2.4): the hair layer over the hairless target, (S, S, 3) uint8."""
    a = layer.alpha[..., None]
    out = hairless_target.astype(np.float32) * (1.0 - a) + layer.foreground * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
