"""Labelled portrait folders for training and evaluating segmenters, in the method's 5 classes.

Layouts (:func:`detect_layout` picks one from the folder's contents):

``celebamask``
    The official CelebAMask-HQ release: ``CelebA-HQ-img/{i}.jpg`` (1024², aligned) and
    ``CelebAMask-HQ-mask-anno/{i // 2000}/{i:05d}_{part}.png`` (512², one binary PNG per part).
    Parts are painted in :data:`~hairtryon.segmentation.CELEBAMASK_PARTS` order, a later part
    overwriting an earlier one (as the dataset's own ``g_mask.py`` does), then merged into the 5
    classes with :data:`~hairtryon.segmentation.CELEBAMASK_TO_5`. Split: the official one when
    ``CelebA-HQ-to-CelebA-mapping.txt`` is present (by CelebA index, as the dataset's
    ``g_partition.py``: ``162771 <= orig_idx < 182638`` val, ``>= 182638`` test, else train),
    else a seeded random split.
``plain``
    ``images/{name}.jpg|.jpeg|.png`` beside ``labels/{name}.png``: (H, W) uint8 class ids, either
    CelebAMask-HQ's 19 parts or the 5 classes (``label_classes``); 255 = unlabelled (ignored).
    ``hairtryon label`` writes this layout (see :data:`LABELS_MANIFEST`).
``paired``
    ``{name}.jpg`` and ``{name}.png`` side by side in one folder (as ``../shared/faces/maskgan``),
    ids as in ``plain``.
``loho``
    ``images/{name}.jpg`` and ``masks/{name}.png``: RGB masks, red hair, blue face skin, black
    everything else. Only hair and face are labelled (:data:`LOHO_CLASSES`): evaluation only.

Labels are always returned as (H, W) uint8 ids of the 5 classes (see
:data:`~hairtryon.segmentation.CLASSES`) with :data:`IGNORE` (255) for unlabelled pixels.

What the segmenter is trained on: the same face-centred crop :func:`hairtryon.segmentation.parse`
feeds it at inference (:func:`parser_frame`: landmarks' ``head_frame`` widened by
``PARSE_FRAME_SCALE``, borders mirrored). Framing modes of a :class:`SegmentationDataset`:
``landmarks`` finds that frame on every image with MediaPipe (exactly what ``parse`` does);
``aligned`` uses its measured value on aligned FFHQ / CelebA-HQ portraits, no landmarks needed
(:func:`aligned_frame`); ``none`` takes the image as the crop (folders written by
``hairtryon label`` already hold parser crops). ``auto``: ``none`` for ``hairtryon label``
output, ``aligned`` for CelebAMask-HQ, ``landmarks`` otherwise.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from .errors import HairTryOnError
from .framing import Frame, resize
from .images import load_image
from .segmentation import CELEBAMASK_PARTS, CELEBAMASK_TO_5, CLASSES, FACE, HAIR, PARSE_FRAME_SCALE, parser_frame

IGNORE = 255
LAYOUTS = ("celebamask", "plain", "paired", "loho")
FRAMINGS = ("landmarks", "aligned", "none")
SPLITS = ("all", "train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LOHO_CLASSES = (HAIR, FACE)
LABELS_MANIFEST = "hairtryon-labels.json"  # written by `hairtryon label` beside images/ and labels/
CELEBAMASK_IMAGES, CELEBAMASK_ANNO = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno"
CELEBAMASK_MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
CELEBA_VAL_START, CELEBA_TEST_START = 162771, 182638

# (256,) uint8: CelebAMask-HQ part ids -> 5 classes; ids beyond the 19 parts -> IGNORE.
_IDS19_LUT = np.full(256, IGNORE, np.uint8)
_IDS19_LUT[:len(CELEBAMASK_PARTS)] = CELEBAMASK_TO_5[:len(CELEBAMASK_PARTS)]
_IDS5_LUT = np.full(256, IGNORE, np.uint8)
_IDS5_LUT[:len(CLASSES)] = np.arange(len(CLASSES))


class DatasetError(HairTryOnError):
    """A dataset folder is missing, empty, or not in a known layout."""


@dataclass(frozen=True)
class Record:
    """One labelled image. ``labels``: a label PNG, or (celebamask) the tuple of per-part PNGs
    in :data:`CELEBAMASK_PARTS` order (None where the part is absent). ``format``: ``parts``,
    ``ids19``, ``ids5`` or ``loho``. ``key``: a stable name (file stem)."""

    image: Path
    labels: Union[Path, Tuple[Optional[Path], ...]]
    format: str
    key: str


# ----------------------------------------------------------------------------------- reading
def _read_gray(path: Path) -> np.ndarray:
    """(H, W) uint8 of a PNG (first channel if it has several)."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DatasetError(f"cannot read label file {path}.")
    return arr[..., 0] if arr.ndim == 3 else arr


