"""Stage 7 of the method (paper 3.3.2): SDEdit refinement with a face diffusion model.

The try-on image is noised to level ``t0`` and denoised by an unconditional face diffusion
model (DDPM CelebA-HQ 256², ``google/ddpm-ema-celebahq-256``); after every step the *kept*
region is replaced by the input noised to that step's level (the rule of the SDEdit code the
paper used), so only the edited region is regenerated and the kept region ends equal to the
input.

- :func:`load_diffusion_model` gives a :class:`DiffusionModel` (a diffusers ``UNet2DModel``
  and its scheduler config), from the Hugging Face Hub cache or a local diffusers folder.
- :func:`sdedit` runs the edit at the model's resolution with any *denoiser*: a callable
  ``(x_t, t) -> eps`` (see :class:`Denoiser`), so tests can plug an exact oracle.
- :func:`edit_mask`, :func:`paste_back` and :func:`refine` build the kept region from the
  semantic map and put the 256² result back into a larger image, exactly outside the edit.

Samplers: ``ddpm`` = the paper's ancestral sampling, one UNet call per level from ``t0`` down
to 0, the whole edit repeated ``repeats`` times; ``ddim`` = deterministic DDIM (eta 0) in at
most ``steps`` UNet calls spanning the same levels. Update steps are diffusers' schedulers.
"""
from __future__ import annotations

import json
import math
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import cv2
import numpy as np

from .errors import HairTryOnError, WeightsError
from .segmentation import BACKGROUND, EARS, FACE, NECK

