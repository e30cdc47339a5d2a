"""Training (synthetic CelebAMask-HQ, overfitting the labelled portraits, resuming), evaluation
through parse(), and pseudo-labelling with BiSeNet."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from hairtryon import datasets as ds
from hairtryon.cli import main
from hairtryon.images import load_image
from hairtryon.segmentation import CLASSES, FACE, HAIR, parse
from hairtryon.training import TrainConfig, confusion, evaluate_segmenter, iou_per_class, train_segmenter
from hairtryon.unet_segmenter import UNetSegmenter, load_checkpoint

from test_datasets import write_celebamask


def _cfg(data, out, **kw):
    base = dict(input_size=32, width=8, depth=3, steps=30, batch_size=4, lr=5e-3, val_every=10,
                val_fraction=0.0, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(str(data), str(out), **base)


def test_metrics():
    gt = np.array([[0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 2, 2]], np.uint8)
    conf = confusion(gt, pred)
    assert conf.sum() == 3 and conf[1, 2] == 1
    iou = iou_per_class(conf)
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[2] == 0.0 and np.isnan(iou[3])


def test_synthetic_celebamask_trains_with_falling_loss(tmp_path):
    write_celebamask(tmp_path / "data")
    res = train_segmenter(_cfg(tmp_path / "data", tmp_path / "m.pt"))
    assert res.steps == 30 and len(res.losses) == 30
    assert np.mean(res.losses[-5:]) < 0.7 * np.mean(res.losses[:5])
    assert res.best.is_file() and res.last.is_file() and res.last.name == "m.last.pt"
    assert [h["step"] for h in res.history] == [10, 20, 30]
    ckpt = load_checkpoint(res.best)
    assert ckpt["config"]["input_size"] == 32 and ckpt["config"]["width"] == 8 and ckpt["config"]["depth"] == 3
    assert "optimizer" not in ckpt and "optimizer" in load_checkpoint(res.last)
    assert any("aligned framing" in n for n in res.notes)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    """A 10-step run stopped by Ctrl-C after step 5, then --resume, ends where an uninterrupted
    10-step run ends (same losses, same weights)."""
    from hairtryon import training

    write_celebamask(tmp_path / "data")
    full = train_segmenter(_cfg(tmp_path / "data", tmp_path / "a.pt", steps=10, val_every=5))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(training, "validate", interrupt)  # Ctrl-C during the validation after step 5
        with pytest.raises(KeyboardInterrupt):
            train_segmenter(_cfg(tmp_path / "data", tmp_path / "b.pt", steps=10, val_every=5))
    assert load_checkpoint(tmp_path / "b.last.pt")["step"] == 5
    rest = train_segmenter(_cfg(tmp_path / "data", tmp_path / "b.pt", steps=10, val_every=5, resume="auto"))
    assert rest.steps == 10 and len(rest.losses) == 5 and any("resumed from step 5" in n for n in rest.notes)
    np.testing.assert_allclose(rest.losses, full.losses[5:], rtol=1e-5)
    a, b = load_checkpoint(full.last)["model"], load_checkpoint(rest.last)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert [h["step"] for h in load_checkpoint(rest.last)["history"]] == [10]


def test_resume_from_a_best_checkpoint_is_refused(tmp_path, capsys):
    write_celebamask(tmp_path / "data")
    res = train_segmenter(_cfg(tmp_path / "data", tmp_path / "m.pt", steps=2, val_every=2))
    argv = ["train-segmenter", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "n.pt"), "--quiet",
            "--resume", str(res.best)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no training state" in err and "Traceback" not in err


@pytest.mark.slow
def test_overfit_the_labelled_portraits(tmp_path, maskgan_dir, capsys):
    """A small U-Net learns the 4 labelled portraits: hair IoU >= 0.9 on them through parse()."""
    out = tmp_path / "mg.pt"
    argv = ["train-segmenter", "--data", str(maskgan_dir), "--out", str(out), "--size", "128", "--width", "16",
            "--steps", "150", "--batch-size", "4", "--val-every", "50", "--val-fraction", "0", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 150:" in printed and "best validation mIoU" in printed
    seg = UNetSegmenter.from_checkpoint(out)
    report = evaluate_segmenter(maskgan_dir, seg, progress=False)
    print(report.format())
    assert report.count == 4 and report.iou["hair"] >= 0.9 and report.iou["face"] >= 0.9
    # the same checkpoint through the command line, by path alone
    image_path = sorted(maskgan_dir.glob("*.jpg"))[0]
    assert main(["parse", str(image_path), "-o", str(tmp_path / "p.png"), "--segmenter", f"unet:{out}"]) == 0
    labels = np.array(Image.open(tmp_path / "p_labels.png"))
    gt = ds.read_labels(ds.Record(image_path, image_path.with_suffix(".png"), "ids19", "0"))
    lab = np.array(Image.fromarray(labels).resize(gt.shape[::-1], Image.NEAREST))
    hair_iou = ((lab == HAIR) & (gt == HAIR)).sum() / ((lab == HAIR) | (gt == HAIR)).sum()
    assert hair_iou >= 0.85


def _iou_table(text):
    rows = re.finditer(r"^(\w+)\s+([01]\.\d{3})\s+([01]\.\d{3})$", text, re.M)  # class, IoU, mean per image
    return {m.group(1): float(m.group(2)) for m in rows}


def test_eval_segmenter_bisenet_on_maskgan(maskgan_dir, capsys):
    assert main(["eval-segmenter", "--data", str(maskgan_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    table = _iou_table(out)
    assert set(table) >= set(CLASSES) and "mIoU" in out
    assert table["hair"] >= 0.90 and table["face"] >= 0.90


def test_eval_segmenter_on_loho_reports_hair_and_face(loho_dir, capsys):
    assert main(["eval-segmenter", "--data", str(loho_dir), "--limit", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    table = _iou_table(out)
    assert set(table) == {"hair", "face"} and "only hair and face" in out and "4 images" in out
    assert table["hair"] > 0.75 and table["face"] > 0.85


def test_label_writes_parser_crops_that_train(tmp_path, ctrlhair_dir, maskgan_dir, segmenter, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    picks = sorted(ctrlhair_dir.glob("*.png"))[:3]
    for p in picks:  # read in place: links, not copies
        (photos / p.name).symlink_to(p)
    (photos / "maskgan0.jpg").symlink_to(sorted(maskgan_dir.glob("*.jpg"))[0])
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(photos / "blank.png")  # no face
    (photos / "broken.jpg").write_text("not an image")
    out = tmp_path / "labelled"
    assert main(["label", "--teacher", "bisenet", str(photos), str(out), "--quiet"]) == 0
    text = capsys.readouterr()
    assert "wrote 4 labelled crops" in text.out and "blank.png" in text.err and "broken.jpg" in text.err
    manifest = json.loads((out / ds.LABELS_MANIFEST).read_text())
    assert manifest["label_classes"] == 5 and manifest["teacher"] == "bisenet" and len(manifest["items"]) == 4
    assert ds.detect_layout(out) == "plain" and ds.default_framing(out, "plain") == "none"
    records = ds.list_records(out)
    assert len(records) == 4 and all(r.format == "ids5" for r in records)
    # each label map is BiSeNet's parse of the photo, seen on the crop
    mg = next(r for r in records if r.key == "maskgan0")
    crop, lab = load_image(mg.image), ds.read_labels(mg)
    assert crop.shape == (512, 512, 3) and lab.shape == (512, 512)
    assert set(np.unique(lab)) <= {0, 1, 2, 3, 4, 255} and (lab == 255).any()  # the crop passes the photo's edge
    image = load_image(sorted(maskgan_dir.glob("*.jpg"))[0])
    sm = parse(image, segmenter)
    frame = sm.meta["frame"].with_size(512)
    assert manifest["items"]["maskgan0"]["frame_xys"] == [frame.x0, frame.y0, frame.side]
    ref = ds.extract_pair(image, sm.labels, frame)[1]
    valid = lab != 255
    for c in (HAIR, FACE):
        a, b = (lab == c) & valid, (ref == c) & valid
        assert (a & b).sum() / (a | b).sum() > 0.95
    # the folder trains as is, on the crops themselves (no landmarks)
    res = train_segmenter(_cfg(out, tmp_path / "u.pt", input_size=64, steps=2, val_every=2))
    assert any("none framing" in n for n in res.notes) and res.best.is_file()
