"""The table of inputs (docs/inputs.md): one test per row, each with the outcome the table
promises: a correct result, a warned result, or one clear sentence and exit status 2.

Cost: about 40 s on 2 cores (9 swaps of 512-pixel photos, the rest loaders and early exits).
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairtryon import images
from hairtryon.cli import main
from hairtryon.errors import HairTryOnError, ImageLoadError, ImageTooLarge, NoFaceFound, OutputPathError
from hairtryon.images import check_output_path, load_photo, save_image

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = ROOT.parent / "shared" / "portraits"


@pytest.fixture(scope="module")
def tool(segmenter):
    from hairtryon.pipeline import HairTryOn

    return HairTryOn(segmenter)


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(astronaut).save(d / "target.png")
    # the astronaut mirrored: Grace Hopper wears a cap, which the checks decline as a source
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(d / "source.jpg", quality=95)
    return d


def run(*argv) -> tuple:
    """The CLI in-process: (exit status, stderr)."""
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def swap(target, source, out, *extra):
    return run("swap", target, source, "-o", out, "--refine", "classic", *extra)


def one_clear_error(rc: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("hairtryon: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


# ------------------------------------------------------------------------- formats and modes
@pytest.mark.parametrize("ext,tolerance", [("png", 0), ("jpg", 6), ("webp", 8), ("tif", 0), ("bmp", 0),
                                           ("gif", 40), ("avif", 10)])
def test_row_formats(tmp_path, astronaut, ext, tolerance):
    """JPEG, PNG, WebP, TIFF, BMP, GIF (palette), AVIF: decoded at full size, close to the original."""
    p = tmp_path / f"a.{ext}"
    Image.fromarray(astronaut).save(p)
    photo = load_photo(p, "target")
    assert photo.rgb.shape == astronaut.shape and photo.rgb.dtype == np.uint8 and not photo.grey
    assert np.abs(photo.rgb.astype(int) - astronaut).mean() <= tolerance


def test_row_odd_formats_swap(tmp_path, files, astronaut):
    """A WebP target and an AVIF source go through the whole swap; the output folder is created."""
    t, s = tmp_path / "t.webp", tmp_path / "s.avif"
    Image.fromarray(astronaut).save(t, quality=90)
    Image.open(files / "source.jpg").save(s, quality=90)
    out = tmp_path / "new" / "sub" / "out.png"
    rc, err = swap(t, s, out)
    assert rc == 0, err
    assert Image.open(out).size == (512, 512)


# where a red mark on the stored image's top-left pixel is displayed, per EXIF orientation
ORIENTED = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_row_exif_orientation(tmp_path, orientation):
    """Every EXIF orientation: the photo as displayed (size and corners)."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:8, :8] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    img.save(p, exif=exif)
    rgb = load_photo(p).rgb
    assert rgb.shape[:2] == ((60, 40) if orientation >= 5 else (40, 60))
    h, w = rgb.shape[:2]
    corner = {"tl": rgb[:4, :4], "tr": rgb[:4, w - 4:], "br": rgb[h - 4:, w - 4:], "bl": rgb[h - 4:, :4]}
    assert corner[ORIENTED[orientation]][..., 0].min() > 200
    assert sum(c[..., 0].mean() > 200 for c in corner.values()) == 1


def test_row_exif_rotated_target_swap(tmp_path, files, astronaut):
    """A target stored sideways with EXIF orientation 6: the result has the displayed size."""
    stored = np.ascontiguousarray(np.rot90(astronaut[:, :400], 1))  # displayed = rotate 90° clockwise
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    t = tmp_path / "rotated.jpg"
    img.save(t, exif=exif, quality=95)
    out = tmp_path / "out.png"
    rc, err = swap(t, files / "source.jpg", out)
    assert rc == 0, err
    assert Image.open(out).size == (400, 512)  # displayed width x height


def test_row_cmyk(tmp_path, astronaut):
    for ext in ("jpg", "tif"):
        p = tmp_path / f"c.{ext}"
        Image.fromarray(astronaut).convert("CMYK").save(p)
        photo = load_photo(p)
        assert photo.rgb.shape == astronaut.shape and not photo.grey
        assert np.abs(photo.rgb.astype(int) - astronaut).mean() < 12


