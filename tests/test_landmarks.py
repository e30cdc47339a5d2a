"""The method's 4 points from MediaPipe Face Mesh, on every shared portrait."""
import json

import numpy as np
import pytest
from PIL import Image

from hairtryon.cli import main
from hairtryon.errors import NoFaceFound
from hairtryon.images import load_image

from conftest import all_portraits


def _check_geometry(lm):
    forehead, left, right, chin = lm.points
    eye_y = (left[1] + right[1]) / 2
    assert forehead[1] < eye_y < chin[1], "forehead above the eyes above the chin"
    assert left[0] < right[0], "left eye is the one on the image's left"
    eye_dist = right[0] - left[0]
    assert eye_dist > 0.15 * (chin[1] - forehead[1])


def test_astronaut(astronaut, landmarker):
    lm = landmarker(astronaut)
    _check_geometry(lm)
    x0, y0, x1, y1 = lm.face_box
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # her face, not the flag or the shuttle


def test_every_shared_portrait(landmarker):
    paths = all_portraits()
    if not paths:
        pytest.skip("test portraits not found (../shared/faces or HAIRTRYON_TEST_FACES)")
    for path in paths:
        image = load_image(path)
        lm = landmarker(image)
        _check_geometry(lm)
        assert lm.image_hw == image.shape[:2]


def test_no_face_is_a_clear_error(tmp_path, landmarker, capsys):
    blank = np.full((200, 300, 3), 128, np.uint8)
    with pytest.raises(NoFaceFound, match="no face"):
        landmarker(blank)
    p = tmp_path / "blank.png"
    Image.fromarray(blank).save(p)
    assert main(["landmarks", str(p)]) == 2
    err = capsys.readouterr().err
    assert "no face" in err and "Traceback" not in err


def test_several_faces_largest_first(astronaut, landmarker, capsys, tmp_path):
    from hairtryon.framing import resize

    small = resize(astronaut, (256, 256))
    canvas = np.concatenate([np.pad(small, ((0, 256), (0, 0), (0, 0)), mode="edge"), astronaut], axis=1)
    faces = landmarker.detect_all(canvas)
    assert len(faces) == 2
    assert faces[0].forehead[0] > 256 and faces[1].forehead[0] < 256  # the big one is on the right
    assert np.allclose(landmarker(canvas, 1).points, faces[1].points)
    with pytest.raises(NoFaceFound, match="only 2"):
        landmarker(canvas, 2)
    p = tmp_path / "two.png"
    Image.fromarray(canvas).save(p)
    assert main(["landmarks", str(p), "--face", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["forehead"][0] < 256 and d["image_size"] == [768, 512]


def test_small_face_in_a_wide_shot(astronaut, landmarker):
    canvas = np.pad(astronaut, ((1500, 1000), (1300, 1700), (0, 0)), mode="edge")
    lm = landmarker(canvas)
    ref = landmarker(astronaut)
    assert np.abs(lm.points - (ref.points + [1300, 1500])).max() < 6


def test_head_frame_covers_an_aligned_portrait(maskgan_dir, landmarker):
    image = load_image(next(iter(sorted(maskgan_dir.glob("*.jpg")))))
    frame = landmarker(image).head_frame(512)
    assert 0.9 * 1024 < frame.side < 1.15 * 1024
    assert abs(frame.x0 + frame.side / 2 - 512) < 60
