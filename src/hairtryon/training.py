"""Training, evaluating and pseudo-labelling segmenters (issue 5), and their CLI commands.

- :func:`train_segmenter` trains the U-Net on a labelled folder (``hairtryon train-segmenter``).
- :func:`evaluate_segmenter` runs the full :func:`~hairtryon.segmentation.parse` on every image of
  a labelled folder and reports IoU per class (``hairtryon eval-segmenter``).
- :func:`label_folder` writes a teacher's 5-class labels for a folder of portraits, on the very
  crop ``parse`` feeds a segmenter, in the plain layout (``hairtryon label``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from . import datasets as ds
from .errors import HairTryOnError, ImageLoadError
from .framing import resize
from .images import load_image
from .segmentation import CLASSES, PARSE_FRAME_SCALE, Segmenter, load_segmenter, parse, segment_frame
from .unet_segmenter import (CheckpointError, autocast, build_net, load_checkpoint, make_config,
                             resolve_device, resolve_precision, save_checkpoint)

NUM_CLASSES = len(CLASSES)


# -------------------------------------------------------------------------------------- metrics
def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(C, C) int64 confusion matrix (rows ground truth, columns prediction) of two label maps
    of equal shape (uint8 / int ids); ground-truth pixels equal to IGNORE are left out."""
    gt, pred = np.asarray(gt).ravel().astype(np.int64), np.asarray(pred).ravel().astype(np.int64)
    keep = gt != ds.IGNORE
    counts = np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(C,) float64 IoU of each class from a confusion matrix; NaN where a class is in neither
    the ground truth nor the prediction."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def format_ious(ious: Dict[str, float], miou: float) -> str:
    """One line: ``hair 0.953  face 0.921 ...  mIoU 0.90`` (absent classes as ``-``)."""
    cells = [f"{k} {'-' if v is None or math.isnan(v) else f'{v:.3f}'}" for k, v in ious.items()]
    return "  ".join(cells) + f"  | mIoU {miou:.3f}"


# ------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Everything ``hairtryon train-segmenter`` takes (see its --help for each field)."""

    data: str
    out: str
    input_size: int = 256
    width: int = 16
    depth: int = 4
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "ce+dice"  # "ce" or "ce+dice"
    class_weights: str = "auto"  # "auto" (inverse square-root frequency) or "none"
    val_every: int = 200
    val_fraction: float = 0.1
    layout: str = "auto"
    label_classes: Optional[int] = None
    framing: str = "auto"
    augment: bool = True
    resume: Optional[str] = None  # a checkpoint path, or "auto" = OUT's .last.pt
    device: str = "auto"
    precision: str = "auto"  # "auto" (bf16 autocast where native), "fp32" or "bf16"
    seed: int = 0
    workers: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    """``best``: path of the best checkpoint (by validation mIoU); ``last``: the resumable one.
    ``history``: one dict per validation (step, loss, miou, per-class iou); ``losses``: the
    training loss of every step run by this call."""

    best: Path
    last: Path
    best_miou: float
    best_step: int
    steps: int
    history: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)


def last_path(out: Path) -> Path:
    """The resumable checkpoint written beside ``out`` (``model.pt`` -> ``model.last.pt``)."""
    return out.with_name(out.stem + ".last" + (out.suffix or ".pt"))


def class_weights_from(freq: np.ndarray, cap: float = 10.0) -> np.ndarray:
    """(C,) float32 loss weights from class frequencies: inverse square root, scaled so the mean
    pixel weight is 1, capped at ``cap``."""
    w = 1.0 / np.sqrt(freq + 1e-4)
    w = w / float((freq * w).sum() or 1.0)
    return np.minimum(w, cap).astype(np.float32)


def dice_loss(logits, target, ignore: int = ds.IGNORE):
    """Soft multi-class Dice loss, mean over classes. ``logits`` (N, C, H, W) float;
    ``target`` (N, H, W) int64 with ``ignore`` for unlabelled pixels."""
    import torch
    import torch.nn.functional as F

    valid = (target != ignore).unsqueeze(1).float()
    probs = torch.softmax(logits.float(), dim=1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float() * valid
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2.0 * inter + 1.0) / (denom + 1.0)).mean()


def segmentation_loss(logits, target, weight, kind: str = "ce+dice"):
    """Class-weighted cross-entropy (``kind`` ``ce``) plus soft Dice (``ce+dice``).
    ``logits`` (N, C, H, W) float32, ``target`` (N, H, W) int64 (IGNORE left out), ``weight`` (C,)."""
    import torch.nn.functional as F

    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ds.IGNORE)
    return loss + dice_loss(logits, target) if kind == "ce+dice" else loss


