"""The face diffusion model of SDEdit (paper 3.3.2): loading, caching, precision.

:func:`load_diffusion_model` gives a :class:`DiffusionModel` (a diffusers ``UNet2DModel`` and
the scheduler config it was trained with) from a Hugging Face Hub id (default
``google/ddpm-ema-celebahq-256``, the DDPM CelebA-HQ 256² model SDEdit used), downloaded once
into huggingface_hub's cache, or from a local diffusers folder (UNet at its root or in
``unet/``). Offline (HAIRTRYON_OFFLINE=1 or HF_HUB_OFFLINE=1) nothing is downloaded. Every
failure a user can cause is a :class:`WeightsError` that says how to place the model.
:func:`load_for_refine` gives ``--refine auto|sdedit|off`` its meaning.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Tuple

from .errors import HairTryOnError, WeightsError

DEFAULT_MODEL = "google/ddpm-ema-celebahq-256"
# The DDPM CelebA-HQ 256² schedule, used when a model folder has no scheduler config.
DDPM_DEFAULTS: Dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
    "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
}
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_PLACE_HINT = ("run `hf download {repo}` (huggingface_hub's CLI; `huggingface-cli download` in older "
               "versions) on a connected machine and copy its Hugging Face cache here, or pass "
               "--diffusion-model /path/to/a/diffusers/folder")


class Denoiser(Protocol):
    """A noise predictor: ``x_t`` (N, 3, S, S) float32 tensor in the [-1, 1] image scale and an
    integer level ``t`` in [0, T) -> predicted noise, (N, 3, S, S) float32. It may carry
    ``device`` (where inputs should live) and ``scheduler_config`` (its diffusion schedule)."""

    def __call__(self, x_t, t: int): ...


# ------------------------------------------------------------------------------------- the model
class DiffusionModel:
    """A diffusers ``UNet2DModel`` ready for inference, with the scheduler config it was trained
    with. ``sample_size``: the side S of the square images it works on. Call it (or
    :meth:`predict_noise`) as a :class:`Denoiser`."""

    def __init__(self, unet, scheduler_config: Dict[str, Any], device, dtype, source: str):
        import torch

        self.unet = unet
        self.scheduler_config = dict(scheduler_config)
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.sample_size = int(unet.config.sample_size if isinstance(unet.config.sample_size, int)
                               else unet.config.sample_size[0])
        self._lock = threading.Lock()

    @property
    def info(self) -> Dict[str, str]:
        """What was loaded, for a result's metadata: model, device, precision."""
        return {"model": self.source, "device": str(self.device), "precision": str(self.dtype).replace("torch.", "")}

    def predict_noise(self, x_t, t: int):
        """(N, 3, S, S) float32 tensor (any device) at level ``t`` -> (N, 3, S, S) float32 noise,
        on :attr:`device`. The UNet runs in :attr:`dtype`; inputs and outputs stay float32."""
        import torch

        x = x_t.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        steps = torch.full((x.shape[0],), int(t), dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            return self.unet(x, steps).sample.float()

    __call__ = predict_noise


def _bf16_is_fast() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    import torch

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def _pick_device_dtype(device: str, precision: str):
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HairTryOnError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise HairTryOnError(f"unknown device '{device}': use auto, cpu or cuda.")
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    precision = (precision or "auto").lower()
    if precision == "auto":
        if device == "cpu":
            return device, torch.bfloat16 if _bf16_is_fast() else torch.float32
        return device, torch.float16
    if precision not in names:
        raise HairTryOnError(f"unknown precision '{precision}': use auto, fp32, bf16 or fp16.")
    if device == "cpu" and names[precision] is torch.float16:
        raise HairTryOnError("fp16 is for CUDA GPUs: use --precision bf16 or fp32 on the CPU.")
    return device, names[precision]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_unet_config(path: Path) -> bool:
    cfg = _read_json(path) if path.is_file() else None
    return isinstance(cfg, dict) and cfg.get("_class_name", "UNet2DModel") == "UNet2DModel" \
        and "block_out_channels" in cfg


def _local_layout(folder: Path) -> Tuple[Path, Dict[str, Any]]:
    """(UNet folder, scheduler config) of a diffusers folder: the UNet at its root or in unet/."""
    not_unet = WeightsError(
        f"{folder} is not a diffusers UNet2DModel folder: it needs config.json and {_WEIGHT_FILES[0]} "
        f"(or .bin) at its root or in unet/, as UNet2DModel.save_pretrained or a DDPMPipeline writes them.")
    for unet_dir in (folder, folder / "unet"):
        if _is_unet_config(unet_dir / "config.json"):
            break
    else:
        raise not_unet
    if not any((unet_dir / w).is_file() for w in _WEIGHT_FILES):
        raise not_unet
    sched: Dict[str, Any] = dict(DDPM_DEFAULTS)
    for p in (unet_dir / "scheduler_config.json", folder / "scheduler_config.json",
              folder / "scheduler" / "scheduler_config.json"):
        cfg = _read_json(p) if p.is_file() else None
        if isinstance(cfg, dict):
            sched = cfg
            break
    return unet_dir, sched


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub endpoint answers a TCP connection within ``timeout`` seconds
    (checked before downloading: huggingface_hub itself retries unreachable hosts for a minute)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _hub_download(repo_id: str) -> Path:
    """Fetch the UNet files of a Hub repository (root or unet/ layout, safetensors preferred,
    plus its scheduler config) into huggingface_hub's cache; return the snapshot folder."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    from .weights import is_offline

    offline = is_offline()
    hint = _PLACE_HINT.format(repo=repo_id)
    unreachable = []  # set when the Hub could not be reached (online mode)
    if not offline and not hub_reachable():
        offline, unreachable = True, ["the Hub"]  # use the cache alone, and say why

    def get(filename: str) -> Optional[Path]:
        """The cached file, downloaded if needed; None when the repository has no such file or
        (offline, unreachable) the cache lacks it."""
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
        except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
            raise WeightsError(f"the Hugging Face Hub has no public model '{repo_id}': check --diffusion-model, "
                               "or pass a local diffusers folder.") from None
        except HFValidationError:
            raise WeightsError(f"'{repo_id}' is neither an existing folder nor a valid Hugging Face model id: "
                               "pass owner/name or a local diffusers folder to --diffusion-model.") from None
        except EntryNotFoundError:
            return None
        except LocalEntryNotFoundError:
            if not offline:
                unreachable.append(filename)
            return None
        except OSError as exc:  # network errors that huggingface_hub does not wrap, disk full
            raise WeightsError(f"could not fetch {filename} of {repo_id} ({exc.__class__.__name__}): {hint}.") from None

    def not_cached(what: str) -> WeightsError:
        why = ("the Hugging Face Hub cannot be reached" if unreachable
               else "offline mode is on (HAIRTRYON_OFFLINE or HF_HUB_OFFLINE)")
        verb = "are" if what.startswith("the weights") else "is"
        return WeightsError(f"{what} {repo_id} {verb} not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                            f"and {why}: {hint}.")

    for sub in ("", "unet/"):
        config = get(sub + "config.json")
        if config is not None and _is_unet_config(config):
            break
    else:
        if offline or unreachable:
            raise not_cached("the diffusion model")
        raise WeightsError(f"{repo_id} on the Hugging Face Hub is not a diffusers UNet2DModel "
                           "(no UNet config.json at its root or in unet/): pass another --diffusion-model.")
    cached = {n: isinstance(try_to_load_from_cache(repo_id, sub + n), str) for n in _WEIGHT_FILES}
    if not offline and not any(cached.values()):
        print(f"hairtryon: downloading the diffusion model {repo_id} into the Hugging Face cache "
              f"({constants.HF_HUB_CACHE}), once", file=sys.stderr)
    for name in sorted(_WEIGHT_FILES, key=lambda n: not cached[n]):  # a cached copy first
        if get(sub + name) is not None:
            break
    else:
        if offline or unreachable:
            raise not_cached("the weights of the diffusion model")
        raise WeightsError(f"{repo_id} on the Hugging Face Hub has no {sub}{_WEIGHT_FILES[0]} or .bin: "
                           "pass another --diffusion-model.")
    for name in (sub + "scheduler_config.json", "scheduler/scheduler_config.json"):
        if get(name) is not None:
            break
    return config.parent.parent if sub else config.parent


def in_hub_cache(repo_id: str) -> bool:
    """Whether huggingface_hub's cache holds a snapshot of ``repo_id`` with a UNet config (at its
    root or in unet/). Looks at the cache folders only: no network, no diffusers import."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return any((snap / sub / "config.json").is_file() for snap in snapshots.iterdir() for sub in ("", "unet"))
    except OSError:
        return False


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1 or "\\" in spec or Path(spec).exists()


