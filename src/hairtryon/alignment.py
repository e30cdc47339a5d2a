"""Stage 3 of the method (paper 3.2.2): the transform that moves the source's 4 points
(forehead, left eye, right eye, chin) onto the target's, and the warps that apply it.

A 4-point perspective transform is exact at the 4 points but can explode away from them (long
hair is far from the face). :func:`estimate_alignment` checks it over the region that will be
warped and falls back to a similarity transform from the same points when it is degenerate.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional, Tuple

import cv2
import numpy as np

# Limits beyond which the perspective transform is not trusted.
MIN_TRIANGLE_AREA = 0.02  # any 3 of the 4 points: triangle area / (point spread)^2
MAX_LOCAL_SCALE_RATIO = 1.5  # local scale anywhere in the region vs at the face
MAX_SCALE = 20.0  # overall scale (either way) between the two faces


@dataclass(frozen=True)
class Alignment:
    """``matrix``: (3, 3) float64 homography from source to target coordinates.
    ``kind``: 'perspective' (the paper's) or 'similarity' (the fallback); ``reason`` says why a
    fallback was taken (None otherwise)."""

    matrix: np.ndarray
    kind: str
    reason: Optional[str] = None

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) source points -> (N, 2) target points."""
        return cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(-1, 1, 2), self.matrix).reshape(-1, 2)


def _degenerate_points(pts: np.ndarray) -> bool:
    spread = np.ptp(pts, axis=0).max()
    if spread <= 1e-6:
        return True
    for a, b, c in combinations(range(len(pts)), 3):
        area = 0.5 * abs(np.cross(pts[b] - pts[a], pts[c] - pts[a]))
        if area / spread ** 2 < MIN_TRIANGLE_AREA:
            return True
    return False


def _local_scales(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """sqrt|det J| of the homography at each point (N, 2); NaN where it maps to infinity."""
    x, y = pts[:, 0], pts[:, 1]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    det = np.linalg.det(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(np.abs(det) / np.abs(w) ** 3)
    return np.where(np.abs(w) < 1e-9, np.nan, s), w


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) least-squares similarity (rotation, uniform scale, translation) src -> dst."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if m is None:  # fall back to the two eyes alone, which always define a similarity
        m, _ = cv2.estimateAffinePartial2D(src[1:3].astype(np.float32), dst[1:3].astype(np.float32))
    return np.vstack([m, [0.0, 0.0, 1.0]])


def estimate_alignment(src_pts: np.ndarray, dst_pts: np.ndarray,
                       region: Optional[Tuple[float, float, float, float]] = None) -> Alignment:
    """The transform moving ``src_pts`` onto ``dst_pts`` ((4, 2) forehead, left eye, right eye,
    chin, pixel coordinates).

    ``region``: (x0, y0, x1, y1) in target coordinates that will be filled by warping (e.g. the
    target's work frame); the perspective transform must stay well-behaved over it: finite,
    orientation-preserving, and with a local scale within ``MAX_LOCAL_SCALE_RATIO`` of the
    scale at the face. Otherwise the similarity fallback is returned, with the reason.
    """
    src = np.asarray(src_pts, np.float64)
    dst = np.asarray(dst_pts, np.float64)
    if _degenerate_points(src) or _degenerate_points(dst):
        return Alignment(similarity(src, dst), "similarity", "landmarks nearly collinear")
    h = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
    # Check the map from target back to source over the warped region (that is what warping samples).
    inv = np.linalg.inv(h)
    if region is None:
        x0, y0 = dst.min(axis=0)
        x1, y1 = dst.max(axis=0)
        pad = 0.5 * max(x1 - x0, y1 - y0)
        region = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    x0, y0, x1, y1 = region
    gx, gy = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(y0, y1, 9))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    scales, w = _local_scales(inv, grid)
    face_scale, w_face = _local_scales(inv, dst.mean(axis=0, keepdims=True))
    reason = None
    if not np.all(np.isfinite(scales)) or np.any(np.sign(w) != np.sign(w_face[0])):
        reason = "perspective transform maps part of the frame to infinity"
    elif np.linalg.det(inv) * w_face[0] <= 0:  # sign of det(J) = sign(det H / w^3)
        reason = "perspective transform flips the image"
    elif scales.max() / face_scale[0] > MAX_LOCAL_SCALE_RATIO or face_scale[0] / scales.min() > MAX_LOCAL_SCALE_RATIO:
        reason = (f"perspective transform stretches the frame {max(scales.max() / face_scale[0], face_scale[0] / scales.min()):.1f}x "
                  "more at its edge than at the face")
    elif not 1.0 / MAX_SCALE < face_scale[0] < MAX_SCALE:
        reason = f"faces differ in size by {max(face_scale[0], 1 / face_scale[0]):.0f}x"
    if reason:
        return Alignment(similarity(src, dst), "similarity", reason)
    return Alignment(h, "perspective")


def warp_image(image: np.ndarray, matrix: np.ndarray, out_hw: Tuple[int, int],
               border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Warp an (H, W[, C]) image (uint8 or float32) with a (3, 3) source->output homography into
    an array of ``out_hw`` = (height, width); bilinear, edges replicated."""
    h, w = out_hw
    return cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def warp_labels(labels: np.ndarray, matrix: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """Warp (H, W) uint8 class ids, nearest neighbour; outside the source it is 0 (background)."""
    h, w = out_hw
    return cv2.warpPerspective(labels, matrix, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
