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