_MODELS: Dict[tuple, DiffusionModel] = {}
_MODELS_LOCK = threading.Lock()


def load_diffusion_model(model: Optional[str] = None, device: str = "auto", precision: str = "auto") -> DiffusionModel:
    """The diffusion model ``model`` (a Hugging Face Hub id, default :data:`DEFAULT_MODEL`, or a
    local diffusers folder), loaded once per process for each (model, device, precision).

    ``device``: auto (CUDA when present), cpu or cuda. ``precision``: auto (bfloat16 on CPUs with
    native bf16, float32 on other CPUs, float16 on CUDA), fp32, bf16 or fp16 (CUDA only). Hub
    models are downloaded once into huggingface_hub's cache (never when HAIRTRYON_OFFLINE=1 or
    HF_HUB_OFFLINE=1). Every failure a user can cause raises :class:`WeightsError` saying how to
    place the model.
    """
    import torch
    from diffusers import UNet2DModel

    spec = (model or DEFAULT_MODEL).strip()
    device, dtype = _pick_device_dtype(device, precision)
    key = (spec, device, dtype)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if _looks_like_path(spec):
            folder = Path(spec).expanduser()
            if not folder.is_dir():
                raise WeightsError(f"diffusion model folder {folder} does not exist or is not a folder: pass a "
                                   f"diffusers folder or a Hugging Face model id such as {DEFAULT_MODEL}.")
        else:
            folder = _hub_download(spec)
        unet_dir, sched = _local_layout(folder)
        try:
            unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=dtype, low_cpu_mem_usage=False)
        except Exception as exc:  # corrupt or mismatched weights: a file the user placed
            raise WeightsError(f"cannot load the diffusion model from {unet_dir} ({exc.__class__.__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}): place a complete diffusers "
                               "UNet2DModel folder there.") from None
        if unet.config.in_channels != 3 or unet.config.out_channels != 3:
            raise WeightsError(f"{spec} is not an RGB image diffusion model (in/out channels "
                               f"{unet.config.in_channels}/{unet.config.out_channels}, expected 3/3).")
        unet = unet.eval().to(device, memory_format=torch.channels_last)
        _MODELS[key] = DiffusionModel(unet, sched, device, dtype, spec)
        return _MODELS[key]


