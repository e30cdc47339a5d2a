"""The U-Net and its checkpoints: shapes, self-describing checkpoints, the segmenter interface,
and clear errors for missing or foreign checkpoints."""
import numpy as np
import pytest
import torch
from PIL import Image

from hairtryon import weights
from hairtryon.cli import main
from hairtryon.errors import HairTryOnError
from hairtryon.models.unet import UNet, count_parameters
from hairtryon.segmentation import CLASSES, Segmenter, load_segmenter, parse
from hairtryon.unet_segmenter import (CheckpointError, UNetSegmenter, load_checkpoint, make_config,
                                      save_checkpoint)


@pytest.mark.parametrize("width,depth,size", [(8, 4, 64), (16, 4, 128), (4, 3, 40)])
def test_unet_shapes(width, depth, size):
    net = UNet(5, width, depth).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 5, size, size) and out.dtype == torch.float32
    assert net.config() == {"num_classes": 5, "width": width, "depth": depth}


def test_widths_scale_the_network():
    small, classic = count_parameters(UNet(5, 16)), count_parameters(UNet(5, 64))
    assert 1.5e6 < small < 2.5e6 and 30e6 < classic < 33e6


def test_config_rejects_sizes_the_net_cannot_take():
    assert make_config(256, 16)["input_size"] == 256
    with pytest.raises(HairTryOnError, match="multiple of 16"):
        make_config(200, 16)


def _checkpoint(tmp_path, size=64, width=8, **extra):
    torch.manual_seed(0)
    config = make_config(size, width)
    net = UNet(5, width, 4)
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        net(torch.rand(4, 3, size, size))
    return save_checkpoint(tmp_path / "u.pt", net, config, step=3, **extra), net.eval()


def test_checkpoint_loads_by_path_alone(tmp_path):
    path, net = _checkpoint(tmp_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert ckpt["config"]["classes"] == list(CLASSES) and ckpt["config"]["input_size"] == 64
    seg = load_segmenter(f"unet:{path}")
    assert isinstance(seg, UNetSegmenter) and isinstance(seg, Segmenter)
    assert seg.input_size == 64 and seg.name == "unet:u.pt"
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    probs = seg.predict(crop)
    assert probs.shape == (5, 64, 64) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255), 1)[0].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5) if seg.precision == "fp32" else None
    exact = UNetSegmenter.from_checkpoint(path, precision="fp32").predict(crop)
    np.testing.assert_allclose(exact, ref, atol=1e-5)
    fast = UNetSegmenter.from_checkpoint(path, precision="bf16").predict(crop)
    assert np.abs(fast - ref).max() < 0.1 and (fast.argmax(0) == ref.argmax(0)).mean() > 0.95


def test_parse_with_a_unet_checkpoint(tmp_path, astronaut):
    """Through the same parse() as BiSeNet: full-size map, pixels outside the face crop background."""
    path, _ = _checkpoint(tmp_path)
    sm = parse(astronaut, UNetSegmenter.from_checkpoint(path))
    assert sm.labels.shape == astronaut.shape[:2] and sm.probs.shape == (5, 512, 512)
    assert sm.meta["segmenter"] == "unet:u.pt"
    assert (sm.labels[:, 450:] == 0).all()  # far right of the face: outside the crop
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    assert main(["parse", str(src), "-o", str(tmp_path / "m.png"), "--segmenter", f"unet:{path}"]) == 0
    labels = np.array(Image.open(tmp_path / "m_labels.png"))
    assert (labels == sm.labels).all()


def test_bad_checkpoints_are_clear_errors(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases = [(tmp_path / "missing.pt", "not found"), (garbage, "cannot read"), (foreign, "not a hairtryon U-Net"),
             (weights.ensure("bisenet"), "not a hairtryon U-Net")]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            UNetSegmenter.from_checkpoint(path)
        assert main(["parse", str(src), "-o", str(tmp_path / "m.png"), "--segmenter", f"unet:{path}"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_checkpoint_of_other_classes_or_shapes_is_refused(tmp_path):
    path, net = _checkpoint(tmp_path)
    ckpt = load_checkpoint(path)
    ckpt["config"]["classes"] = ["background", "hair"]
    torch.save(ckpt, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="predicts classes"):
        UNetSegmenter.from_checkpoint(tmp_path / "two.pt")
    ckpt = load_checkpoint(path)
    ckpt["config"]["width"] = 16  # weights of a width-8 net
    torch.save(ckpt, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        UNetSegmenter.from_checkpoint(tmp_path / "wide.pt")
