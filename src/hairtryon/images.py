"""Images in and out: one loader for every entry point, one safe writer.

Every image inside hairtryon is a numpy array of shape (H, W, 3), dtype uint8, RGB order, in
the orientation the photo is displayed in (EXIF orientation applied). :func:`load_photo` also
keeps what the try-on must give back: the photo's transparency (alpha) and whether it has no
colour at all (grey), in a :class:`Photo`; :meth:`Photo.restore` turns a result back into the
photo's own kind (grey stays grey, transparency stays where it was).

Limits, checked from the file's header before anything is decoded: at most :data:`MAX_PIXELS`
pixels (every loader takes ``max_pixels`` to lower it). Animated and multi-page files give
their first frame, and the photo's ``notes`` say so.

Writing (:func:`save_image`) is atomic; :func:`check_output_path` validates an output path
before any work (format from the extension, folder, writable, never one of the run's inputs).
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import HairTryOnError, ImageLoadError, ImageTooLarge, OutputPathError, describe

# One hard limit: a 200-megapixel photo is accepted, anything larger is refused before decoding
# (a 19000x19000 PNG can be a few hundred KB on disk and 1 GB in memory).
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check, made to refuse (see _open)

# chroma (max channel difference) up to this in every pixel still counts as grey (JPEG rounding)
GREY_TOLERANCE = 3
# formats that keep an alpha channel; the others get transparency flattened onto white
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF", "AVIF", "GIF")
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image, "Photo"]


@dataclass(frozen=True)
class Photo:
    """A loaded photo.

    ``rgb``: (H, W, 3) uint8 RGB in display orientation, transparency composited onto white
    (what every stage works on). ``alpha``: (H, W) uint8 when the photo has an alpha channel,
    else None; ``colour``: then also the (H, W, 3) uint8 colours under that alpha (not
    composited), so untouched pixels are given back exactly. ``grey``: the photo has no colour
    (a grey mode, or every pixel within :data:`GREY_TOLERANCE` of grey). ``name``: how
    messages call it (the file name; "" for arrays). ``frames``: frames or pages in the file
    (the first is used). ``notes``: one-line messages for the person (e.g. that the first frame
    of an animation was used).
    """

    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    grey: bool = False
    name: str = ""
    frames: int = 1
    colour: Optional[np.ndarray] = field(default=None, repr=False)
    notes: Tuple[str, ...] = ()

    @property
    def shape(self) -> tuple:
        return self.rgb.shape

    def restore(self, rgb: np.ndarray, alpha: Optional[np.ndarray] = None) -> np.ndarray:
        """A result of this photo's size back in the photo's own kind.

        ``rgb``: (H, W, 3) uint8, composited onto white like :attr:`rgb`; ``alpha``: (H, W)
        uint8 the result's alpha (for a photo with alpha; default: the photo's own).
        Returns (H, W) uint8 for a grey photo, (H, W, 2) grey+alpha, (H, W, 4) RGBA for a photo
        with alpha (colours taken back off the white; pixels equal to the photo's are the
        photo's own, alpha and colour), otherwise ``rgb`` itself."""
        if self.alpha is None:
            return _grey(rgb) if self.grey else rgb
        alpha = self.alpha if alpha is None else alpha
        a = alpha.astype(np.float32)[..., None] / 255.0
        with np.errstate(divide="ignore", invalid="ignore"):
            col = (rgb.astype(np.float32) - 255.0 * (1.0 - a)) / a
        col = np.where(a > 0, np.clip(np.round(col), 0, 255), 0).astype(np.uint8)
        same = (rgb == self.rgb).all(axis=2) & (alpha == self.alpha)
        col[same] = (self.colour if self.colour is not None else self.rgb)[same]
        if self.grey:
            return np.dstack([_grey(col), alpha])
        return np.dstack([col, alpha])


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 luma (ITU-R 601, as Pillow's 'L'); R=G=B stays as it is."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def grey_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> the same shape, every pixel its grey (R=G=B)."""
    g = _grey(rgb.reshape(-1, 1, 3) if rgb.ndim != 3 else rgb).reshape(rgb.shape[:-1])
    return np.repeat(g[..., None], 3, axis=-1)


def _is_grey(rgb: np.ndarray) -> bool:
    """Whether every pixel of (H, W, 3) uint8 is grey within GREY_TOLERANCE (in row bands:
    a huge photo costs no full-size temporary)."""
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], step):
        band = rgb[y:y + step].astype(np.int16)
        if (np.abs(band[..., 0] - band[..., 1]).max(initial=0) > GREY_TOLERANCE
                or np.abs(band[..., 1] - band[..., 2]).max(initial=0) > GREY_TOLERANCE):
            return False
    return True


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