REFINE_MODES = ("auto", "sdedit", "off")


def load_for_refine(refine: str = "auto", model: Optional[str] = None, device: str = "auto",
                    precision: str = "auto") -> Tuple[Optional[DiffusionModel], Optional[str]]:
    """``--refine`` semantics: ``off`` -> (None, None); ``sdedit`` -> (model, None) or
    :class:`WeightsError` (a Hub model is downloaded when missing); ``auto`` -> (model, None), or
    (None, reason) when the diffusion model cannot be had (not in the cache: ``auto`` never
    downloads, probes the Hub or imports diffusers then; a bad folder or corrupt weights): the
    caller keeps the classic result, prints the reason as one warning line and records it in
    the result's metadata."""
    if refine not in REFINE_MODES:
        raise HairTryOnError(f"unknown --refine '{refine}': use {', '.join(REFINE_MODES)}.")
    if refine == "off":
        return None, None
    if refine == "auto":
        spec = (model or DEFAULT_MODEL).strip()
        if not _looks_like_path(spec) and not in_hub_cache(spec):
            # auto never downloads: without a cached model there is nothing to import or probe
            from huggingface_hub import constants

            from .weights import is_offline

            why = ("offline mode is on (HAIRTRYON_OFFLINE or HF_HUB_OFFLINE)" if is_offline()
                   else "--refine auto does not download it (--refine sdedit does)")
            return None, (f"SDEdit refinement skipped: the diffusion model {spec} is not in the Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}) and {why}: {_PLACE_HINT.format(repo=spec)}.")
    try:
        return load_diffusion_model(model, device=device, precision=precision), None
    except WeightsError as exc:
        if refine == "sdedit":
            raise
        return None, f"SDEdit refinement skipped: {exc}"