def _steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (one partial batch when the dataset is smaller than a batch)."""
    return max(1, n // batch_size)


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> List[List[int]]:
    """The batches of sample indices of an epoch: a permutation seeded by (seed, epoch), so a
    resumed run sees the same order."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(_steps_per_epoch(n, batch_size))]


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5 % (at most 100 steps), then cosine decay to 5 % of ``base``."""
    warm = max(1, min(100, total // 20))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def validate(net, dataset: "ds.SegmentationDataset", device, batch_size: int = 8,
             precision: str = "fp32") -> np.ndarray:
    """(C, C) confusion matrix of ``net`` on every (un-augmented) sample of ``dataset``."""
    import torch

    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            x = torch.stack([it[0] for it in items]).to(device).float().div_(255.0)
            with autocast(device, precision):
                pred = net(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu().numpy()
            for (_, y), p in zip(items, pred):
                conf += confusion(y.numpy(), p)
    net.train(was_training)
    return conf


def _validation_entry(net, val_ds, device, batch_size: int, precision: str, step: int, loss: float) -> dict:
    """Validate and summarise: {'step', 'loss', 'miou', 'iou': {class: IoU or None}}."""
    ious = iou_per_class(validate(net, val_ds, device, batch_size, precision))
    miou = 0.0 if np.all(np.isnan(ious)) else float(np.nanmean(ious))
    return {"step": step, "loss": loss, "miou": miou,
            "iou": {k: (None if math.isnan(v) else float(v)) for k, v in zip(CLASSES, ious)}}


def _datasets(cfg: TrainConfig, input_size: int, notes: List[str]):
    root = Path(cfg.data)
    layout = ds.detect_layout(root) if cfg.layout == "auto" else cfg.layout
    records = ds.list_records(root, layout, cfg.label_classes)
    framing = ds.default_framing(root, layout) if cfg.framing == "auto" else cfg.framing
    train = ds.split_records(records, "train", root, cfg.seed, cfg.val_fraction)
    val = ds.split_records(records, "val", root, cfg.seed, cfg.val_fraction)
    if not train:
        raise ds.DatasetError(f"no training images in {root} after the split.")
    if not val:
        val = train
        notes.append("no held-out images: validation runs on the training images")
    aug = ds.Augment() if cfg.augment else None
    train_ds = ds.SegmentationDataset(train, input_size, framing, aug, cfg.seed, progress=cfg.progress)
    val_ds = ds.SegmentationDataset(val, input_size, framing, None, cfg.seed, progress=cfg.progress)
    notes += train_ds.notes + [n for n in val_ds.notes if n not in train_ds.notes]
    notes.append(f"{layout} layout, {framing} framing: {len(train)} training, "
                 f"{len(val) if val is not train else 0} validation images")
    return train_ds, val_ds


def train_segmenter(cfg: TrainConfig) -> TrainResult:
    """Train a U-Net on the labelled folder ``cfg.data``; the best checkpoint (validation mIoU)
    goes to ``cfg.out``, the resumable last state beside it (:func:`last_path`)."""
    import torch
    from tqdm.auto import tqdm

    if cfg.loss not in ("ce", "ce+dice"):
        raise HairTryOnError(f"unknown loss '{cfg.loss}': use ce or ce+dice.")
    if cfg.class_weights not in ("auto", "none"):
        raise HairTryOnError(f"unknown class weighting '{cfg.class_weights}': use auto or none.")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise HairTryOnError("steps and batch size must be at least 1.")
    out = Path(cfg.out)
    last = last_path(out)
    device = torch.device(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)

    resume = None
    if cfg.resume:
        rpath = last if cfg.resume == "auto" else Path(cfg.resume)
        resume = load_checkpoint(rpath)
        if "optimizer" not in resume:
            raise CheckpointError(f"{rpath} holds no training state to resume from (use {last_path(rpath).name}).")
    config = resume["config"] if resume else make_config(cfg.input_size, cfg.width, cfg.depth)
    notes: List[str] = []
    if resume and (config["input_size"], config["width"], config["depth"]) != (cfg.input_size, cfg.width, cfg.depth):
        notes.append(f"resuming: input size {config['input_size']}, width {config['width']}, depth "
                     f"{config['depth']} come from the checkpoint")
    train_ds, val_ds = _datasets(cfg, int(config["input_size"]), notes)

    net = build_net(config).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best_miou, best_step, history = 0, -1.0, 0, []
    if not resume:
        weights = class_weights_from(train_ds.class_frequencies()) if cfg.class_weights == "auto" \
            else np.ones(NUM_CLASSES, np.float32)
    else:
        net.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        step, best_miou, best_step = int(resume["step"]), float(resume["best_miou"]), int(resume["best_step"])
        history = list(resume.get("history", []))
        weights = np.asarray(resume["class_weights"], np.float32)
        notes.append(f"resumed from step {step}")
    weight_t = torch.from_numpy(weights).to(device)
    notes.append(f"{device.type}, {precision}; loss weights "
                 + ", ".join(f"{k} {v:.2f}" for k, v in zip(CLASSES, weights)))
    for n in notes:
        tqdm.write(f"hairtryon: {n}")

    def state(kind: str) -> dict:
        s = {"step": step, "best_miou": best_miou, "best_step": best_step, "history": history,
             "class_weights": [float(w) for w in weights],
             "train": {"data": str(cfg.data), "loss": cfg.loss, "lr": cfg.lr, "batch_size": cfg.batch_size,
                       "steps": cfg.steps, "seed": cfg.seed, "framing": train_ds.framing, "precision": precision}}
        if kind == "last":
            s["optimizer"] = opt.state_dict()
        return s

    per_epoch = _steps_per_epoch(len(train_ds), cfg.batch_size)
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    ema, losses = None, []
    net.train()
    try:
        while step < cfg.steps:
            epoch, skip = divmod(step, per_epoch)
            train_ds.set_epoch(epoch)
            batches = _epoch_batches(len(train_ds), cfg.batch_size, cfg.seed, epoch)[skip:]
            loader = torch.utils.data.DataLoader(train_ds, batch_sampler=batches, num_workers=cfg.workers)
            for x, y in loader:
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, cfg.steps, cfg.lr)
                x, y = x.to(device).float().div_(255.0).contiguous(memory_format=torch.channels_last), y.to(device)
                with autocast(device, precision):
                    logits = net(x)
                loss = segmentation_loss(logits.float(), y, weight_t, cfg.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                value = float(loss.detach())
                losses.append(value)
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
                if step % cfg.val_every == 0 or step == cfg.steps:
                    entry = _validation_entry(net, val_ds, device, cfg.batch_size, precision, step, ema)
                    history.append(entry)
                    if entry["miou"] > best_miou:
                        best_miou, best_step = entry["miou"], step
                        save_checkpoint(out, net, config, **state("best"))
                    save_checkpoint(last, net, config, **state("last"))
                    tqdm.write(f"step {step}: loss {ema:.3f}  " + format_ious(entry["iou"], entry["miou"])
                               + ("  (best)" if best_step == step else ""))
                if step >= cfg.steps:
                    break
    except KeyboardInterrupt:
        save_checkpoint(last, net, config, **state("last"))
        tqdm.write(f"hairtryon: interrupted at step {step}; resume with --resume (state in {last})")
        raise
    finally:
        bar.close()
    return TrainResult(out, last, best_miou, best_step, step, history, notes, losses)


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class EvalReport:
    """IoU of a segmenter on a labelled folder. ``iou``: per class, pooled over all pixels of
    all images; ``image_iou``: per class, the mean of per-image IoUs (images where the class is
    in neither map are left out); ``miou``: mean of ``iou`` over the evaluated classes."""

    data: str
    layout: str
    segmenter: str
    count: int
    iou: Dict[str, float]
    image_iou: Dict[str, float]
    miou: float
    notes: List[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{self.segmenter} on {self.data} ({self.layout} layout, {self.count} images)"]
        if self.layout == "loho":
            lines.append("LOHO masks label only hair and face: IoU of those two classes only")
        lines.append(f"{'class':14s} {'IoU':>7s} {'mean per image':>15s}")
        for k in self.iou:
            lines.append(f"{k:14s} {self.iou[k]:7.3f} {self.image_iou[k]:15.3f}")
        lines.append(f"{'mIoU':14s} {self.miou:7.3f}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def evaluate_segmenter(data, segmenter: Segmenter, layout: str = "auto", label_classes: Optional[int] = None,
                       split: str = "all", limit: Optional[int] = None, seed: int = 0,
                       progress: bool = True) -> EvalReport:
    """Parse every labelled image of ``data`` with :func:`~hairtryon.segmentation.parse` (the
    whole inference path: landmarks, face-centred crop, ``segmenter``) and compare the labels,
    resized to the ground truth's size (nearest), with it."""
    from tqdm.auto import tqdm

    root = Path(data)
    layout = ds.detect_layout(root) if layout == "auto" else layout
    records = ds.split_records(ds.list_records(root, layout, label_classes), split, root, seed)
    if limit:
        records = records[:limit]
    if not records:
        raise ds.DatasetError(f"no images in the '{split}' split of {root}.")
    classes = ds.LOHO_CLASSES if layout == "loho" else tuple(range(NUM_CLASSES))
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    per_image: Dict[int, List[float]] = {c: [] for c in classes}
    notes = []
    for rec in tqdm(records, desc="evaluating", unit="img", disable=not progress, leave=False):
        gt = ds.read_labels(rec)
        sm = parse(load_image(rec.image), segmenter, keep_probs=False)
        if "note" in sm.meta:
            notes.append(f"{rec.image.name}: {sm.meta['note']}")
        pred = resize(sm.labels, gt.shape, cv2.INTER_NEAREST)
        c_img = confusion(gt, pred)
        conf += c_img
        img_iou = iou_per_class(c_img)
        for c in classes:
            if not math.isnan(img_iou[c]):
                per_image[c].append(float(img_iou[c]))
    ious = iou_per_class(conf)
    iou = {CLASSES[c]: float(ious[c]) for c in classes}
    image_iou = {CLASSES[c]: float(np.mean(per_image[c])) if per_image[c] else float("nan") for c in classes}
    miou = float(np.nanmean([iou[CLASSES[c]] for c in classes]))
    return EvalReport(str(data), layout, getattr(segmenter, "name", "?"), len(records), iou, image_iou, miou, notes)


