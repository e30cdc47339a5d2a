"""The work frame: a square, face-centred region of a photo (it may reach beyond the photo's
edges) and the resolution it is worked at. Every stage of the try-on runs inside the target's
frame; the result is pasted back into the photo at its own resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """Square box ``[x0, x0+side) x [y0, y0+side)`` in integer image pixels, worked at ``size``².

    ``image_hw`` is the (height, width) of the photo the box belongs to.
    """

    x0: int
    y0: int
    side: int
    size: int
    image_hw: Tuple[int, int]

    @staticmethod
    def around(center_xy, side: float, size: int, image_hw: Tuple[int, int]) -> "Frame":
        """A frame of ``side`` pixels centred on ``center_xy`` (x, y), worked at ``size``."""
        side_i = max(8, int(round(side)))
        x0 = int(round(center_xy[0] - side_i / 2.0))
        y0 = int(round(center_xy[1] - side_i / 2.0))
        return Frame(x0, y0, side_i, int(size), (int(image_hw[0]), int(image_hw[1])))

    @staticmethod
    def whole(image_hw: Tuple[int, int], size: int) -> "Frame":
        """The smallest square frame holding the whole image, centred on it."""
        h, w = image_hw
        return Frame.around((w / 2.0, h / 2.0), max(h, w), size, image_hw)

    def with_size(self, size: int) -> "Frame":
        return Frame(self.x0, self.y0, self.side, int(size), self.image_hw)

    @property
    def scale(self) -> float:
        """Frame pixels per image pixel."""
        return self.size / self.side

    def matrix(self) -> np.ndarray:
        """3x3 float64 affine map from image coordinates to frame coordinates (pixel centres)."""
        s = self.scale
        # pixel-centre convention: image x -> (x + 0.5) * s - 0.5 relative to the box origin
        return np.array([[s, 0.0, (0.5 - self.x0) * s - 0.5],
                         [0.0, s, (0.5 - self.y0) * s - 0.5],
                         [0.0, 0.0, 1.0]])

    def to_frame_points(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) image (x, y) -> (N, 2) frame (x, y)."""
        m = self.matrix()
        return np.asarray(pts, np.float64) @ m[:2, :2].T + m[:2, 2]

    def roi(self) -> Tuple[slice, slice, slice, slice]:
        """(image rows, image cols, box rows, box cols): the part of the box inside the image,
        as slices into the image and into a (side, side) array."""
        h, w = self.image_hw
        ix0, iy0 = max(self.x0, 0), max(self.y0, 0)
        ix1, iy1 = min(self.x0 + self.side, w), min(self.y0 + self.side, h)
        if ix1 <= ix0 or iy1 <= iy0:
            raise ValueError("frame lies outside the image")
        return (slice(iy0, iy1), slice(ix0, ix1),
                slice(iy0 - self.y0, iy1 - self.y0), slice(ix0 - self.x0, ix1 - self.x0))

    def inside(self) -> np.ndarray:
        """(size, size) bool: the frame's pixels that lie inside the photo (the rest is padding),
        as :meth:`extract` of an all-ones mask with nearest sampling would give. Separable: one
        row and one column are resampled, not a photo-sized mask."""
        def axis(n: int, start: int) -> np.ndarray:
            line = np.zeros((self.side, 1), np.uint8)
            line[max(0, -start): max(0, min(self.side, n - start))] = 1
            if self.size != self.side:
                line = cv2.resize(line, (1, self.size), interpolation=cv2.INTER_NEAREST).reshape(self.size, 1)
            return line[:, 0].astype(bool)

        h, w = self.image_hw
        return axis(h, self.y0)[:, None] & axis(w, self.x0)[None, :]

    def extract(self, image: np.ndarray, interpolation: int = -1,
                border: int = cv2.BORDER_REPLICATE, border_value=0) -> np.ndarray:
        """The box's pixels of ``image`` (H, W[, C]) resized to (size, size[, C]).

        Parts of the box outside the image are filled by ``border`` (edge replication by
        default). Downscaling uses area averaging, upscaling bilinear, unless
        ``interpolation`` is given (use ``cv2.INTER_NEAREST`` for labels)."""
        rows, cols, brows, bcols = self.roi()
        h, w = self.image_hw
        pad = (max(0, -self.y0), max(0, self.y0 + self.side - h), max(0, -self.x0), max(0, self.x0 + self.side - w))
        box = image[rows, cols]
        if any(pad):
            if border == cv2.BORDER_CONSTANT:
                box = cv2.copyMakeBorder(box, *pad, border, value=border_value)
            else:
                box = cv2.copyMakeBorder(box, *pad, border)
        if box.shape[0] == self.size:
            return np.ascontiguousarray(box)
        if interpolation < 0:
            interpolation = cv2.INTER_AREA if self.size < self.side else cv2.INTER_LINEAR
        return resize(box, (self.size, self.size), interpolation)

    def to_image_box(self, arr: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """A (size, size[, C]) frame array resized to the box's (side, side[, C]) image pixels."""
        if arr.shape[0] == self.side:
            return arr
        return resize(arr, (self.side, self.side), interpolation)


def resize(arr: np.ndarray, hw: Tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """cv2.resize for (H, W), (H, W, C) with any C, bool and float arrays; ``hw`` is (height, width)."""
    h, w = int(hw[0]), int(hw[1])
    a = np.asarray(arr)
    if a.dtype == bool:
        return resize(a.astype(np.uint8), (h, w), cv2.INTER_NEAREST).astype(bool)
    if a.ndim == 3 and a.shape[2] > 4:
        return np.stack([cv2.resize(a[:, :, i], (w, h), interpolation=interpolation) for i in range(a.shape[2])], axis=2)
    out = cv2.resize(a, (w, h), interpolation=interpolation)
    if a.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, and the smooth cubic 3x² - 2x³ between (a ramp without kinks)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def disk(radius: float) -> np.ndarray:
    """Elliptic structuring element of the given radius (at least 1) for OpenCV morphology."""
    r = max(int(round(radius)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) bool ``mask`` grown by a disk of ``radius`` pixels (a dilation; through a distance
    transform, so its cost does not grow with the radius). Negative radii shrink it."""
    m = np.asarray(mask, bool)
    if radius == 0:
        return m.copy()
    if radius < 0:
        return ~grow(~m, -radius)
    if not m.any():
        return m.copy()
    return cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3) <= radius


def parts_in_boxes(mask: np.ndarray, margin: int):
    """Each 8-connected part of ``mask`` ((H, W) bool) with a box around it ``margin`` pixels
    wider on every side (clipped to the image), for work that looks at a part and its
    surroundings only. Yields (part (H, W) bool, box (rows, cols) slices, the part inside the
    box)."""
    n, labels = cv2.connectedComponents(np.asarray(mask, np.uint8), connectivity=8)
    h, w = labels.shape
    for i in range(1, n):
        part = labels == i
        ys, xs = np.nonzero(part)
        box = (slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
               slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)))
        yield part, box, part[box]
