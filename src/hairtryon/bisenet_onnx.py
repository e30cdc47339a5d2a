"""The BiSeNet face parser without torch at run time: exported once to ONNX, run by OpenCV's DNN
module.

Why: importing torch and loading the checkpoint take about 1.2 s of every `hairtryon` process,
and OpenCV runs this network about 4 times faster than torch on the CPUs we measured (0.22 s
against 0.95 s for a 512² crop on 2 cores), with the same output (largest difference of the
part probabilities about 1e-5).

The export runs once, from the verified checkpoint (:mod:`hairtryon.weights`), when the parser
is first needed (or by ``hairtryon weights fetch bisenet``); it needs torch and the ``onnx``
package. The ONNX file lies next to the checkpoint in the weights cache with a small JSON
record: the checkpoint's sha256 it was made from and its own sha256, checked on every load. When
the export cannot be made, :func:`load` returns None and the torch parser is used.
``HAIRTRYON_PARSER_BACKEND=torch`` forces the torch parser.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import numpy as np

OPSET = 17
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def paths():
    """(the ONNX file, its JSON record) in the weights cache."""
    from . import weights

    onnx = weights.BISENET.path.with_suffix(".onnx")
    return onnx, onnx.with_name(onnx.name + ".json")


def _valid(onnx: Path, record: Path) -> bool:
    from . import weights

    try:
        meta = json.loads(record.read_text())
        return (meta.get("source_sha256") == weights.BISENET.sha256 and meta.get("format") == 3 and onnx.is_file()
                and meta.get("onnx_sha256") == weights.sha256_of(onnx))
    except (OSError, ValueError, AttributeError):
        return False


def export(checkpoint: Optional[Path] = None) -> Path:
    """Export the verified BiSeNet checkpoint to ONNX (19-part logits, 1x3x512x512 input) in
    the weights cache, atomically; returns its path. Needs torch and onnx."""
    import torch

    from . import weights
    from .models.bisenet import BiSeNet

    checkpoint = checkpoint or weights.ensure("bisenet")
    net = BiSeNet(19)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    net.eval()

    onnx, record = paths()
    onnx.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{onnx.name}.", suffix=".part", dir=onnx.parent)
    os.close(fd)
    try:
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(net, torch.zeros(1, 3, 512, 512), tmp, opset_version=OPSET,  # (1, 19, S, S) logits
                              input_names=["image"], output_names=["logits"], dynamo=False)
        meta = {"source": weights.BISENET.filename, "source_sha256": weights.BISENET.sha256,
                "onnx_sha256": weights.sha256_of(Path(tmp)), "exporter": f"torch {torch.__version__}, opset {OPSET}",
                "output": "logits of the 19 CelebAMask-HQ parts, BiSeNet order", "format": 3}
        os.chmod(tmp, 0o644)
        os.replace(tmp, onnx)
        record.write_text(json.dumps(meta, indent=1))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return onnx


def load(allow_export: bool = True) -> Optional["BiSeNetDNN"]:
    """The DNN parser, exporting it first if needed; None when it cannot be had (no onnx
    package, an export failure, HAIRTRYON_PARSER_BACKEND=torch)."""
    if os.environ.get("HAIRTRYON_PARSER_BACKEND", "auto").strip().lower() == "torch":
        return None
    onnx, record = paths()
    if not _valid(onnx, record):
        if not allow_export:
            return None
        try:
            import onnx as _  # noqa: F401  (the exporter needs it)
        except ImportError:
            return None
        from . import weights

        checkpoint = weights.ensure("bisenet")  # missing or corrupt: the same error as the torch parser's
        try:
            print("hairtryon: preparing the face parser for fast start-up (once)", file=sys.stderr)
            export(checkpoint)
        except Exception:  # an exporter that cannot: the torch parser does the job
            return None
        if not _valid(onnx, record):
            return None
    return BiSeNetDNN(onnx)


class BiSeNetDNN:
    """The pretrained CelebAMask-HQ BiSeNet (19 parts) run by OpenCV's DNN module, its parts
    summed into the 5 classes; the same :class:`~hairtryon.segmentation.Segmenter` as the torch
    :class:`~hairtryon.segmentation.BiSeNetSegmenter`."""

    name = "bisenet"
    input_size = 512

    def __init__(self, path: Path):
        import cv2

        from .segmentation import BISENET_PARTS, PART_TO_CLASS

        self.net = cv2.dnn.readNetFromONNX(str(path))
        self.groups = np.zeros((5, 19), np.float32)
        for i, part in enumerate(BISENET_PARTS):
            self.groups[PART_TO_CLASS[part], i] = 1.0
        self._lock = threading.Lock()

    def predict_19(self, crop: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 RGB, S = 512 -> (19, S, S) float32 part probabilities."""
        x = ((crop.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
        with self._lock:
            self.net.setInput(np.ascontiguousarray(x))
            logits = self.net.forward()
        e = logits.reshape(logits.shape[-3:])  # (1, 19, S, S) -> (19, S, S); the softmax in place
        e -= e.max(axis=0, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=0, keepdims=True)
        return e

    def predict(self, crop: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 RGB, S = 512 -> (5, S, S) float32 class probabilities."""
        return self.predict_parts(crop)[0]

    def predict_parts(self, crop: np.ndarray):
        """(5, S, S) class probabilities and the finer parts {hat, neck_skin, cloth}: (S, S) each
        (see :attr:`hairtryon.segmentation.SemanticMap.parts`)."""
        from .segmentation import BISENET_PARTS

        p19 = self.predict_19(crop)
        parts = {name: np.ascontiguousarray(p19[BISENET_PARTS.index(part)])
                 for name, part in (("hat", "hat"), ("neck_skin", "neck"), ("cloth", "cloth"))}
        return np.tensordot(self.groups, p19, axes=1).astype(np.float32), parts