def test_row_16_bit(tmp_path, astronaut):
    import cv2

    grey16 = (np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.uint16) * 257)
    p = tmp_path / "g16.png"
    Image.fromarray(grey16).save(p)  # mode I;16
    photo = load_photo(p)
    assert photo.grey and photo.rgb.shape == astronaut.shape
    assert np.abs(photo.rgb[..., 0].astype(int) - grey16 // 257).max() <= 1
    p = tmp_path / "rgb48.png"
    cv2.imwrite(str(p), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    photo = load_photo(p)
    assert not photo.grey and np.abs(photo.rgb.astype(int) - astronaut).max() <= 1


def test_row_palette(tmp_path, astronaut):
    p = tmp_path / "p.png"
    Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE).save(p)
    photo = load_photo(p)
    assert photo.alpha is None and np.abs(photo.rgb.astype(int) - astronaut).mean() < 10
    pal = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    photo = load_photo(tmp_path / "pt.png")
    assert photo.alpha is not None and (photo.alpha == 0).any()


def test_row_one_bit_and_float(tmp_path, astronaut):
    Image.fromarray(astronaut).convert("1").save(tmp_path / "b.png")
    photo = load_photo(tmp_path / "b.png")
    assert photo.grey and set(np.unique(photo.rgb)) <= {0, 255}
    f = Image.fromarray(np.asarray(Image.fromarray(astronaut).convert("L"), np.float32) / 255.0, "F")
    f.save(tmp_path / "f.tif")
    photo = load_photo(tmp_path / "f.tif")
    assert photo.grey and photo.rgb.shape == astronaut.shape


def test_row_arrays_through_the_api(astronaut):
    """numpy arrays: float in [0, 1], bool, uint16, (H, W, 2) grey+alpha, (H, W, 4) RGBA."""
    assert load_photo(astronaut.astype(np.float32) / 255).rgb.shape == astronaut.shape
    assert load_photo(np.ones((20, 30), bool)).grey
    assert load_photo(astronaut.astype(np.uint16) * 257).rgb.max() == astronaut.max()
    la = load_photo(np.dstack([astronaut[..., 0], np.full(astronaut.shape[:2], 128, np.uint8)]))
    assert la.grey and la.alpha is not None and la.alpha.max() == 128
    rgba = load_photo(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]))
    assert (rgba.rgb == astronaut).all() and (rgba.alpha == 255).all()
    with pytest.raises(ImageLoadError, match="expected an image array"):
        load_photo(np.zeros((5, 6, 7)))


# ----------------------------------------------------------------------------- grey and alpha
def test_row_grey_target_gives_a_grey_result(tmp_path, files, astronaut):
    grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    t = tmp_path / "grey.png"
    Image.fromarray(grey).save(t)
    out = tmp_path / "out.png"
    rc, err = swap(t, files / "source.jpg", out)
    assert rc == 0, err
    res = Image.open(out)
    assert res.mode == "L" and res.size == (512, 512)
    r = np.asarray(res)
    changed = r != grey
    assert 0.01 < changed.mean() < 0.5  # the hair changed, the rest is the target's own, bit for bit
    out_jpg = tmp_path / "out.jpg"
    assert swap(t, files / "source.jpg", out_jpg)[0] == 0 and Image.open(out_jpg).mode == "L"


def test_row_grey_source_on_a_colour_target(tool, astronaut):
    grey_source = np.asarray(Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).convert("L"))
    r = tool(astronaut, grey_source, refine="classic")
    assert r.output.shape == astronaut.shape and not r.meta["warnings"]
    f = r.target.frame
    rows, cols, brows, bcols = f.roi()
    hair = f.to_image_box(r.masks["hair_alpha"])[brows, bcols] > 0.95
    px = r.image[rows, cols][hair].astype(int)
    assert hair.sum() > 500 and np.abs(px - px.mean(axis=1, keepdims=True)).max(axis=1).mean() < 6  # grey hair


@pytest.fixture(scope="module")
def rgba_target(files, astronaut, segmenter):
    """The astronaut cut out: her background transparent (the parser's background class)."""
    from hairtryon.segmentation import BACKGROUND, parse

    labels = parse(astronaut, segmenter).labels
    alpha = np.where(labels == BACKGROUND, 0, 255).astype(np.uint8)
    alpha[300:] = 255  # the parser's crop ends at the shoulders: opaque below
    colour = astronaut.copy()
    colour[alpha == 0] = (10, 200, 30)  # what hides under the transparency must come back unchanged
    p = files / "cutout.png"
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(p)
    return p, colour, alpha


