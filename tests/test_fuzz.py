"""Property-based fuzzing of the loader and of the try-on through the Python API.

Only two outcomes are allowed for any input:
- a :class:`~hairtryon.errors.HairTryOnError` whose message is one line, or
- a valid image (uint8) of the target's displayed size (EXIF orientation applied).

Inputs: random bytes, random small images in random modes, sizes and formats, random EXIF
orientations, and real faces (the two public-domain portraits) so that swaps get past the
landmarks. The budget is bounded and derandomised (the same examples every run): about 2 s for
the loader, about 25 s for the swaps on 2 cores.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from hairtryon.errors import HairTryOnError
from hairtryon.images import load_photo

MODES = ["RGB", "L", "RGBA", "LA", "P", "1", "I;16", "CMYK", "I", "F"]
FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp"}
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _encode(arr: np.ndarray, mode: str, fmt: str, orientation: int, upright: bool = False) -> bytes:
    """An RGB uint8 array as a file of ``fmt`` in ``mode`` (RGB when the format cannot hold
    that mode) with an EXIF orientation."""
    img = Image.fromarray(arr)
    if mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L")).astype(np.uint16) * 257))
    elif mode in ("I", "F"):
        img = img.convert("L").convert(mode)
    elif mode != "RGB":
        img = img.convert(mode)
    if upright:  # stored turned, as cameras do, so that the photo is displayed upright
        inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}.get(orientation)
        img = img.transpose(inverse) if inverse is not None else img
    kw = {}
    if orientation != 1:
        exif = img.getexif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    for candidate in (img, img.convert("RGB")):  # a mode the format cannot hold: saved as RGB
        buf = io.BytesIO()
        try:
            candidate.save(buf, format=fmt, **kw)
            return buf.getvalue()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return b""


def _displayed_hw(data: bytes):
    """The displayed (height, width) of an encoded image, by Pillow's own reading (None when
    Pillow cannot read it)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            o = im.getexif().get(0x0112, 1)
    except Exception:
        return None
    return (w, h) if o in (5, 6, 7, 8) else (h, w)


def _one_line(exc: Exception) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)


@st.composite
def image_files(draw, base=None, damage_rate: int = 2):
    """Bytes of an image file: random pixels (or ``base`` resized), a random mode, format,
    size and EXIF orientation; damaged (truncated or with flipped bytes) in ``damage_rate``
    of 5 cases."""
    if base is None:
        h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
        seed = draw(st.integers(0, 2 ** 16))
        arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        import cv2

        side = draw(st.integers(160, 320))  # faces of about 30 to 60 pixels
        s = side / max(base.shape[:2])
        arr = cv2.resize(base, (max(1, round(base.shape[1] * s)), max(1, round(base.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    mode = draw(st.sampled_from(MODES if base is None else ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16"]))
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    orientation = draw(st.integers(1, 8))
    data = _encode(arr, mode, fmt, orientation, upright=base is not None)
    damage = draw(st.sampled_from(["truncate", "flip"][:damage_rate] + ["none"] * (5 - damage_rate)))
    if data and damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif data and damage == "flip":
        b = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=8)):
            b[i] ^= 0xFF
        data = bytes(b)
    return data, FORMATS[fmt]


@FUZZ
@given(st.one_of(st.binary(max_size=2048).map(lambda b: (b, "png")), image_files()))
def test_loader_has_two_outcomes(tmp_path_factory, case):
    data, ext = case
    path = tmp_path_factory.mktemp("fuzz") / f"photo.{ext}"
    path.write_bytes(data)
    try:
        photo = load_photo(path, "target")
    except HairTryOnError as exc:
        _one_line(exc)
        event("refused")
        return
    event("loaded")
    assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    hw = _displayed_hw(data)
    if hw is not None:
        assert photo.rgb.shape[:2] == hw
    assert photo.alpha is None or photo.alpha.shape == photo.rgb.shape[:2]


@FUZZ
@given(st.one_of(st.integers(1, 64).flatmap(lambda h: st.integers(1, 64).map(lambda w: (h, w))),
                 st.just((0, 5)), st.just((5, 0))),
       st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, bool, np.int32]),
       st.sampled_from([0, 1, 2, 3, 4]))
def test_array_loader_has_two_outcomes(hw, dtype, channels):
    shape = hw if channels == 0 else (*hw, channels)
    arr = np.random.default_rng(0).random(shape) * (255 if dtype in (np.uint8, np.int32) else 1)
    arr = (arr * 257).astype(dtype) if dtype == np.uint16 else arr.astype(dtype)
    try:
        photo = load_photo(arr)
    except HairTryOnError as exc:
        _one_line(exc)
        return
    assert photo.rgb.shape == (*hw, 3) and photo.rgb.dtype == np.uint8


@pytest.fixture(scope="module")
def tool(segmenter):
    from hairtryon.pipeline import HairTryOn

    return HairTryOn(segmenter)


@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_swap_has_two_outcomes(tool, astronaut, grace_hopper, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("swap")
    paths = []
    for role, base in (("target", astronaut), ("source", grace_hopper)):
        if data.draw(st.sampled_from([True, True, True, True, False]), label=f"{role} is a real face"):
            content, ext = data.draw(image_files(base, damage_rate=0), label=role)
        else:
            content, ext = data.draw(image_files(), label=role)
        paths.append(folder / f"{role}.{ext}")
        paths[-1].write_bytes(content)
    try:
        r = tool(paths[0], paths[1], refine="classic")
    except HairTryOnError as exc:
        _one_line(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("a result")
    out = r.output
    assert out.dtype == np.uint8
    assert out.shape[:2] == r.image.shape[:2] == _displayed_hw(paths[0].read_bytes())