def merge_parts(part_masks: Sequence[Optional[np.ndarray]], shape: Tuple[int, int]) -> np.ndarray:
    """Per-part binary masks ((h, w), any dtype, nonzero = part; None = absent) in
    CELEBAMASK_PARTS[1:] order -> (h, w) uint8 CelebAMask-HQ part ids, later parts on top."""
    ids = np.zeros(shape, np.uint8)
    for pid, mask in enumerate(part_masks, start=1):
        if mask is not None:
            ids[mask != 0] = pid
    return ids


def read_labels(rec: Record) -> np.ndarray:
    """The record's labels: (h, w) uint8 5-class ids, IGNORE where unlabelled (h, w may differ
    from the image's; loho: 1 hair, 2 face, 0 anything else)."""
    if rec.format == "parts":
        masks = [None if p is None else _read_gray(p) for p in rec.labels]
        shape = next((m.shape for m in masks if m is not None), None)
        if shape is None:
            w, h = Image.open(rec.image).size
            shape = (h, w)
        return CELEBAMASK_TO_5[merge_parts(masks, shape)]
    if rec.format == "loho":
        m = cv2.imread(str(rec.labels), cv2.IMREAD_COLOR)
        if m is None:
            raise DatasetError(f"cannot read mask file {rec.labels}.")
        b, r = m[..., 0] > 127, m[..., 2] > 127  # OpenCV reads BGR
        out = np.zeros(m.shape[:2], np.uint8)
        out[r & ~b] = HAIR
        out[b & ~r] = FACE
        return out
    lut = _IDS19_LUT if rec.format == "ids19" else _IDS5_LUT
    return lut[_read_gray(rec.labels)]


def read_pair(rec: Record) -> Tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, labels (H, W) uint8 5-class ids at the image's size)."""
    image = load_image(rec.image)
    labels = read_labels(rec)
    if labels.shape != image.shape[:2]:
        labels = resize(labels, image.shape[:2], cv2.INTER_NEAREST)
    return image, labels


