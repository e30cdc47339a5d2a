import numpy as np
import pytest
from PIL import Image

from hairtryon.cli import main
from hairtryon.errors import ImageLoadError
from hairtryon.images import load_image, save_image


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)  # left half red
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (80, 40, 3)
    # after a clockwise rotation the old left half is on top
    assert out[:40, :, 0].mean() > 200 and out[40:, :, 0].mean() < 60


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_modes_become_8bit_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(600, dtype=np.uint16).reshape(30, 20) * 100))
        ext = "png"
    else:
        img = base.convert(mode)
        ext = "tif" if mode == "CMYK" else "png"
    path = tmp_path / f"x.{ext}"
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (30, 20, 3)
    if mode == "I;16":  # scaled from the 16-bit range, not clipped at 255
        assert out.max() == round(59900 / 65535 * 255) and out.min() == 0


def test_rgba_transparent_is_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    path = tmp_path / "t.png"
    img.save(path)
    assert (load_image(path) == 255).all()


def test_arrays_and_pil_are_accepted():
    gray = np.full((5, 6), 0.5, np.float32)
    assert load_image(gray).shape == (5, 6, 3)
    assert load_image(Image.new("L", (6, 5), 7))[0, 0, 0] == 7
    with pytest.raises(ImageLoadError):
        load_image(np.zeros((5, 6, 7)))


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_unreadable_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(path)


def test_cli_bad_file_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.jpg"
    path.write_text("hello")
    assert main(["landmarks", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "Traceback" not in err
    assert main(["parse", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o.png")]) == 2
    assert "not found" in capsys.readouterr().err


def test_save_roundtrip(tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (12, 9, 3), dtype=np.uint8)
    p = save_image(arr, tmp_path / "sub" / "a.png")
    assert (load_image(p) == arr).all()
