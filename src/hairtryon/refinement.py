"""Stage 7 of the method (paper 3.3.2): SDEdit refinement with a face diffusion model.

The try-on image is noised to level ``t0`` and denoised by an unconditional face diffusion
model (DDPM CelebA-HQ 256², ``google/ddpm-ema-celebahq-256``); after every step the *kept*
region is replaced by the input noised to that step's level (the rule of the SDEdit code the
paper used), so only the edited region is regenerated and the kept region ends equal to the
input.

- :func:`load_diffusion_model` (module :mod:`hairtryon.diffusion`, re-exported here) gives a
  :class:`DiffusionModel`: a diffusers ``UNet2DModel`` and its scheduler config, from the
  Hugging Face Hub cache or a local diffusers folder.
- :func:`sdedit` runs the edit at the model's resolution with any *denoiser*: a callable
  ``(x_t, t) -> eps`` (see :class:`Denoiser`), so tests can plug an exact oracle.
- :func:`edit_mask`, :func:`paste_back` and :func:`refine` build the kept region from the
  semantic map and put the 256² result back into a larger image, exactly outside the edit.

Samplers: ``ddpm`` = the paper's ancestral sampling, one UNet call per level from ``t0`` down
to 0, the whole edit repeated ``repeats`` times; ``ddim`` = deterministic DDIM (eta 0) in at
most ``steps`` UNet calls spanning the same levels. Update steps are diffusers' schedulers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import cv2
import numpy as np

from .diffusion import (DDPM_DEFAULTS, DEFAULT_MODEL, REFINE_MODES, Denoiser, DiffusionModel,  # noqa: F401
                        load_diffusion_model, load_for_refine)
from .errors import HairTryOnError
from .framing import disk
from .segmentation import BACKGROUND, EARS, FACE, NECK

SAMPLERS = ("ddpm", "ddim")


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
    keep = cv2.erode(body.astype(np.uint8), disk(erode_px)).astype(bool) if erode_px > 0 else body
    if mode == "paper":
        return keep
    if mode != "tight":
        raise HairTryOnError(f"unknown edit-mask mode '{mode}': use tight or paper.")
    near = cv2.dilate(regenerate.astype(np.uint8), disk(band_px)).astype(bool) if band_px > 0 else regenerate
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