# ---------------------------------------------------------------------------------- labelling
PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class LabelReport:
    """``written``: names of the labelled images; ``skipped``: 'name: reason' lines."""

    out: Path
    written: List[str]
    skipped: List[str]


def label_image(image: np.ndarray, teacher: Segmenter, frame) -> Tuple[np.ndarray, np.ndarray]:
    """The crop of ``frame`` (see :func:`~hairtryon.datasets.parser_frame`) of ``image``
    ((H, W, 3) uint8 RGB) and ``teacher``'s labels of it: (crop (S, S, 3) uint8 RGB, labels
    (S, S) uint8 5-class ids, IGNORE where the crop lies outside the photo), S = frame.size.
    The crop is the one :func:`~hairtryon.segmentation.segment_frame` feeds a segmenter."""
    crop = frame.extract(image, border=cv2.BORDER_REFLECT_101)
    labels = np.argmax(segment_frame(image, frame, teacher), axis=0).astype(np.uint8)
    inside = frame.extract(np.ones(image.shape[:2], np.uint8), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0)
    labels[inside == 0] = ds.IGNORE
    return crop, labels


def label_folder(photos: str, out: str, teacher: str = "bisenet", size: int = 512, device: str = "auto",
                 progress: bool = True) -> LabelReport:
    """Pseudo-label every portrait in ``photos`` (not recursive) with ``teacher``: writes
    ``out/images/NAME.jpg`` (the face-centred crop ``parse`` would feed a segmenter, ``size``²),
    ``out/labels/NAME.png`` (5-class ids, 255 outside the photo) and ``out/hairtryon-labels.json``
    (teacher, frames, skipped photos). Photos without a face, or unreadable, are skipped."""
    from tqdm.auto import tqdm

    from .images import save_image

    src, dst = Path(photos), Path(out)
    if not src.is_dir():
        raise ds.DatasetError(f"photo folder not found: {src}")
    paths = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTS)
    if not paths:
        raise ds.DatasetError(f"no photos ({', '.join(PHOTO_EXTS)}) in {src}.")
    if size < 32:
        raise HairTryOnError(f"label size {size} is too small (at least 32).")
    model = load_segmenter(teacher, device=resolve_device(device))
    written, skipped, items, names = [], [], {}, set()
    for path in tqdm(paths, desc=f"labelling with {model.name}", unit="img", disable=not progress):
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        frame, note = ds.parser_frame(image, size)
        if note:
            skipped.append(f"{path.name}: {note}")
            continue
        crop, labels = label_image(image, model, frame)
        name = path.stem if path.stem not in names else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        names.add(name)
        save_image(crop, dst / "images" / f"{name}.jpg")
        save_image(labels, dst / "labels" / f"{name}.png")
        items[name] = {"source": path.name, "frame_xys": [frame.x0, frame.y0, frame.side],
                       "image_hw": list(image.shape[:2])}
        written.append(name)
    if not written:
        raise ds.DatasetError(f"no photo in {src} could be labelled: " + "; ".join(skipped[:3]))
    manifest = {"format": 1, "teacher": model.name, "label_classes": 5, "classes": list(CLASSES),
                "framing": "parser crop", "frame_scale": PARSE_FRAME_SCALE, "size": size,
                "ignore": ds.IGNORE, "items": items, "skipped": skipped}
    (dst / ds.LABELS_MANIFEST).write_text(json.dumps(manifest, indent=1))
    return LabelReport(dst, written, skipped)