# ----------------------------------------------------------------------------------- layouts
def detect_layout(root: Union[str, os.PathLike]) -> str:
    """The layout of a labelled folder (one of :data:`LAYOUTS`); raises :class:`DatasetError`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if (root / CELEBAMASK_IMAGES).is_dir() and (root / CELEBAMASK_ANNO).is_dir():
        return "celebamask"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "plain"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "loho"
    if any(p.suffix.lower() in (".jpg", ".jpeg") and p.with_suffix(".png").is_file() for p in root.iterdir()):
        return "paired"
    raise DatasetError(f"no labelled images in {root}: expected CelebAMask-HQ ({CELEBAMASK_IMAGES}/ and "
                       f"{CELEBAMASK_ANNO}/), images/ with labels/ or masks/, or NAME.jpg beside NAME.png.")


def _natural_key(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def _celebamask_records(root: Path) -> List[Record]:
    anno = root / CELEBAMASK_ANNO
    present = {}
    for sub in anno.iterdir():
        if sub.is_dir():
            present.update({name: sub / name for name in os.listdir(sub)})
    parts = CELEBAMASK_PARTS[1:]
    records = []
    for img in sorted((root / CELEBAMASK_IMAGES).glob("*.jpg"), key=_natural_key):
        if not img.stem.isdigit():
            continue
        i = int(img.stem)
        files = tuple(present.get(f"{i:05d}_{part}.png") for part in parts)
        if any(f is not None for f in files):
            records.append(Record(img, files, "parts", img.stem))
    return records


def _ids_format(label_classes: int) -> str:
    if label_classes not in (5, 19):
        raise DatasetError(f"label_classes must be 5 or 19, got {label_classes}.")
    return "ids5" if label_classes == 5 else "ids19"


def _pairs(images: Path, labels: Path, fmt: str, exts=IMAGE_EXTS) -> List[Record]:
    out = []
    for img in sorted(images.iterdir(), key=_natural_key):
        lab = labels / (img.stem + ".png")
        if img.suffix.lower() in exts and img.is_file() and lab.is_file() and lab != img:
            out.append(Record(img, lab, fmt, img.stem))
    return out


def read_manifest(root: Union[str, os.PathLike]) -> Optional[dict]:
    """The ``hairtryon label`` manifest of a folder, or None."""
    p = Path(root) / LABELS_MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise DatasetError(f"cannot read {p}: {exc}.") from None


def list_records(root: Union[str, os.PathLike], layout: str = "auto",
                 label_classes: Optional[int] = None) -> List[Record]:
    """Every labelled image of a folder. ``label_classes`` (5 or 19) says what the ids of the
    plain / paired layouts mean; default: the manifest's value, else 19. Raises
    :class:`DatasetError` for an unknown layout or an empty folder."""
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout '{layout}': use one of {', '.join(LAYOUTS)} or auto.")
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if label_classes is None:
        label_classes = int((read_manifest(root) or {}).get("label_classes", 19))
    if layout == "celebamask":
        records = _celebamask_records(root)
    elif layout == "plain":
        records = _pairs(root / "images", root / "labels", _ids_format(label_classes))
    elif layout == "loho":
        records = _pairs(root / "images", root / "masks", "loho")
    else:
        records = _pairs(root, root, _ids_format(label_classes), exts=(".jpg", ".jpeg"))
    if not records:
        raise DatasetError(f"no labelled images found in {root} ({layout} layout).")
    return records


def split_records(records: Sequence[Record], split: str, root: Optional[Path] = None, seed: int = 0,
                  val_fraction: float = 0.1, test_fraction: float = 0.0) -> List[Record]:
    """The ``split`` (:data:`SPLITS`) of ``records``. CelebAMask-HQ records follow the official
    split when ``root`` holds the CelebA mapping file; otherwise a random split seeded by
    ``seed`` (``val_fraction``, ``test_fraction`` of the records, at least one each when the
    fraction is positive and there are enough records)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': use one of {', '.join(SPLITS)}.")
    if split == "all":
        return list(records)
    mapping = root / CELEBAMASK_MAPPING if root is not None else None
    if records and records[0].format == "parts" and mapping is not None and mapping.is_file():
        which = _official_split(mapping)
        return [r for r in records if which.get(int(r.key), "train") == split]
    n = len(records)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 and n > 1 else 0
    n_test = min(n - 1 - n_val, max(1, round(n * test_fraction))) if test_fraction > 0 and n > 2 else 0
    pick = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}[split]
    return [records[i] for i in sorted(pick)]


def _official_split(mapping: Path) -> Dict[int, str]:
    """CelebA-HQ index -> 'train' | 'val' | 'test' from CelebA-HQ-to-CelebA-mapping.txt."""
    out = {}
    for line in mapping.read_text().splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0].isdigit() and cols[1].isdigit():
            orig = int(cols[1])
            out[int(cols[0])] = "val" if CELEBA_VAL_START <= orig < CELEBA_TEST_START else (
                "test" if orig >= CELEBA_TEST_START else "train")
    if not out:
        raise DatasetError(f"{mapping} holds no 'idx orig_idx orig_file' rows.")
    return out


# ----------------------------------------------------------------------------------- framing
def aligned_frame(image_hw: Tuple[int, int], size: int) -> Frame:
    """:func:`parser_frame` of an aligned FFHQ / CelebA-HQ portrait without landmarks: centred,
    ``PARSE_FRAME_SCALE`` x the image side (measured on the 67 aligned portraits of
    ../shared/faces: centre 0.502, 0.504 and side 1.109 ± 0.033 image widths)."""
    h, w = image_hw
    return Frame.around((w / 2.0, h / 2.0), PARSE_FRAME_SCALE * max(h, w), size, image_hw)


