"""What a `hairtryon swap` process loads: only what the command needs.

The face parser runs from its ONNX export in OpenCV (no torch), `--refine auto` without a
cached diffusion model neither imports diffusers nor probes the Hub, and MediaPipe comes without
matplotlib. Cost: about 25 s on 2 cores (two swaps in subprocesses, one ONNX export).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, socket, sys
probes = []
real = socket.create_connection
def spy(address, *a, **k):
    probes.append(str(address))
    return real(address, *a, **k)
socket.create_connection = spy
from hairtryon.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(m for m in ("torch", "diffusers", "matplotlib", "sounddevice")
                                                if m in sys.modules), "probes": probes}))
"""


@pytest.mark.parametrize("refine", ["classic", "auto"])
def test_a_swap_process_loads_only_what_it_needs(tmp_path, loho_dir, refine):
    from hairtryon import bisenet_onnx

    if bisenet_onnx.load() is None:
        pytest.skip("the ONNX face parser cannot be made here (no onnx package)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HOME=str(tmp_path / "hf"))
    env.pop("HAIRTRYON_OFFLINE", None)
    env.pop("HF_HUB_OFFLINE", None)  # online: auto still must not probe for a model it does not have
    t, s = loho_dir / "images" / "01012.jpg", loho_dir / "images" / "00018.jpg"
    p = subprocess.run([sys.executable, "-c", PROBE, "swap", str(t), str(s), "-o", str(tmp_path / "o.png"),
                        "--refine", refine], capture_output=True, text=True, env=env, timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, p.stderr
    assert out["modules"] == [], out  # no torch, no diffusers, no matplotlib, no sounddevice
    assert out["probes"] == [], out  # no connection to the Hub
    if refine == "auto":
        assert p.stderr.count("hairtryon: warning: SDEdit refinement skipped") == 1
        assert "--refine auto does not download it" in p.stderr


def test_onnx_parser_matches_the_torch_parser(loho_dir):
    from hairtryon import bisenet_onnx
    from hairtryon.images import load_image
    from hairtryon.segmentation import BiSeNetSegmenter, labels_from_probs, parse

    dnn = bisenet_onnx.load()
    if dnn is None:
        pytest.skip("the ONNX face parser cannot be made here (no onnx package)")
    torch_parser = BiSeNetSegmenter()
    for name in ("00148.jpg", "46826.jpg"):
        image = load_image(loho_dir / "images" / name)
        a, b = parse(image, dnn).probs, parse(image, torch_parser).probs
        assert np.abs(a - b).max() < 1e-3
        assert (labels_from_probs(a) == labels_from_probs(b)).mean() > 0.999


def test_onnx_export_is_checked_before_use(tmp_path, monkeypatch):
    from hairtryon import bisenet_onnx, weights

    pth = weights.BISENET.path
    if not pth.is_file():
        pytest.skip("face-parser weights not fetched")
    pytest.importorskip("onnx")
    monkeypatch.setenv("HAIRTRYON_CACHE", str(tmp_path))
    shutil.copy(pth, tmp_path / pth.name)
    assert bisenet_onnx.load(allow_export=False) is None  # nothing exported yet
    dnn = bisenet_onnx.load()
    onnx, record = bisenet_onnx.paths()
    meta = json.loads(record.read_text())
    assert meta["source_sha256"] == weights.BISENET.sha256 and meta["onnx_sha256"] == weights.sha256_of(onnx)
    assert dnn.predict(np.zeros((512, 512, 3), np.uint8)).shape == (5, 512, 512)
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a damaged export is never loaded
    onnx.write_bytes(bytes(data))
    assert bisenet_onnx.load(allow_export=False) is None
    monkeypatch.setenv("HAIRTRYON_PARSER_BACKEND", "torch")
    assert bisenet_onnx.load() is None