def _photo_from_pil(pil: Image.Image, name: str = "", frames: int = 1, notes: Tuple[str, ...] = ()) -> Photo:
    """Any PIL image -> :class:`Photo` (EXIF orientation applied; copies kept to a minimum)."""
    pil.load()
    turned = ImageOps.exif_transpose(pil, in_place=False) if pil.getexif().get(0x0112, 1) != 1 else pil
    mode = turned.mode
    grey = mode in _GREY_MODES
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        turned = _to_8bit(turned)
    if mode == "P":
        turned = turned.convert("RGBA" if "transparency" in turned.info else "RGB")
    elif mode == "PA":
        turned = turned.convert("RGBA")
    alpha = colour = None
    if turned.mode in _ALPHA_MODES:
        rgba = np.asarray(turned.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        colour = np.ascontiguousarray(rgba[:, :, :3])
        a = alpha.astype(np.float32)[..., None] / 255.0
        rgb = np.round(colour * a + 255.0 * (1.0 - a)).astype(np.uint8)
        del rgba, a
    elif turned.mode == "RGB":
        rgb = np.array(turned, dtype=np.uint8)
    else:
        rgb = np.asarray(turned.convert("RGB"), dtype=np.uint8).copy()
    rgb = np.ascontiguousarray(rgb)
    grey = grey or _is_grey(colour if colour is not None else rgb)
    return Photo(rgb, alpha, grey, name, frames, colour, notes)


def _photo_from_array(arr: np.ndarray, name: str = "") -> Photo:
    """A numpy image (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4); uint8, uint16, bool or
    float in [0, 1] -> :class:`Photo`."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ImageLoadError(f"{name or 'the image'}: expected an image array of shape (H, W), (H, W, 3) or "
                             f"(H, W, 4), got {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.round(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return Photo(np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2)), None, True, name)
    if a.shape[2] == 2:  # grey + alpha
        a = np.dstack([a[:, :, 0], a[:, :, 0], a[:, :, 0], a[:, :, 1]])
    if a.shape[2] == 4:
        return _photo_from_pil(Image.fromarray(np.ascontiguousarray(a), "RGBA"), name)
    rgb = np.ascontiguousarray(a)
    return Photo(rgb, None, _is_grey(rgb), name)


_OPEN_LOCK = threading.Lock()


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} megapixels"


def _too_large(what: str, w: int, h: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"{what} is {w}x{h} pixels ({_mp(w * h)}), more than the limit of {_mp(limit)}: "
                         "use a smaller copy of it.")


def _open(path: Path, what: str, limit: int) -> Image.Image:
    """Image.open (the header only) with Pillow's decompression-bomb check set to refuse above
    ``limit`` pixels, and our own check of the header's size."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            pil = Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            Image.MAX_IMAGE_PIXELS = None  # the header once more, for the message: its size, not decoded
            try:
                with Image.open(path) as header:
                    w, h = header.size
            except Exception:
                m = re.search(r"\((\d+) pixels\)", str(exc))
                px = int(m.group(1)) if m else limit + 1
                raise ImageTooLarge(f"{what} has {_mp(px)}, more than the limit of {_mp(limit)}: "
                                    "use a smaller copy of it.") from None
            raise _too_large(what, w, h, limit) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = pil.size
    if w * h > limit:
        pil.close()
        raise _too_large(what, w, h, limit)
    return pil


def load_photo(image: ImageLike, role: str = "", max_pixels: Optional[int] = None) -> Photo:
    """Load a photo from a path, a PIL image, a numpy array (see :func:`load_image`) or a
    :class:`Photo` (returned as it is).

    ``role`` ("target", "source" or "") names the photo in messages: "the target photo
    me.jpg". ``max_pixels`` lowers the limit (default :data:`MAX_PIXELS`); the size is checked
    from the file's header, before decoding. Raises :class:`ImageLoadError` (one sentence that
    names the photo) when the file cannot be read, :class:`ImageTooLarge` above the limit."""
    limit = int(max_pixels or MAX_PIXELS)
    if isinstance(image, Photo):
        if image.rgb.shape[0] * image.rgb.shape[1] > limit:
            raise _too_large(describe(image.name, role), image.rgb.shape[1], image.rgb.shape[0], limit)
        return image
    if isinstance(image, (np.ndarray, Image.Image)):
        h, w = (image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1])
        if h * w > limit:
            raise _too_large(describe("", role), w, h, limit)
        if isinstance(image, np.ndarray):
            return _photo_from_array(image)
        return _photo_from_pil(image)
    path = Path(image)
    what = describe(path.name, role)
    if not path.exists():
        raise ImageLoadError(f"{what} was not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"{what} is a folder, not an image file: {path}")
    try:
        with _open(path, what, limit) as pil:
            frames = int(getattr(pil, "n_frames", 1) or 1)
            notes = ()
            if frames > 1 and pil.format != "MPO":  # MPO: a phone photo with its preview images
                kind = "pages" if pil.format in ("TIFF", "PDF") else "frames"
                notes = (f"{what} has {frames} {kind}; the first was used.",)
            return _photo_from_pil(pil, path.name, frames, notes)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
            KeyError, TypeError, ZeroDivisionError, Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageLoadError(f"cannot read {what} as an image ({exc.__class__.__name__}"
                             f"{': ' + detail if detail else ''}).") from None
    except MemoryError:
        raise ImageLoadError(f"{what} is too large to decode in the memory available.") from None


def load_image(image: ImageLike, role: str = "", max_pixels: Optional[int] = None) -> np.ndarray:
    """Load an image from a path, a PIL image or a numpy array.

    Returns (H, W, 3) uint8 RGB. EXIF orientation is applied; grayscale, palette, RGBA
    (composited on white), CMYK and 16-bit images are converted; an animation or a multi-page
    file gives its first frame. Arrays may be (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or
    (H, W, 4); uint8, uint16, bool or float in [0, 1]. A file that cannot be read raises
    :class:`ImageLoadError` with a one-sentence message; see :func:`load_photo`."""
    return load_photo(image, role, max_pixels).rgb


# ------------------------------------------------------------------------------------ writing
def writable_format(path: Union[str, os.PathLike]) -> str:
    """The Pillow format an output file is written in, from its extension ('PNG', 'JPEG', ...).
    Raises :class:`OutputPathError` for a missing or unknown extension, or one Pillow cannot write."""
    path = Path(path)
    if not path.suffix:
        raise OutputPathError(f"cannot write {path}: the file name has no extension (use .png or .jpg).")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputPathError(f"cannot write {path}: unknown image format '{path.suffix}' (use .png or .jpg).")
    return fmt


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.resolve() == b.resolve():
            return True
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return False


def _writable_folder(folder: Path, what: str) -> None:
    """Raise OutputPathError unless ``folder`` (or the nearest existing folder above it, where the
    missing ones will be made) lets us create a file."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot write {what}: {probe} is a file, not a folder.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hairtryon-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or exc.__class__.__name__)
        raise OutputPathError(f"cannot write {what}: the folder {probe} is not writable ({reason}).") from None


def check_output_path(path: Union[str, os.PathLike], inputs: Iterable[Union[str, os.PathLike, None]] = (),
                      folder: bool = False, writes: Optional[str] = None) -> Path:
    """Validate an output path before any work, so that a wrong one fails at once.

    A file (``folder=False``): its format from the extension (:func:`writable_format`), not an
    existing folder, not read-only, its folder writable (or creatable), and never one of
    ``inputs`` (resolved paths and same-file identity compared: other spellings, symlinks and
    hard links count). A folder (``folder=True``): not an existing file, writable or creatable;
    ``writes`` is a regular expression of the file names the run writes there, and no input may
    be one of them. Returns the path; raises :class:`OutputPathError`."""
    path = Path(path)
    ins = [Path(p) for p in inputs if isinstance(p, (str, os.PathLike))]
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"cannot write into {path}: it is a file, not a folder.")
        _writable_folder(path, f"into {path}")
        for p in ins:
            if writes and re.fullmatch(writes, p.name) and _same_file(p.parent, path):
                raise OutputPathError(f"cannot write into {path}: the run writes {p.name} there, which is one of "
                                      "its input photos; choose another folder.")
        return path
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder; give a file name such as {path / 'result.png'}.")
    writable_format(path)
    for p in ins:
        if _same_file(path, p):
            raise OutputPathError(f"cannot write {path}: it is one of the input photos ({p}); "
                                  "choose another output file.")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"cannot write {path}: the file is read-only.")
    _writable_folder(path.parent, str(path))
    return path


def _new_file_mode(path: Path) -> int:
    """Permissions for the written file: those of the file it replaces, else 0o666 less the umask
    (what ``open`` would give; mkstemp's own 0o600 would hide the result from other users)."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def save_image(image: np.ndarray, path: Union[str, os.PathLike]) -> Path:
    """Write an (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA uint8 array;
    the format follows the file extension (PNG, JPEG, ...). Parent folders are created. JPEG is
    written at quality 95, PNG at compression level 3. Formats without transparency (JPEG,
    BMP, ...) get it flattened onto white.

    The write is atomic: the image goes to a temporary file in the same folder, which then
    replaces ``path`` (``os.replace``), so an interrupted save leaves the old file intact or no
    file, never a partial one."""
    path = Path(path)
    fmt = writable_format(path)
    arr = np.ascontiguousarray(image)
    if arr.ndim == 3 and arr.shape[2] in (2, 4) and fmt not in ALPHA_FORMATS:
        a = arr[:, :, -1:].astype(np.float32) / 255.0
        arr = np.round(arr[:, :, :-1] * a + 255.0 * (1.0 - a)).astype(np.uint8)
        arr = arr[:, :, 0] if arr.shape[2] == 1 else arr
    mode = {2: "L", 3: None}.get(arr.ndim)
    if arr.ndim == 3:
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    pil = Image.fromarray(arr, mode) if mode == "LA" else Image.fromarray(arr)
    if fmt == "JPEG" and pil.mode not in ("L", "RGB"):
        pil = pil.convert("RGB")
    # PNG at zlib level 3: a third of level 6's time (the default) for files about 8% larger
    kwargs = {"quality": 95} if fmt == "JPEG" else {"compress_level": 3} if fmt == "PNG" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    mode_bits = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode_bits)
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
        if isinstance(exc, OSError):
            raise OutputPathError(f"cannot write {path} ({exc.strerror or exc.__class__.__name__}).") from None
        raise
    return path


# ------------------------------------------------------------------------------ memory
def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc gives each thread that allocates its own heap ("arena") and returns little of it
    to the system: a server whose requests run in a pool of threads, each allocating and
    freeing photo-sized arrays, grows by hundreds of MB that it no longer uses. Capping the
    arenas (``mallopt(M_ARENA_MAX)``) keeps it bounded. True where it applied (glibc)."""
    libc = _libc()
    return bool(libc and libc.mallopt(-8, int(arenas)))  # -8: M_ARENA_MAX


def release_memory() -> None:
    """Hand freed heap memory back to the system after a request (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