def test_row_rgba_target_keeps_its_transparency(tmp_path, maskgan_dir, tool, rgba_target):
    p, colour, alpha = rgba_target
    # long hair, over the transparent background (cut off by that photo's edges: tried anyway)
    r = tool(p, maskgan_dir / "2.jpg", refine="classic", force=True)
    out = r.output
    assert out.shape == (512, 512, 4)
    f = r.target.frame
    rows, cols, brows, bcols = f.roi()
    matte = np.zeros(alpha.shape, np.float32)
    matte[rows, cols] = f.to_image_box(r.masks["hair_alpha"])[brows, bcols]
    paste = np.zeros(alpha.shape, np.float32)
    paste[rows, cols] = f.to_image_box(r.masks["paste_alpha"])[brows, bcols]
    untouched = paste == 0
    assert untouched.mean() > 0.5
    assert (out[untouched, 3] == alpha[untouched]).all() and (out[untouched, :3] == colour[untouched]).all()
    new_hair_on_air = (matte > 0.98) & (alpha == 0)
    assert new_hair_on_air.sum() > 200 and out[new_hair_on_air, 3].min() >= 240  # hair: its matte's alpha
    removed = np.zeros(alpha.shape, bool)
    removed[rows, cols] = f.to_image_box(r.masks["removed"].astype(np.uint8))[brows, bcols] > 0
    soft = (matte > 0.25) & (matte < 0.75) & (alpha == 0) & ~removed  # the matte's soft rim over air
    assert soft.sum() > 50
    # the rim's alpha is the matte as the paste-back lays it (the same weight its colours get)
    assert np.median(np.abs(out[soft, 3] / 255.0 - matte[soft] * paste[soft])) < 0.03
    assert (out[soft, 3] > 0).all()
    saved = save_image(out, tmp_path / "cut_out.png")
    assert Image.open(saved).mode == "RGBA"


def test_row_rgba_target_to_jpeg_is_flattened_with_a_warning(tmp_path, files, rgba_target):
    p, _, _ = rgba_target
    out = tmp_path / "flat.jpg"
    rc, err = swap(p, files / "source.jpg", out)
    assert rc == 0 and "cannot hold transparency" in err and err.count("hairtryon: warning:") == 1, err
    assert Image.open(out).mode == "RGB"


def test_row_grey_with_alpha(tool, files, astronaut):
    g = np.asarray(Image.fromarray(astronaut).convert("L"))
    la = np.dstack([g, np.full(g.shape, 255, np.uint8)])
    la[:40, :, 1] = 0
    r = tool(la, files / "source.jpg", refine="classic")
    out = r.output
    assert out.shape == (512, 512, 2)
    assert (out[40:, :, 1] == 255).mean() > 0.95 and (out[:40, :, 1] < 255).any()  # its transparency kept
    changed = out[..., 0] != g
    assert changed.mean() > 0.01 and (out[..., 0][~changed] == g[~changed]).all()
    assert Image.fromarray(out, "LA").mode == "LA"