DEFAULT_MODEL = "google/ddpm-ema-celebahq-256"
# The DDPM CelebA-HQ 256² schedule, used when a model folder has no scheduler config.
DDPM_DEFAULTS: Dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
    "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
}
SAMPLERS = ("ddpm", "ddim")
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
        why = ("offline mode is on (HAIRTRYON_OFFLINE or HF_HUB_OFFLINE)" if offline
               else "the Hugging Face Hub cannot be reached")
        return WeightsError(f"{what} of the diffusion model {repo_id} {'is' if what == 'the model' else 'are'} "
                            f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: {hint}.")

    for sub in ("", "unet/"):
        config = get(sub + "config.json")
        if config is not None and _is_unet_config(config):
            break
    else:
        if offline or unreachable:
            raise not_cached("the model")
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
            raise not_cached("the weights")
        raise WeightsError(f"{repo_id} on the Hugging Face Hub has no {sub}{_WEIGHT_FILES[0]} or .bin: "
                           "pass another --diffusion-model.")
    for name in (sub + "scheduler_config.json", "scheduler/scheduler_config.json"):
        if get(name) is not None:
            break
    return config.parent.parent if sub else config.parent


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


# ------------------------------------------------------------------------------------- samplers
def _ddpm_scheduler(config: Dict[str, Any]):
    """A diffusers DDPMScheduler from any compatible scheduler config (a DDIM one too)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config)  # drops, silently, keys of compatible schedulers


def _ddim_stride(t0: int, steps: int, total: int) -> int:
    """Smallest stride k >= ceil(t0 / steps) that diffusers' DDIM can step with (k = T // (T // k))."""
    k = max(1, math.ceil(t0 / max(1, steps)))
    while total // (total // k) != k:
        k += 1
    return k


def sdedit_tensor(x0, keep, denoiser: Callable, *, scheduler_config: Optional[Dict[str, Any]] = None,
                  sampler: str = "ddim", t0: int = 500, steps: int = 25, repeats: int = 1,
                  generator=None, progress: bool = True):
    """SDEdit on tensors. ``x0``: (N, 3, S, S) float32 in [-1, 1]; ``keep``: None or (N|1, 1, S, S)
    float32 in [0, 1] (1 = kept). Returns (N, 3, S, S) float32: keep * x0 + (1 - keep) * the
    regenerated image (exactly x0 where keep == 1). See :func:`sdedit`."""
    import torch
    from diffusers import DDIMScheduler
    from tqdm.auto import tqdm

    if sampler not in SAMPLERS:
        raise HairTryOnError(f"unknown sampler '{sampler}': use {' or '.join(SAMPLERS)}.")
    config = scheduler_config or getattr(denoiser, "scheduler_config", None) or DDPM_DEFAULTS
    ddpm = _ddpm_scheduler(config)
    config = ddpm.config
    total = int(config.num_train_timesteps)
    if not (isinstance(t0, (int, np.integer)) and 1 <= t0 <= total):
        raise HairTryOnError(f"noise level t0 must be an integer from 1 to {total}, got {t0}.")
    if int(repeats) < 1 or int(steps) < 1:
        raise HairTryOnError("--repeats and --steps must be at least 1.")
    device = getattr(denoiser, "device", None) or x0.device
    x0 = x0.to(device, torch.float32)
    keep = None if keep is None else keep.to(device, torch.float32)
    if sampler == "ddpm":
        scheduler = ddpm
        scheduler.set_timesteps(timesteps=list(range(t0 - 1, -1, -1)))
        timesteps = [int(t) for t in scheduler.timesteps]
    else:  # DDIM on the grid t0-1, t0-1-k, ... (diffusers' "leading" spacing shifted by steps_offset)
        k = _ddim_stride(t0, steps, total)
        scheduler = DDIMScheduler.from_config(config, timestep_spacing="leading", steps_offset=(t0 - 1) % k,
                                              set_alpha_to_one=True)
        scheduler.set_timesteps(total // k)
        timesteps = [int(t) for t in scheduler.timesteps if t <= t0 - 1]
    gen = generator
    if gen is None:
        gen = torch.Generator()
        gen.seed()  # a fresh random seed, without touching torch's global generator

    def noised(noise, t: int):
        return x0 if t < 0 else ddpm.add_noise(x0, noise, torch.tensor([t]))

    bar = tqdm(total=repeats * len(timesteps), desc=f"SDEdit {sampler} t0={t0}", unit="step",
               disable=not progress, leave=False)
    for _ in range(int(repeats)):
        noise = torch.randn(x0.shape, generator=gen).to(device)
        x = noised(noise, timesteps[0])
        for i, t in enumerate(timesteps):
            eps = denoiser(x, t).to(device, torch.float32)
            if sampler == "ddpm":
                x = scheduler.step(eps, t, x, generator=gen).prev_sample
            else:
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            if keep is not None:  # the paper's rule: kept region = input noised to the new level (same draw)
                prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                x = noised(noise, prev) * keep + x * (1.0 - keep)
            bar.update(1)
        x0 = x  # the last step put the input (level -1) in the kept region; the next repeat starts here
    bar.close()
    return x0.clamp(-1.0, 1.0)


def sdedit(image: np.ndarray, keep: Optional[np.ndarray], denoiser: Callable, *, sampler: str = "ddim",
           t0: int = 500, steps: int = 25, repeats: int = 1, seed: Optional[int] = None, progress: bool = True,
           scheduler_config: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """SDEdit one image at the denoiser's resolution.

    ``image``: (S, S, 3) uint8 RGB. ``keep``: (S, S) bool or float32 in [0, 1], 1 = kept (None:
    edit everything). ``denoiser``: a :class:`DiffusionModel` or any ``(x_t, t) -> eps`` callable
    (its schedule from ``scheduler_config``, else its own ``scheduler_config``, else the DDPM
    CelebA-HQ one). ``sampler``: ``ddpm`` (the paper's: every level from t0 down, ``repeats`` times,
    each repeat starting from the previous result) or ``ddim`` (at most ``steps`` levels).
    ``t0``: noise level 1..1000 (strength t0/1000). ``seed``: same seed, same output.
    Returns (S, S, 3) uint8; pixels with keep == 1 are the input's, bit for bit.
    """
    import torch

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (S, S, 3) uint8, got {image.shape} {image.dtype}")
    x0 = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    k = None
    if keep is not None:
        keep = np.clip(np.asarray(keep, np.float32), 0.0, 1.0)
        if keep.shape != image.shape[:2]:
            raise ValueError(f"keep must be {image.shape[:2]}, got {keep.shape}")
        k = torch.from_numpy(keep)[None, None]
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = sdedit_tensor(x0, k, denoiser, scheduler_config=scheduler_config, sampler=sampler, t0=t0,
                        steps=steps, repeats=repeats, generator=gen, progress=progress)
    result = ((out[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return result if keep is None else np.where(keep[..., None] >= 1.0, image, result)


# ------------------------------------------------------------------------- masks and paste-back
def _disk(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def edit_mask(labels_intended: np.ndarray, regenerate: np.ndarray, mode: str = "tight",
              erode_px: Optional[int] = None, band_px: Optional[int] = None) -> np.ndarray:
    """The kept region of the SDEdit mask (paper 3.3.2: white = kept).

    ``labels_intended``: (H, W) uint8 class ids of the mapping mask (0 background, 1 hair,
    2 face, 3 ears, 4 neck+clothes). ``regenerate``: (H, W) bool, the pixels the try-on changed
    (new hair, filled holes, artifacts). ``mode``: ``paper`` keeps the eroded face, ears and
    neck+clothes and regenerates everything else (the background too); ``tight`` (default) also
    keeps background farther than ``band_px`` from ``regenerate``. ``erode_px`` / ``band_px``
    default to 1/50 and 1/32 of the shorter side (5 and 8 px at 256²).
    Returns (H, W) bool, True = kept.
    """
    labels = np.asarray(labels_intended)
    regenerate = np.asarray(regenerate, bool)
    if labels.shape != regenerate.shape:
        raise ValueError(f"labels {labels.shape} and regenerate {regenerate.shape} differ in size")
    side = min(labels.shape)
    erode_px = max(1, round(side / 50)) if erode_px is None else int(erode_px)
    band_px = max(1, round(side / 32)) if band_px is None else int(band_px)
    body = np.isin(labels, (FACE, EARS, NECK)) & ~regenerate
    keep = cv2.erode(body.astype(np.uint8), _disk(erode_px)).astype(bool) if erode_px > 0 else body
    if mode == "paper":
        return keep
    if mode != "tight":
        raise HairTryOnError(f"unknown edit-mask mode '{mode}': use tight or paper.")
    near = cv2.dilate(regenerate.astype(np.uint8), _disk(band_px)).astype(bool) if band_px > 0 else regenerate
    return keep | ((labels == BACKGROUND) & ~near)


def paste_back(base: np.ndarray, refined: np.ndarray, edit_region: np.ndarray, feather_px: int = 4) -> np.ndarray:
    """``refined`` pasted into ``base`` inside ``edit_region`` only.

    ``base``: (H, W, 3) uint8; ``refined``: (h, w, 3) uint8, resized (bicubic) to (H, W) when it
    differs; ``edit_region``: (H, W) bool. The blend weight rises from 0 at the region's border to
    1 at ``feather_px`` inside it, so every pixel outside the region equals ``base`` exactly.
    Returns (H, W, 3) uint8.
    """
    base = np.asarray(base)
    region = np.asarray(edit_region, bool)
    h, w = base.shape[:2]
    if region.shape != (h, w):
        raise ValueError(f"edit_region must be {(h, w)}, got {region.shape}")
    if refined.shape[:2] != (h, w):
        refined = cv2.resize(refined, (w, h), interpolation=cv2.INTER_CUBIC)
    if feather_px > 0:
        dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
        alpha = np.clip(dist / float(feather_px), 0.0, 1.0)
    else:
        alpha = region.astype(np.float32)
    a = alpha[..., None]
    blended = (a * refined + (1.0 - a) * base).round().clip(0, 255).astype(np.uint8)
    return np.where(region[..., None], blended, base)


def refine(image: np.ndarray, keep: np.ndarray, denoiser: Callable, *, sample_size: Optional[int] = None,
           feather_px: Optional[int] = None, **sdedit_kwargs) -> np.ndarray:
    """SDEdit a square crop of any size: resized to the model's S², edited, and only the edit
    region (``~keep``) pasted back, feathered, at the crop's own resolution.

    ``image``: (H, H, 3) uint8 RGB (a head crop); ``keep``: (H, H) bool, True = kept (see
    :func:`edit_mask`). ``sample_size``: S (default ``denoiser.sample_size``, else 256).
    ``feather_px`` (default H/64) and the :func:`sdedit` keywords. Returns (H, H, 3) uint8 equal
    to ``image`` wherever ``keep`` is True.
    """
    keep = np.asarray(keep, bool)
    size = int(sample_size or getattr(denoiser, "sample_size", 256))
    h, w = image.shape[:2]
    small = image if (h, w) == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    keep_small = cv2.resize(keep.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    out = sdedit(small, keep_small, denoiser, **sdedit_kwargs)
    feather = max(1, round(min(h, w) / 64)) if feather_px is None else int(feather_px)
    return paste_back(image, out, ~keep, feather)