def default_framing(root: Path, layout: str) -> str:
    if read_manifest(root) is not None:
        return "none"
    return "aligned" if layout == "celebamask" else "landmarks"


def extract_pair(image: np.ndarray, labels: np.ndarray, frame: Frame) -> Tuple[np.ndarray, np.ndarray]:
    """The crop :func:`~hairtryon.segmentation.segment_frame` feeds the segmenter for ``frame``
    ((S, S, 3) uint8, area-downscaled, mirrored borders) and its labels ((S, S) uint8, nearest,
    IGNORE outside the image). ``labels``: (H, W) uint8 at the image's size; S = frame.size."""
    crop = frame.extract(image, border=cv2.BORDER_REFLECT_101)
    lab = frame.extract(labels, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, IGNORE)
    return crop, lab


# ------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class Augment:
    """Random geometry and colour of a training crop. ``zoom``: range of the crop side relative
    to the parser's frame; ``shift``: largest centre shift as a fraction of the frame side;
    ``rotate``: largest rotation in degrees; ``flip``: probability of a horizontal flip;
    ``brightness``, ``contrast``, ``saturation``: largest relative change; ``hue``: largest
    hue shift in degrees."""

    zoom: Tuple[float, float] = (0.85, 1.2)
    shift: float = 0.06
    rotate: float = 12.0
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 8.0

    @property
    def margin(self) -> float:
        """How much wider than the frame the work crop must be to hold every augmented crop."""
        half = self.zoom[1] / 2.0
        theta = math.radians(self.rotate)
        return 2.0 * (half * (math.cos(theta) + math.sin(theta)) + self.shift)