# --------------------------------------------------------------------- frames, pages, faces
def test_row_animated_gif_first_frame_with_a_warning(tmp_path, files, astronaut):
    frames = [Image.fromarray(astronaut)] + [Image.fromarray(np.full_like(astronaut, v)) for v in (0, 255)]
    t = tmp_path / "anim.gif"
    frames[0].save(t, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = tmp_path / "out.png"
    rc, err = swap(t, files / "source.jpg", out)
    assert rc == 0, err
    assert "anim.gif has 3 frames; the first was used" in err and err.count("hairtryon: warning:") == 1


@pytest.mark.parametrize("fmt,ext,word", [("PNG", "png", "frames"), ("WEBP", "webp", "frames"),
                                          ("TIFF", "tif", "pages")])
def test_row_multi_frame_files_say_so(tmp_path, astronaut, fmt, ext, word):
    frames = [Image.fromarray(astronaut), Image.fromarray(astronaut[::-1].copy())]
    p = tmp_path / f"multi.{ext}"
    frames[0].save(p, format=fmt, save_all=True, append_images=frames[1:])
    photo = load_photo(p, "target")
    assert photo.frames == 2 and np.abs(photo.rgb.astype(int) - astronaut).mean() < 10
    assert photo.notes == (f"the target photo multi.{ext} has 2 {word}; the first was used.",)


@pytest.fixture(scope="module")
def two_faces(files, astronaut):
    from hairtryon.framing import resize

    small = resize(astronaut, (256, 256))
    canvas = np.concatenate([np.pad(small, ((0, 256), (0, 0), (0, 0)), mode="edge"), astronaut], axis=1)
    p = files / "two.png"
    Image.fromarray(canvas).save(p)
    return p


def test_row_several_faces_warned(tmp_path, files, two_faces):
    rc, err = swap(two_faces, files / "source.jpg", tmp_path / "out.png")
    assert rc == 0, err
    assert ("the target photo two.png shows 2 faces; face 0 (the largest) was used: choose another with "
            "--target-face N (0 to 1, largest first).") in err


def test_row_face_index_beyond_the_count(tmp_path, files, two_faces):
    rc, err = swap(files / "source.jpg", two_faces, tmp_path / "out.png", "--source-face", "2")
    one_clear_error(rc, err, "face 2 of the source photo two.png", "only 2 face(s)")


def test_row_no_face_names_the_photo_and_its_role(tmp_path, files):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(blank)
    rc, err = swap(files / "target.png", blank, tmp_path / "out.png")
    one_clear_error(rc, err, "no face was found in the source photo blank.png", "20 pixels")
    rc, err = swap(blank, files / "source.jpg", tmp_path / "out.png")
    one_clear_error(rc, err, "the target photo blank.png")


def test_row_face_below_the_minimum_size(tmp_path, files, astronaut, landmarker):
    import cv2

    from hairtryon.landmarks import MIN_FACE_PX

    width = landmarker(astronaut).face_box[2] - landmarker(astronaut).face_box[0]
    s = 12 / width  # a face 12 pixels wide
    tiny = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    canvas = np.full((200, 200, 3), 120, np.uint8)
    canvas[20:20 + tiny.shape[0], 30:30 + tiny.shape[1]] = tiny
    p = tmp_path / "far.png"
    Image.fromarray(canvas).save(p)
    rc, err = swap(p, files / "source.jpg", tmp_path / "out.png")
    one_clear_error(rc, err, "the target photo far.png", f"at least {MIN_FACE_PX} pixels wide")
    s = 40 / width  # 40 pixels wide: found
    small = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    assert landmarker.detect_all(small)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (19, 19)])
def test_row_tiny_images(tmp_path, files, size):
    p = tmp_path / "tiny.png"
    Image.new("RGB", size, (200, 150, 120)).save(p)
    rc, err = swap(p, files / "source.jpg", tmp_path / "out.png")
    one_clear_error(rc, err, f"the target photo tiny.png is only {size[0]}x{size[1]} pixels")
    rc, err = swap(files / "target.png", p, tmp_path / "out.png")
    one_clear_error(rc, err, "the source photo tiny.png")


@pytest.mark.parametrize("name,sign", [("lulumuts_bantu-knots.jpg", 1), ("lulumuts_box-braids.jpg", 1),
                                       ("lulumuts_wash-and-go.jpg", -1)])
def test_row_turned_faces_in_large_photos(landmarker, name, sign):
    """Three-quarter views and near-profiles in 3400-6240 pixel photos are found; their yaw
    is measured (the try-on's checks decide whether a head is turned too far)."""
    p = PORTRAITS / name
    if not p.is_file():
        pytest.skip(f"{p} not found (../shared/portraits)")
    image = load_photo(p).rgb
    faces = landmarker.detect_all(image)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].face_box
    assert x1 - x0 > 0.12 * image.shape[1]  # the person's face, not a speck
    assert sign * faces[0].yaw_degrees > 40
    flipped = landmarker.detect_all(np.ascontiguousarray(image[:, ::-1]))
    assert flipped and -sign * flipped[0].yaw_degrees > 40  # the mirror image turns the other way


def test_yaw_of_a_frontal_face(landmarker, astronaut):
    lm = landmarker(astronaut)
    assert abs(lm.yaw_degrees) < 15 and "yaw_degrees" in lm.to_dict()


