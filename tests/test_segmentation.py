"""The face parser: architecture, class mapping, and quality on labelled real portraits."""
import numpy as np
import pytest
import torch
from PIL import Image

from hairtryon import weights
from hairtryon.framing import resize
from hairtryon.images import load_image
from hairtryon.segmentation import (BISENET_PARTS, BISENET_TO_5, CELEBAMASK_PARTS, CELEBAMASK_TO_5, EARS, FACE,
                                    HAIR, NECK, BACKGROUND, SemanticMap, parse)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_checkpoint_loads_strictly_and_construction_downloads_nothing(monkeypatch):
    from hairtryon.models.bisenet import BiSeNet

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("download attempted"))
    net = BiSeNet(19)
    state = torch.load(weights.ensure("bisenet"), map_location="cpu", weights_only=True)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_part_orders_map_to_the_same_classes():
    assert sorted(BISENET_PARTS) == sorted(CELEBAMASK_PARTS)
    for name in CELEBAMASK_PARTS:
        assert BISENET_TO_5[BISENET_PARTS.index(name)] == CELEBAMASK_TO_5[CELEBAMASK_PARTS.index(name)]
    c = dict(zip(CELEBAMASK_PARTS, CELEBAMASK_TO_5))
    assert c["hat"] == HAIR and c["hair"] == HAIR and c["eye_g"] == FACE and c["ear_r"] == EARS
    assert c["cloth"] == NECK and c["neck_l"] == NECK and c["background"] == BACKGROUND


def test_astronaut_is_parsed_sensibly(astronaut, segmenter):
    sm = parse(astronaut, segmenter)
    assert sm.labels.shape == astronaut.shape[:2] and sm.probs.shape == (5, 512, 512)
    np.testing.assert_allclose(sm.probs.sum(0), 1.0, atol=1e-4)
    face, hair = sm.mask(FACE), sm.mask(HAIR)
    assert 4000 < face.sum() < 20000 and hair.sum() > 3000
    fy, hy = np.nonzero(face)[0].mean(), np.nonzero(hair)[0].mean()
    assert hy < fy  # her bob sits above her face
    # far from the face it is all background (the flag, the shuttle)
    assert (sm.labels[:, 400:] == BACKGROUND).mean() > 0.95
    assert sm.colorize().shape == (512, 512, 3)


def _maskgan_pairs(d):
    for img in sorted(d.glob("*.jpg")):
        yield load_image(img), CELEBAMASK_TO_5[np.array(Image.open(img.with_suffix(".png")))]


def _loho_pairs(d):
    for img in sorted((d / "images").glob("*.jpg")):
        m = np.array(Image.open(d / "masks" / (img.stem + ".png")).convert("RGB")).astype(int)
        hair = (m[..., 0] > 127) & (m[..., 2] < 128)
        face = (m[..., 2] > 127) & (m[..., 0] < 128)
        yield img.stem, load_image(img), hair, face


def test_quality_on_maskgan(maskgan_dir, segmenter):
    hair_iou, face_iou = [], []
    for image, gt in _maskgan_pairs(maskgan_dir):
        lab = resize(parse(image, segmenter).labels, gt.shape, 0)
        hair_iou.append(iou(lab == HAIR, gt == HAIR))
        face_iou.append(iou(lab == FACE, gt == FACE))
    print(f"maskgan hair IoU {np.mean(hair_iou):.3f} face IoU {np.mean(face_iou):.3f}")
    assert len(hair_iou) == 4
    assert np.mean(hair_iou) >= 0.90 and np.mean(face_iou) >= 0.90


def test_quality_on_loho(loho_dir, segmenter):
    hair_iou, face_iou = [], []
    for _, image, gh, gf in _loho_pairs(loho_dir):
        lab = resize(parse(image, segmenter).labels, gh.shape, 0)
        hair_iou.append(iou(lab == HAIR, gh))
        face_iou.append(iou(lab == FACE, gf))
    print(f"loho hair IoU {np.mean(hair_iou):.3f} face IoU {np.mean(face_iou):.3f}")
    assert len(hair_iou) == 13
    assert np.mean(hair_iou) >= 0.85 and np.mean(face_iou) >= 0.90


def test_face_anywhere_in_a_large_photo(astronaut, segmenter):
    """The parser sees a face-centred crop: a small face in a big canvas is parsed like the original."""
    canvas = np.pad(astronaut, ((700, 300), (200, 900), (0, 0)), mode="edge")
    small = parse(astronaut, segmenter)
    big = parse(canvas, segmenter)
    assert big.labels.shape == canvas.shape[:2]
    moved = big.labels[700:1212, 200:712]
    assert iou(moved == HAIR, small.labels == HAIR) > 0.85
    assert iou(moved == FACE, small.labels == FACE) > 0.9


def test_cli_parse_writes_colour_and_labels(tmp_path, astronaut):
    from hairtryon.cli import main

    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    assert main(["parse", str(src), "-o", str(tmp_path / "map.png")]) == 0
    colour = np.array(Image.open(tmp_path / "map.png"))
    labels = np.array(Image.open(tmp_path / "map_labels.png"))
    assert colour.shape == (512, 512, 3) and labels.shape == (512, 512)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and {1, 2} <= set(np.unique(labels))
    assert (SemanticMap(labels).colorize() == colour).all()


def test_unknown_segmenter_is_a_clear_error(tmp_path, astronaut, capsys):
    from hairtryon.cli import main

    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    assert main(["parse", str(src), "-o", str(tmp_path / "m.png"), "--segmenter", "nope"]) == 2
    assert "unknown segmenter" in capsys.readouterr().err
