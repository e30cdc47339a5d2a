"""The catalogue (issue 15): one target, a folder of hairstyles, one labelled grid.

Real photos read in place: the styles folder is a temporary folder of links to
../shared/faces/loho/images with an unreadable file and a photo without a face mixed in.
Cost on 2 idle cores: about 30 s (one catalogue of 13 styles at a 512-px work frame, one of 3
small photos from the CLI).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from hairtryon import catalog
from hairtryon.cli import main
from hairtryon.errors import HairTryOnError
from hairtryon.images import load_image
from hairtryon.metrics import colour_difference
from hairtryon.pipeline import HairTryOn
from hairtryon.segmentation import HAIR


@pytest.fixture(scope="module")
def tool(segmenter):
    # the catalogue's own logic does not depend on the resolution the try-on works at: a small
    # work frame keeps 13 styles cheap (results are still the target's full size)
    return HairTryOn(segmenter, work_size=512)


def link_folder(folder, photos):
    folder.mkdir()
    for p in photos:
        (folder / p.name).symlink_to(p)
    return folder


def no_face(path):
    """Grace Hopper's uniform below her face: a real photo with no face."""
    from hairtryon.cli import demo_photos

    Image.fromarray(demo_photos()["grace_hopper"][380:]).save(path)
    return path


def cell_colour(cat, gallery, index, which, tile=256):
    """The colour at the centre of style ``index``'s photo (0) or result (1) cell."""
    bar, gap = max(18, tile // 10), max(6, tile // 24)
    cols = min(3, len(cat.styles))
    r, c = divmod(index, cols)
    x = c * (2 * tile + gap) + which * tile + tile // 2
    y = (tile + bar) * (r + 1) + gap * (r + 1) + bar + tile // 2
    return gallery[y, x]


def test_catalog_of_a_folder(tool, loho_dir, maskgan_dir, tmp_path, monkeypatch):
    """Every photo of the folder is a style, in name order; the unreadable one is a cell with its
    reason and the rest go on; the target is analysed once; the results are the target's
    size with new hair; nothing is written."""
    photos = sorted((loho_dir / "images").glob("*.jpg"))
    styles = link_folder(tmp_path / "styles", photos)
    (styles / "05000.jpg").write_bytes(b"this is not a photo\n")  # among them, by name
    (styles / "notes.txt").write_text("not a photo: left out\n")
    target = maskgan_dir / "0.jpg"
    calls = []
    find = tool.landmarker.find

    def counted(image, face=0, what="the image"):
        calls.append(hashlib.sha1(np.ascontiguousarray(image)).hexdigest())
        return find(image, face, what)

    monkeypatch.setattr(tool.landmarker, "find", counted)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    cat = tool.catalog(target, styles, refine="none")

    assert [s.name for s in cat.styles] == sorted([p.name for p in photos] + ["05000.jpg"])
    target_sha = hashlib.sha1(load_image(target)).hexdigest()
    # the target analysed once (and once more in the wide frame if a style's hair is bigger than
    # its frame), each style once
    assert 1 <= calls.count(target_sha) <= 2 and len(calls) - calls.count(target_sha) == len(photos), calls
    broken = cat.styles[[s.name for s in cat.styles].index("05000.jpg")]
    assert not broken.ok and "cannot read" in broken.reason and "05000.jpg" in broken.reason and broken.photo is None
    assert len(cat.done) >= 3, [(s.name, s.reason) for s in cat.styles]
    tgt = load_image(target)
    for s in cat.done:
        assert s.image.shape == tgt.shape and s.reason is None
        same = np.all(s.image == tgt, axis=2).mean()
        assert 0.2 < same < 0.98, (s.name, same)  # new hair, the rest the target's own
    for s in cat.failed:  # one sentence each, the checks' declines among them
        assert s.reason and "\n" not in s.reason and "Traceback" not in s.reason, s.reason
    assert set(cat.images) == {s.name for s in cat.done}
    grid = cat.gallery()
    rows = (len(cat.styles) + 2) // 3  # a row for the target, then 3 (photo | result) pairs a row
    assert grid.shape == ((256 + 25) * (rows + 1) + 10 * rows, 3 * (2 * 256 + 10) - 10, 3)
    i = [s.name for s in cat.styles].index("05000.jpg")
    assert tuple(cell_colour(cat, grid, i, 1)) == (250, 235, 235)  # the reason's cell
    j = [s.name for s in cat.styles].index(cat.done[0].name)
    assert tuple(cell_colour(cat, grid, j, 1)) != (250, 235, 235)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "the API wrote files unasked"


def test_catalog_command(tool, ctrlhair_dir, tmp_path, capsys):
    """``hairtryon catalog``: the grid and every result at full resolution, ``--color`` on all of
    them, the reasons for the others printed once at the end, exit 0; exit 2 when none works."""
    target = ctrlhair_dir / "CelebaMask_HQ___19156.png"  # 256² photos: the command's cost is its own
    styles = link_folder(tmp_path / "styles", [ctrlhair_dir / "CelebaMask_HQ___04884.png"])
    (styles / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    no_face(styles / "uniform.png")
    red = ctrlhair_dir / "CelebaMask_HQ___27640.png"
    out, gallery = tmp_path / "results", tmp_path / "gallery.png"
    assert main(["catalog", str(target), str(styles), "-o", str(gallery), "--out-dir", str(out),
                 "--refine", "classic", "--color", str(red)]) == 0
    err = capsys.readouterr().err
    assert err.count("not done: broken.png") == 1 and err.count("not done: uniform.png") == 1, err
    assert "no face" in err and "Traceback" not in err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["CelebaMask_HQ___19156__CelebaMask_HQ___04884.png"], written
    result = load_image(out / written[0])
    assert result.shape == load_image(target).shape
    g = load_image(gallery)
    assert g.shape[1] == 3 * (2 * 256 + 10) - 10 and g.shape[0] > 2 * 256
    # the colour reached the style's result
    t, ref = tool.analyze(target), tool.analyze(red)
    crop = t.frame.extract(result)
    hair = (tool.parse_crop(crop).labels == HAIR) & t.inside
    assert colour_difference(crop, hair, ref.crop, (ref.semantic.labels == HAIR) & ref.inside) <= 6

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"nothing")
    assert main(["catalog", str(target), str(only_bad), "-o", str(tmp_path / "g2.png"), "--refine", "classic"]) == 2
    err = capsys.readouterr().err
    assert "not done: x.jpg" in err and "error: no style could be tried on CelebaMask_HQ___19156.png" in err
    assert main(["catalog", str(target), str(tmp_path / "missing"), "-o", str(tmp_path / "g3.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_style_photos_and_result_names(tmp_path):
    (tmp_path / "b.JPG").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "readme.md").write_text("")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in catalog.style_photos(tmp_path)] == ["a.png", "b.JPG"]
    assert catalog.result_path("out", "me photo.jpg", "bob/cut?.png").name == "me_photo__cut.png"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HairTryOnError, match="holds no photos"):
        catalog.style_photos(empty)
