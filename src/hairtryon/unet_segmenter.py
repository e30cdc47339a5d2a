"""The paper's own segmenter: a U-Net (``models/unet.py``) behind the :class:`~hairtryon.segmentation.Segmenter`
interface, loaded from a checkpoint written by ``hairtryon train-segmenter``.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``)::

    {"kind": "hairtryon-unet-segmenter", "format": 1,
     "config": {"classes": [5 names], "input_size": int, "width": int, "depth": int, "num_classes": 5},
     "model": state_dict, ...training state (step, best_miou, optimizer, ...)}

so ``UNetSegmenter.from_checkpoint(path)`` (``--segmenter unet:PATH``) needs no other flag.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from .errors import HairTryOnError
from .segmentation import CLASSES

CHECKPOINT_KIND = "hairtryon-unet-segmenter"
CHECKPOINT_FORMAT = 1


class CheckpointError(HairTryOnError):
    """A segmenter checkpoint is missing, unreadable, or not a hairtryon U-Net checkpoint."""


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and returned."""
    import torch

    device = (device or "auto").strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise HairTryOnError(f"unknown device '{device}': use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HairTryOnError(f"device '{device}' was asked for but CUDA is not available here.")
    return device


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device) -> str:
    """``auto`` -> ``bf16`` (autocast, channels-last) where the device runs bfloat16 natively
    (measured on this 2-core CPU: a 256² width-16 U-Net 13 ms instead of 36 ms, a training step
    2x faster), else ``fp32``."""
    import torch

    if precision not in PRECISIONS:
        raise HairTryOnError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    try:
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def autocast(device, precision: str):
    """A torch autocast context: bfloat16 compute when ``precision`` is ``bf16``."""
    import torch

    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_config(input_size: int, width: int, depth: int = 4) -> Dict[str, Any]:
    """A checkpoint's config (plain ints and strings)."""
    multiple = 2 ** int(depth)
    if input_size < multiple or input_size % multiple:
        raise HairTryOnError(f"input size {input_size} must be a positive multiple of {multiple} for depth {depth}.")
    return {"arch": "unet", "classes": list(CLASSES), "num_classes": len(CLASSES),
            "input_size": int(input_size), "width": int(width), "depth": int(depth)}


def build_net(config: Dict[str, Any]):
    """A fresh :class:`~hairtryon.models.unet.UNet` for ``config``."""
    from .models.unet import UNet

    return UNet(int(config["num_classes"]), int(config["width"]), int(config["depth"]))


def save_checkpoint(path: Union[str, Path], net, config: Dict[str, Any], **state: Any) -> Path:
    """Write ``net``'s weights, ``config`` and any extra training ``state`` (tensors, numbers,
    strings, lists, dicts) atomically to ``path``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"kind": CHECKPOINT_KIND, "format": CHECKPOINT_FORMAT, "config": dict(config),
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """A checkpoint dict from ``path``, checked to be a hairtryon U-Net checkpoint of the 5
    classes. Raises :class:`CheckpointError` with one sentence otherwise."""
    import torch

    path = Path(path).expanduser()
    if not str(path) or not path.is_file():
        raise CheckpointError(f"segmenter checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"cannot read {path} as a segmenter checkpoint ({first[:200]}).") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a hairtryon U-Net checkpoint (write one with "
                              f"`hairtryon train-segmenter`).")
    if int(ckpt.get("format", 0)) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} was written by a newer hairtryon (checkpoint format {ckpt['format']}).")
    config = ckpt.get("config") or {}
    if list(config.get("classes", [])) != list(CLASSES):
        raise CheckpointError(f"{path} predicts classes {config.get('classes')}, not hairtryon's {list(CLASSES)}.")
    return ckpt


class UNetSegmenter:
    """A trained U-Net as a :class:`~hairtryon.segmentation.Segmenter`.

    ``predict(crop)``: (S, S, 3) uint8 RGB, S = ``input_size`` -> (5, S, S) float32 softmax
    probabilities. ``precision``: see :func:`resolve_precision`. Thread-safe (calls are serialised).
    """

    def __init__(self, net, config: Dict[str, Any], device: str = "cpu", path: Optional[Path] = None,
                 precision: str = "auto"):
        import torch

        self.config = dict(config)
        self.input_size = int(config["input_size"])
        self.path = path
        self.name = f"unet:{path.name}" if path is not None else "unet"
        self.device = torch.device(resolve_device(device))
        self.precision = resolve_precision(precision, self.device)
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: str = "cpu", precision: str = "auto") -> "UNetSegmenter":
        """Load a checkpoint written by ``hairtryon train-segmenter``; its config says everything."""
        ckpt = load_checkpoint(path)
        net = build_net(ckpt["config"])
        try:
            net.load_state_dict(ckpt["model"], strict=True)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: the weights do not fit the U-Net its config describes "
                                  f"({str(exc).splitlines()[0][:160]}).") from None
        return cls(net, ckpt["config"], device=device, path=Path(path), precision=precision)

    def predict(self, crop: np.ndarray) -> np.ndarray:
        import torch

        if crop.shape != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected a ({self.input_size}, {self.input_size}, 3) crop, got {crop.shape}")
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0)
        x = x.to(self.device, torch.float32).div_(255.0).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode(), autocast(self.device, self.precision):
            logits = self.net(x)[0].float()
        return torch.softmax(logits, dim=0).cpu().numpy()
