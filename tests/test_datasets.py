"""Labelled folders: the CelebAMask-HQ layout (synthetic, written here), plain / paired / LOHO
layouts on the shared portraits, splits, framing and augmentation."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hairtryon import datasets as ds
from hairtryon.cli import main
from hairtryon.images import load_image
from hairtryon.segmentation import BACKGROUND, EARS, FACE, HAIR, NECK, PALETTE, segment_frame

# CelebAMask-HQ ids used in the synthetic layout, by name
PART_ID = {p: i for i, p in enumerate(ds.CELEBAMASK_PARTS)}


def _synthetic_parts(rng, size):
    """Per-part binary masks ((size, size) bool) of a cartoon head, with deliberate overlaps."""
    yy, xx = np.mgrid[:size, :size] / size
    cx = 0.5 + rng.uniform(-0.05, 0.05)
    disk = lambda x, y, r: (xx - x) ** 2 + (yy - y) ** 2 < r ** 2  # noqa: E731
    parts = {
        "skin": disk(cx, 0.5, 0.25),
        "nose": disk(cx, 0.55, 0.04),
        "l_eye": disk(cx - 0.1, 0.45, 0.03),
        "eye_g": disk(cx - 0.1, 0.45, 0.05) & ~disk(cx - 0.1, 0.45, 0.035),
        "hair": (yy < 0.38) & disk(cx, 0.45, 0.33),  # over the forehead: painted after skin
        "hat": (yy < 0.2) & (xx > 0.5) & disk(cx, 0.45, 0.33),  # over part of the hair
        "l_ear": disk(cx - 0.27, 0.52, 0.05),
        "ear_r": disk(cx - 0.27, 0.57, 0.02),  # earring over the ear
        "neck": (yy > 0.7) & (np.abs(xx - cx) < 0.12),
        "cloth": (yy > 0.85),  # over the neck's lower part
    }
    return parts


def _expected_5(parts, size):
    """The 5 classes by hand, in CelebAMask-HQ paint order (later parts on top)."""
    out = np.zeros((size, size), np.uint8)
    cls = {"skin": FACE, "nose": FACE, "eye_g": FACE, "l_eye": FACE, "l_ear": EARS, "hair": HAIR,
           "hat": HAIR, "ear_r": EARS, "neck": NECK, "cloth": NECK}
    for name in ds.CELEBAMASK_PARTS[1:]:
        if name in parts:
            out[parts[name]] = cls[name]
    return out


def write_celebamask(root: Path, ids=(0, 1, 2, 3, 2000, 2001), img_size=128, mask_size=64, seed=0):
    """A tiny dataset in the exact CelebAMask-HQ layout; images coloured by class (learnable).
    Returns {id: expected (mask_size, mask_size) uint8 5-class labels}."""
    rng = np.random.default_rng(seed)
    (root / ds.CELEBAMASK_IMAGES).mkdir(parents=True)
    expected = {}
    for i in ids:
        parts = _synthetic_parts(rng, mask_size)
        sub = root / ds.CELEBAMASK_ANNO / str(i // 2000)
        sub.mkdir(parents=True, exist_ok=True)
        for name, m in parts.items():
            Image.fromarray(m.astype(np.uint8) * 255).save(sub / f"{i:05d}_{name}.png")
        exp = _expected_5(parts, mask_size)
        expected[i] = exp
        big = cv2.resize(exp, (img_size, img_size), interpolation=cv2.INTER_NEAREST)
        img = PALETTE[big].astype(np.int16) * 3 // 4 + rng.integers(0, 48, (img_size, img_size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / ds.CELEBAMASK_IMAGES / f"{i}.jpg",
                                                                    quality=95)
    return expected


def test_celebamask_layout_merges_parts_into_5_classes(tmp_path):
    expected = write_celebamask(tmp_path)
    assert ds.detect_layout(tmp_path) == "celebamask"
    records = ds.list_records(tmp_path)
    assert [r.key for r in records] == ["0", "1", "2", "3", "2000", "2001"]
    assert records[4].labels[ds.CELEBAMASK_PARTS.index("hair") - 1].parent.name == "1"  # folder k = i // 2000
    for rec in records:
        lab = ds.read_labels(rec)
        exp = expected[int(rec.key)]
        assert lab.shape == exp.shape and (lab == exp).all()
        assert {BACKGROUND, HAIR, FACE, EARS, NECK} == set(np.unique(lab))
    image, labels = ds.read_pair(records[0])
    assert image.shape == (128, 128, 3) and labels.shape == (128, 128)  # labels brought to the image's size


def test_merge_parts_later_part_wins():
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 255
    b = np.zeros((4, 4), np.uint8)
    b[1:3] = 1
    masks = [None] * 18
    masks[PART_ID["skin"] - 1], masks[PART_ID["hair"] - 1] = a, b
    ids = ds.merge_parts(masks, (4, 4))
    assert (ids[0] == PART_ID["skin"]).all() and (ids[1:3] == PART_ID["hair"]).all() and (ids[3] == 0).all()


def test_official_split_by_celeba_index(tmp_path):
    write_celebamask(tmp_path)
    # CelebA indices: 0 and 2000 -> train, 1 and 2001 -> val, 2 and 3 -> test
    rows = {0: 5, 1: ds.CELEBA_VAL_START, 2: ds.CELEBA_TEST_START, 3: 200000, 2000: 162770, 2001: 182637}
    text = "idx orig_idx orig_file\n" + "".join(f"{i} {o} {o + 1:06d}.jpg\n" for i, o in rows.items())
    (tmp_path / ds.CELEBAMASK_MAPPING).write_text(text)
    recs = ds.list_records(tmp_path)
    keys = lambda split: [r.key for r in ds.split_records(recs, split, tmp_path)]  # noqa: E731
    assert keys("train") == ["0", "2000"] and keys("val") == ["1", "2001"] and keys("test") == ["2", "3"]


def test_seeded_split_without_mapping(tmp_path):
    write_celebamask(tmp_path)
    recs = ds.list_records(tmp_path)
    parts = [ds.split_records(recs, s, tmp_path, seed=3, val_fraction=0.2, test_fraction=0.2)
             for s in ("train", "val", "test")]
    keys = [sorted(r.key for r in p) for p in parts]
    assert sum(map(len, keys)) == 6 and len(set(sum(keys, []))) == 6 and all(keys)
    again = ds.split_records(recs, "val", tmp_path, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert sorted(r.key for r in again) == keys[1]
    other = [sorted(r.key for r in ds.split_records(recs, "val", tmp_path, seed=s, val_fraction=0.5))
             for s in range(6)]
    assert len({tuple(k) for k in other}) > 1  # the seed matters


@pytest.mark.parametrize("classes", [5, 19])
def test_plain_layout_ids(tmp_path, classes):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    ids = np.array([[0, 1, 2, 3, 4, 13, 17, 255]] * 8, np.uint8)
    Image.fromarray(ids).save(tmp_path / "labels" / "a.png")
    (rec,) = ds.list_records(tmp_path, label_classes=classes)
    lab = ds.read_labels(rec)
    if classes == 5:  # ids > 4 are not classes: ignored
        assert lab[0].tolist() == [0, 1, 2, 3, 4, 255, 255, 255]
    else:  # 0 bg, 1 skin, 2 nose, 3 eye_g, 4 l_eye, 13 hair, 17 neck
        assert lab[0].tolist() == [BACKGROUND, FACE, FACE, FACE, FACE, HAIR, NECK, 255]


def test_paired_layout_on_maskgan(maskgan_dir):
    assert ds.detect_layout(maskgan_dir) == "paired"
    records = ds.list_records(maskgan_dir)
    assert len(records) == 4 and all(r.format == "ids19" for r in records)
    raw = np.array(Image.open(records[0].labels))
    lab = ds.read_labels(records[0])
    assert ((lab == HAIR) == np.isin(raw, [13, 14])).all()
    assert ((lab == NECK) == np.isin(raw, [16, 17, 18])).all()


def test_loho_masks(loho_dir):
    assert ds.detect_layout(loho_dir) == "loho"
    records = ds.list_records(loho_dir)
    assert len(records) == 13
    rgb = np.array(Image.open(records[0].labels).convert("RGB")).astype(int)
    lab = ds.read_labels(records[0])
    assert (lab == HAIR).sum() == ((rgb[..., 0] > 127) & (rgb[..., 2] < 128)).sum() > 1000
    assert (lab == FACE).sum() == ((rgb[..., 2] > 127) & (rgb[..., 0] < 128)).sum() > 1000
    with pytest.raises(ds.DatasetError, match="only hair and face"):
        ds.SegmentationDataset(records, 64, framing="aligned")


def test_bad_folders_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ds.DatasetError, match="not found"):
        ds.list_records(tmp_path / "nope")
    with pytest.raises(ds.DatasetError, match="no labelled images"):
        ds.list_records(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")  # no label beside it
    with pytest.raises(ds.DatasetError, match="no labelled images found"):
        ds.list_records(tmp_path)
    assert main(["train-segmenter", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "no labelled images found" in err and "Traceback" not in err
    assert main(["eval-segmenter", "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_samples_are_the_crop_parse_feeds_the_segmenter(maskgan_dir):
    """Without augmentation, a sample is exactly segment_frame's crop of the parser's frame."""
    records = ds.list_records(maskgan_dir)[:2]
    data = ds.SegmentationDataset(records, 128, framing="landmarks", progress=False)
    seen = []

    class Spy:
        name, input_size = "spy", 128

        def predict(self, crop):
            seen.append(crop)
            return np.zeros((5, 128, 128), np.float32)

    for i, rec in enumerate(records):
        image = load_image(rec.image)
        frame, note = ds.parser_frame(image, 128)
        assert note is None
        segment_frame(image, frame, Spy())
        crop, lab = data.sample(i)
        assert crop.shape == (128, 128, 3) and lab.shape == (128, 128) and lab.dtype == np.uint8
        assert (crop == seen[-1]).all()
        # the aligned framing (no landmarks) is close to the measured frame on aligned portraits
        al = ds.aligned_frame(image.shape[:2], 128)
        assert abs(al.side - frame.side) < 0.08 * frame.side
        assert abs(al.x0 - frame.x0) < 0.05 * frame.side and abs(al.y0 - frame.y0) < 0.05 * frame.side
        # hair labels sit on the top of the crop, face in the middle
        assert np.nonzero(lab == HAIR)[0].mean() < np.nonzero(lab == FACE)[0].mean()
        x, y = data[i]
        assert tuple(x.shape) == (3, 128, 128) and tuple(y.shape) == (128, 128) and str(y.dtype) == "torch.int64"


def test_augmentation_keeps_labels_on_their_pixels(tmp_path):
    """Image colour encodes the class: after zoom, shift, rotation and flip (no colour jitter),
    every labelled pixel still has its class's colour (except along class borders)."""
    write_celebamask(tmp_path, ids=(0, 1))
    records = ds.list_records(tmp_path)
    aug = ds.Augment(brightness=0, contrast=0, saturation=0, hue=0)
    data = ds.SegmentationDataset(records, 64, framing="aligned", augment=aug, seed=1)
    plain = ds.SegmentationDataset(records, 64, framing="aligned")
    palette = PALETTE.astype(np.float32) * 3 / 4 + 24
    differs = 0
    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            img, lab = data.sample(i)
            differs += not np.array_equal(lab, plain.sample(i)[1])
            nearest = np.argmin(((img[:, :, None, :].astype(np.float32) - palette) ** 2).sum(-1), axis=-1)
            inner = cv2.erode((lab != ds.IGNORE).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            same = cv2.erode((cv2.morphologyEx(lab, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) == 0)
                             .astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            keep = inner & same
            assert keep.sum() > 1000
            assert (nearest[keep] == lab[keep]).mean() > 0.98
    assert differs >= 6  # the crops really move
    data.set_epoch(2)
    a = data.sample(1)
    data.set_epoch(2)
    assert all(np.array_equal(u, v) for u, v in zip(a, data.sample(1)))  # reproducible per (seed, epoch, i)