def test_row_sideways_photo_without_exif(landmarker, astronaut):
    """A photo stored sideways without an EXIF orientation: the face is still found."""
    turned = np.ascontiguousarray(np.rot90(astronaut, 1))
    faces = landmarker.detect_all(turned)
    assert faces
    ref = landmarker(astronaut)
    # the forehead of the turned photo is where the upright forehead goes under the rotation
    fx, fy = ref.forehead
    assert np.hypot(faces[0].forehead[0] - fy, faces[0].forehead[1] - (astronaut.shape[1] - fx)) < 25


# ------------------------------------------------------------------------------------ limits
def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that claims w x h grey pixels (a decompression bomb needs no more than its header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (w + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_row_pixel_limit_refused_before_decoding(tmp_path, files):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 19000, 19000)  # 361 megapixels in a few hundred bytes
    t = time.perf_counter()
    rc, err = swap(bomb, files / "source.jpg", tmp_path / "out.png")
    one_clear_error(rc, err, "the target photo bomb.png", "361 megapixels", "limit of 200 megapixels")
    assert time.perf_counter() - t < 1.0
    with pytest.raises(ImageTooLarge):
        load_photo(bomb)


def test_row_pixel_limit_lowered_by_the_api(segmenter, files):
    from hairtryon.pipeline import HairTryOn

    tool = HairTryOn(segmenter, max_pixels=100_000)
    with pytest.raises(ImageTooLarge, match=r"512x512 pixels \(0.262 megapixels\), more than the limit of 0.1 megapixels"):
        tool(files / "target.png", files / "source.jpg", refine="classic")
    with pytest.raises(ImageTooLarge, match="the source photo"):
        load_photo(np.zeros((400, 400, 3), np.uint8), "source", max_pixels=100_000)


# ----------------------------------------------------------------------------- broken inputs
def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("kind", ["empty", "text", "random", "truncated_jpeg", "truncated_png", "svg", "heic", "pdf"])
def test_row_unreadable_files(tmp_path, files, astronaut, kind):
    buf = io.BytesIO()
    content = {
        "empty": b"",
        "text": b"hello, this is not a photo\n",
        "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200,
    }.get(kind)
    if kind == "truncated_jpeg":
        Image.fromarray(astronaut).save(buf, "JPEG")
        content = _truncated(buf.getvalue())
    elif kind == "truncated_png":
        Image.fromarray(astronaut).save(buf, "PNG")
        content = _truncated(buf.getvalue())
    elif kind == "pdf":
        Image.fromarray(astronaut).save(buf, "PDF")
        content = buf.getvalue()
    p = tmp_path / f"bad.{ {'truncated_jpeg': 'jpg', 'truncated_png': 'png', 'svg': 'svg', 'heic': 'heic', 'pdf': 'pdf'}.get(kind, 'jpg') }"
    p.write_bytes(content)
    rc, err = swap(files / "target.png", p, tmp_path / "out.png")
    one_clear_error(rc, err, f"cannot read the source photo {p.name} as an image")
    assert not (tmp_path / "out.png").exists()


def test_row_missing_file_and_folder_as_input(tmp_path, files):
    rc, err = swap(tmp_path / "nope.jpg", files / "source.jpg", tmp_path / "out.png")
    one_clear_error(rc, err, "the target photo nope.jpg was not found")
    rc, err = swap(files / "target.png", tmp_path, tmp_path / "out.png")
    one_clear_error(rc, err, "is a folder, not an image file")


# ------------------------------------------------------------------------------ output paths
@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if a model would load: output errors must come before any."""
    from hairtryon import pipeline

    def refuse(*a, **kw):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(pipeline.HairTryOn, "__init__", refuse)


@pytest.mark.parametrize("name,words", [("out.xyz", "unknown image format '.xyz'"), ("out", "has no extension")])
def test_row_output_format_from_the_extension(tmp_path, files, no_models, name, words):
    t = time.perf_counter()
    rc, err = swap(files / "target.png", files / "source.jpg", tmp_path / name)
    one_clear_error(rc, err, words)
    assert time.perf_counter() - t < 1.0


def test_row_output_is_a_folder(tmp_path, files, no_models):
    rc, err = swap(files / "target.png", files / "source.jpg", tmp_path)
    one_clear_error(rc, err, "is a folder")


def test_row_output_is_the_target_or_the_source(tmp_path, files, no_models):
    import hashlib

    t = tmp_path / "me.png"
    shutil.copy(files / "target.png", t)
    s = tmp_path / "style.jpg"
    shutil.copy(files / "source.jpg", s)
    before = hashlib.sha256(t.read_bytes()).hexdigest(), t.stat().st_mtime_ns
    (tmp_path / "link.png").symlink_to(t)
    os.link(t, tmp_path / "hard.png")
    for out in (t, tmp_path / "sub" / ".." / "me.png", tmp_path / "link.png", tmp_path / "hard.png"):
        rc, err = swap(t, s, out)
        one_clear_error(rc, err, "is one of the input photos")
    rc, err = swap(t, s, s)
    one_clear_error(rc, err, "is one of the input photos")
    assert (hashlib.sha256(t.read_bytes()).hexdigest(), t.stat().st_mtime_ns) == before


def test_row_output_equal_to_target_in_a_subprocess(tmp_path, files):
    """`hairtryon swap T S -o T` as a person runs it: exit 2, the target unchanged."""
    t = tmp_path / "me.png"
    shutil.copy(files / "target.png", t)
    before = t.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-m", "hairtryon", "swap", str(t), str(files / "source.jpg"), "-o", str(t)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "is one of the input photos" in p.stderr and "Traceback" not in p.stderr
    assert t.read_bytes() == before


def test_row_stage_folder_checks(tmp_path, files, no_models):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc, err = swap(files / "target.png", files / "source.jpg", tmp_path / "o.png", "--save-stages", a_file)
    one_clear_error(rc, err, "it is a file, not a folder")
    stages = tmp_path / "stages"
    stages.mkdir()
    shutil.copy(files / "target.png", stages / "01_target.png")
    rc, err = swap(stages / "01_target.png", files / "source.jpg", tmp_path / "o.png", "--save-stages", stages)
    one_clear_error(rc, err, "the run writes 01_target.png there")


def test_row_demo_folder_is_a_file(tmp_path, no_models):
    f = tmp_path / "demo"
    f.write_text("x")
    rc, err = run("demo", "-o", f)
    one_clear_error(rc, err, "it is a file, not a folder")


def _without_root_powers(code: str):
    """Run python ``code`` so that file permissions apply (root ignores them: drop its
    CAP_DAC_OVERRIDE with setpriv)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(prefix + [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_row_output_not_writable(tmp_path, files):
    locked = tmp_path / "locked"
    locked.mkdir()
    ro = tmp_path / "ro.png"
    shutil.copy(files / "target.png", ro)
    os.chmod(ro, 0o444)
    os.chmod(locked, 0o555)
    try:
        for out, words in ((locked / "out.png", "is not writable (permission denied)"),
                           (ro, "the file is read-only")):
            code = ("import sys; from hairtryon.cli import main; sys.exit(main(['swap', "
                    f"{str(files / 'target.png')!r}, {str(files / 'source.jpg')!r}, '-o', {str(out)!r}]))")
            p = _without_root_powers(code)
            assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert not (locked / "out.png").exists()
    finally:
        os.chmod(locked, 0o755)


def test_check_output_path_accepts_new_folders(tmp_path):
    assert check_output_path(tmp_path / "a" / "b" / "c.jpg") == tmp_path / "a" / "b" / "c.jpg"
    assert not (tmp_path / "a").exists()  # checked, not created
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("x")
        check_output_path(tmp_path / "f" / "c.jpg")


# ---------------------------------------------------------------------------- interrupted save
WRITER = """
import sys, numpy as np
from hairtryon.images import save_image
big = np.random.default_rng(0).integers(0, 256, (7000, 7000, 3), dtype=np.uint8)  # slow to encode as PNG
print("writing", flush=True)
save_image(big, sys.argv[1])
print("done", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_row_interrupted_save_keeps_the_old_file(tmp_path, astronaut, sig):
    import signal

    out = tmp_path / "result.png"
    save_image(astronaut, out)
    before = out.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    # SIGINT back to its default in the child: a shell starts background jobs with it ignored,
    # and Python then never turns it into KeyboardInterrupt
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert p.stdout.readline().strip() == "writing"
        deadline = time.time() + 30
        while not list(tmp_path.glob(".result.png.*.part")) and time.time() < deadline:
            time.sleep(0.01)
        parts = list(tmp_path.glob(".result.png.*.part"))
        assert parts, "the write had not started"
        time.sleep(0.3)
        assert p.poll() is None, "the write ended before the signal"
        p.send_signal(getattr(signal, sig))
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    if out.read_bytes() != before:
        # the signal came once every byte was written (during the fsync, which Python does not
        # interrupt) and was handled after the rename: then the new file is whole
        assert sig == "SIGINT" and p.returncode != 0
        with Image.open(out) as im:
            im.load()  # raises on a truncated file
            assert im.size == (7000, 7000)
    else:  # the old file, intact
        assert (np.asarray(Image.open(out)) == astronaut).all()
    if sig == "SIGINT":
        assert not list(tmp_path.glob("*.part")), "the temporary file is removed on Ctrl-C"


def test_saved_file_permissions_are_ordinary(tmp_path, astronaut):
    old = os.umask(0o022)
    try:
        p = save_image(astronaut, tmp_path / "x.png")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------- messages and bars
def test_row_errors_and_warnings_on_their_own_line_after_the_bar(tmp_path, files):
    """On a terminal the progress bar is drawn and cleared; each message starts its own line."""
    import pty

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(blank)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HAIRTRYON_OFFLINE="1", COLUMNS="80")
    for source, want in ((blank, "hairtryon: error: no face was found in the source photo blank.png"),
                         (files / "source.jpg", "hairtryon: warning: SDEdit refinement skipped")):
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "hairtryon", "swap", str(files / "target.png"), str(source),
                              "-o", str(tmp_path / "o.png")], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        p.wait(timeout=120)
        os.close(master)
        text = b"".join(chunks).decode(errors="replace")
        shown = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]  # what a terminal shows
        assert any(line.startswith(want) for line in shown), text
        assert all(line.startswith("hairtryon: ") or not line.strip() for line in shown), text


# ------------------------------------------------------------------------------------ memory
MEMORY = """
import resource, sys, numpy as np, cv2
from skimage import data
from hairtryon.images import save_image
from hairtryon.images import limit_malloc_arenas
from hairtryon.pipeline import HairTryOn
limit_malloc_arenas()  # as the CLI does
n = int(sys.argv[2])
tool = HairTryOn()
a = data.astronaut()
tool(a, a[:, ::-1].copy(), refine="classic")  # models loaded and warm
cv2.imwrite(sys.argv[1], cv2.resize(a, (n, n))[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
before = int(open("/proc/self/statm").read().split()[1]) * 4096
try:  # the peak from here on: the warm-up's own (a first ONNX export, say) is not this photo's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
r = tool(sys.argv[1], a, refine="classic")
save_image(r.output, sys.argv[1] + ".out.jpg")
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak = int(hwm[0].split()[1]) * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(before, peak, r.output.shape[0], r.output.shape[1])
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_row_very_large_photo_memory(tmp_path):
    """A 6000x6000 photo costs at most 5 copies of itself plus 400 MB beyond the loaded models
    (measured 0.82-0.84 GB: the loaded photo, the paste-back's output, the hair's finish in bands,
    the JPEG writer's copy; a full-resolution float stage, as the hair's finish once was, costs
    1.8 GB here). The 12000x12000 peak is measured by benchmarks/bench_memory.py."""
    n = 6000
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / "big.jpg"), str(n)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    before, peak, h, w = map(int, p.stdout.split()[-4:])
    assert (h, w) == (n, n)
    assert peak - before < 5 * n * n * 3 + 400e6, (before / 1e6, peak / 1e6)


def test_cached_analysis_keeps_each_photos_own_kind(tool, files, astronaut):
    """The same pixels as an opaque RGB photo and as an RGBA one: the analysis is shared, the
    result's kind is each photo's own."""
    rgb = tool(astronaut, files / "source.jpg", refine="none")
    rgba = tool(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]), files / "source.jpg",
                refine="none")
    assert rgb.output.shape == (512, 512, 3) and rgba.output.shape == (512, 512, 4)
    assert (rgba.output[..., :3] == rgb.output).all()
