"""Images in and out: one loader for every entry point.

Every image inside hairtryon is a numpy array of shape (H, W, 3), dtype uint8, RGB order.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import HairTryOnError, ImageLoadError

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]

# Large but sane: a 100-megapixel photo is accepted, a decompression bomb is not.
Image.MAX_IMAGE_PIXELS = 200_000_000


def _to_8bit(pil: Image.Image) -> Image.Image:
    """High-bit-depth modes (16-bit, 32-bit int, float) scaled to 8-bit 'L'."""
    arr = np.asarray(pil)
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    arr = arr.astype(np.float64)
    if pil.mode.startswith("I;16") or arr.max(initial=0) > 255:
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
        arr = arr / top * 255.0
    elif pil.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


def pil_to_rgb(pil: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB; EXIF orientation applied, alpha composited on white."""
    pil = ImageOps.exif_transpose(pil)
    if pil.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pil = _to_8bit(pil)
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(pil.convert("RGB"), dtype=np.uint8))


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """A numpy image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, uint16, bool or float in [0, 1]
    -> (H, W, 3) uint8 RGB."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ImageLoadError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.round(a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a)


def load_image(image: ImageLike) -> np.ndarray:
    """Load an image from a path, a PIL image or a numpy array.

    Returns (H, W, 3) uint8 RGB. EXIF orientation is applied; grayscale, palette, RGBA
    (composited on white), CMYK and 16-bit images are converted. A file that cannot be
    read raises :class:`ImageLoadError` with a one-sentence message.
    """
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    path = Path(image)
    if not path.exists():
        raise ImageLoadError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"expected an image file but got a folder: {path}")
    try:
        with Image.open(path) as pil:
            pil.load()
            return pil_to_rgb(pil)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot read {path} as an image ({exc.__class__.__name__}: {exc}).") from None


def save_image(image: np.ndarray, path: Union[str, os.PathLike]) -> Path:
    """Write an (H, W, 3), (H, W, 4) or (H, W) uint8 array; the format follows the file extension
    (PNG, JPEG, ...). Parent folders are created. JPEG is written at quality 95.

    The write is atomic: the image goes to a temporary file in the same folder, which then
    replaces ``path`` (``os.replace``), so an interrupted save leaves the old file intact or no
    file, never a partial one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(np.ascontiguousarray(image))
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise HairTryOnError(f"cannot write {path}: unknown image format '{path.suffix}'.")
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format=fmt, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, (KeyError, ValueError)):
            raise HairTryOnError(f"cannot write {path} as {fmt}: {exc}.") from None
        raise
    return path