def jitter_colour(crop: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Random brightness, contrast, saturation and hue of an (S, S, 3) uint8 RGB crop."""
    x = crop.astype(np.float32)
    x *= rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    gray = x @ np.float32([0.299, 0.587, 0.114])
    x = (x - gray[..., None]) * rng.uniform(1 - aug.saturation, 1 + aug.saturation) + gray[..., None]
    out = np.clip(x, 0, 255).astype(np.uint8)
    if aug.hue > 0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        shift = int(round(rng.uniform(-aug.hue, aug.hue) / 2.0))  # OpenCV hue is 0..179
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def work_frame(frame: Frame, aug: Augment) -> Frame:
    """A frame around ``frame``, ``aug.margin`` times wider, at proportionally more pixels."""
    centre = (frame.x0 + frame.side / 2.0, frame.y0 + frame.side / 2.0)
    size = int(math.ceil(frame.size * aug.margin))
    return Frame.around(centre, frame.side * aug.margin, size, frame.image_hw)


def augment_pair(work_img: np.ndarray, work_lab: np.ndarray, size: int, aug: Augment,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One random (size, size, 3) uint8 crop and its (size, size) uint8 labels from a work crop
    ((W, W, 3) and (W, W), see :func:`work_frame`): zoom, shift, rotation, flip, colour.
    Pixels from beyond the work crop: mirrored image, IGNORE labels."""
    wsize = work_img.shape[0]
    frame_px = wsize / aug.margin  # the parser frame's side in work pixels
    zoom = math.exp(rng.uniform(math.log(aug.zoom[0]), math.log(aug.zoom[1])))
    scale = size / (frame_px * zoom)
    c = (wsize - 1) / 2.0
    cx, cy = c + rng.uniform(-aug.shift, aug.shift, 2) * frame_px
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), rng.uniform(-aug.rotate, aug.rotate), scale)
    m[:, 2] += (size - 1) / 2.0 - np.array([cx, cy])
    img = cv2.warpAffine(work_img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    lab = cv2.warpAffine(work_lab, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=IGNORE)
    if rng.random() < aug.flip:  # the 5 classes have no left/right: a flip needs no relabelling
        img, lab = img[:, ::-1], lab[:, ::-1]
    return jitter_colour(np.ascontiguousarray(img), rng, aug), np.ascontiguousarray(lab)


# ----------------------------------------------------------------------------------- dataset
class SegmentationDataset:
    """Training / validation samples of labelled images, framed as ``parse`` frames them.

    ``dataset[i]`` -> (image (3, S, S) uint8 torch tensor RGB, labels (S, S) int64 torch tensor
    of 5-class ids, IGNORE = 255 unlabelled) with S = ``input_size``. With ``augment`` each
    call draws a random crop, flip and colour from a generator seeded by (seed, epoch, i)
    (:meth:`set_epoch`), so a run is reproducible and resumable; without it the crop is exactly
    the one ``parse`` feeds the segmenter. ``framing``: see the module docstring. Crops are kept
    in memory up to ``cache_bytes`` (the work crops are small: decoding is the slow part).
    """

    def __init__(self, records: Sequence[Record], input_size: int, framing: str = "landmarks",
                 augment: Optional[Augment] = None, seed: int = 0, cache_bytes: int = 1 << 30,
                 progress: bool = True):
        if framing not in FRAMINGS:
            raise DatasetError(f"unknown framing '{framing}': use one of {', '.join(FRAMINGS)} or auto.")
        if not records:
            raise DatasetError("the dataset is empty.")
        if any(r.format == "loho" for r in records):
            raise DatasetError("LOHO masks label only hair and face: they can evaluate a segmenter "
                               "but not train one in 5 classes.")
        self.records, self.size, self.framing = list(records), int(input_size), framing
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._cache_left = int(cache_bytes)
        self._frames: Dict[int, Tuple[float, float, float]] = {}
        self.notes: List[str] = []
        if framing == "landmarks":
            self._find_frames(progress)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _find_frames(self, progress: bool) -> None:
        """Landmarks on every image once (MediaPipe), kept as (centre x, centre y, side) / width."""
        from tqdm.auto import tqdm

        for i, rec in enumerate(tqdm(self.records, desc="finding faces", unit="img", disable=not progress,
                                     leave=False)):
            image = load_image(rec.image)
            h, w = image.shape[:2]
            frame, note = parser_frame(image, self.size)
            if note:
                self.notes.append(f"{rec.image.name}: {note}")
            self._frames[i] = ((frame.x0 + frame.side / 2.0) / w, (frame.y0 + frame.side / 2.0) / w, frame.side / w)

    def frame(self, i: int, image_hw: Tuple[int, int]) -> Frame:
        """The parser's frame of record ``i`` (an image of ``image_hw``) at ``input_size``."""
        h, w = image_hw
        if self.framing == "landmarks":
            cx, cy, side = self._frames[i]
            return Frame.around((cx * w, cy * w), side * w, self.size, image_hw)
        if self.framing == "aligned":
            return aligned_frame(image_hw, self.size)
        return Frame.whole(image_hw, self.size)

    def _base(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """The exact parser crop (no augmentation) or the wider work crop (augmentation)."""
        if i in self._cache:
            return self._cache[i]
        image, labels = read_pair(self.records[i])
        frame = self.frame(i, image.shape[:2])
        if self.augment is not None:
            frame = work_frame(frame, self.augment)
        crop, lab = extract_pair(image, labels, frame)
        if crop.nbytes + lab.nbytes <= self._cache_left:
            self._cache[i] = (crop, lab)
            self._cache_left -= crop.nbytes + lab.nbytes
        return crop, lab

    def sample(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(image (S, S, 3) uint8 RGB, labels (S, S) uint8) of record ``i``."""
        crop, lab = self._base(i)
        if self.augment is None:
            return crop, lab
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return augment_pair(crop, lab, self.size, self.augment, rng)

    def __getitem__(self, i: int):
        import torch

        crop, lab = self.sample(i)
        return torch.from_numpy(crop).permute(2, 0, 1).contiguous(), torch.from_numpy(lab.astype(np.int64))

    def class_frequencies(self, limit: int = 200) -> np.ndarray:
        """(5,) float64 share of each class among the labelled pixels of the exact parser crops
        of up to ``limit`` records (evenly spaced)."""
        counts = np.zeros(len(CLASSES), np.float64)
        idx = np.unique(np.linspace(0, len(self) - 1, min(limit, len(self))).round().astype(int))
        for i in idx:
            image, labels = read_pair(self.records[i])
            lab = extract_pair(image, labels, self.frame(i, image.shape[:2]))[1]
            counts += np.bincount(lab[lab != IGNORE].ravel(), minlength=len(CLASSES))[:len(CLASSES)]
        return counts / max(counts.sum(), 1.0)
