"""Shared fixtures: real photos and real models.

Test portraits are read in place from ``../shared/faces`` (override with HAIRTRYON_TEST_FACES);
tests that need them skip with a clear reason when the folder is absent (a user's clone).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


def faces_root() -> Path:
    return Path(os.environ.get("HAIRTRYON_TEST_FACES", ROOT.parent / "shared" / "faces"))


def _need_faces(sub: str) -> Path:
    p = faces_root() / sub
    if not p.is_dir():
        pytest.skip(f"test portraits not found at {p} (set HAIRTRYON_TEST_FACES to ../shared/faces)")
    return p


@pytest.fixture(scope="session")
def maskgan_dir() -> Path:
    return _need_faces("maskgan")


@pytest.fixture(scope="session")
def loho_dir() -> Path:
    return _need_faces("loho")


@pytest.fixture(scope="session")
def ctrlhair_dir() -> Path:
    return _need_faces("ctrlhair")


def all_portraits():
    """Every portrait path under the shared faces folder (empty when absent)."""
    root = faces_root()
    paths = sorted((root / "maskgan").glob("*.jpg")) + sorted((root / "loho" / "images").glob("*.jpg")) \
        + sorted((root / "ctrlhair").glob("*.png"))
    return paths


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    from hairtryon.images import load_image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return load_image(f.name if hasattr(f, "name") else f)


@pytest.fixture(scope="session")
def segmenter():
    from hairtryon.segmentation import get_segmenter

    return get_segmenter("bisenet")


@pytest.fixture(scope="session")
def landmarker():
    from hairtryon.landmarks import default_landmarker

    return default_landmarker()


# ------------------------------------------------------------------ tiny diffusion models
def tiny_unet():
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(32, 64), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


def tiny_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.03, beta_schedule="linear")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """The same tiny model saved twice: at a folder's root, and as a DDPMPipeline (unet/, scheduler/)."""
    from diffusers import DDPMPipeline

    root = tmp_path_factory.mktemp("tiny")
    unet, sched = tiny_unet(), tiny_scheduler()
    unet.save_pretrained(root / "flat")
    sched.save_pretrained(root / "flat")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(root / "pipe")
    return unet, root / "flat", root / "pipe"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import time by huggingface_hub
    monkeypatch.setenv("HAIRTRYON_OFFLINE", "1")
    # models loaded from another test's cache are not in this one (the process-wide cache is keyed
    # by model id, device and dtype: on a CPU without bf16 'auto' and fp32 share a key)
    from hairtryon import diffusion

    monkeypatch.setattr(diffusion, "_MODELS", {})
    return cache


def fake_hub_cache(cache, repo_id, files):
    """A snapshot laid out like huggingface_hub's cache (refs/main -> snapshots/<commit>/...)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for rel, src in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes(src.read_bytes())
    return snap
