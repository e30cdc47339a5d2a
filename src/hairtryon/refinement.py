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
- :func:`restore_detail` brings the result back at the crop's own resolution: the model's low
  frequencies (its change, upsampled), the input's detail above the model's resolution where it
  is real, and, on rebuilt pixels the model repainted, the grain of real pixels of their class
  (:func:`class_texture`), so nothing comes back blurred next to a sharp face.

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
from .segmentation import BACKGROUND, EARS, FACE, HAIR, NECK

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


def low_pass(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` ((H, W, C) float32) as the model sees it, brought back to (H, W, C): area
    averaging down to ``size``², bicubic up. ``image - low_pass(image, size)`` is the detail
    above the model's resolution. Returns (H, W, C) float32."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return _upsample(small, h, w)


def _upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """(s, s, C) float32 -> (h, w, C) float32: bicubic up, area averaging down."""
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if h >= small.shape[0] else cv2.INTER_AREA)
    return up.reshape(h, w, -1)


# classes that may lend their grain to one another when a class has no real pixels of its own
_FALLBACK = {EARS: (FACE,), FACE: (EARS, NECK), NECK: (FACE,)}


def class_texture(detail: np.ndarray, where: np.ndarray, labels: np.ndarray, donors: np.ndarray,
                  block_px: int, rng: np.random.Generator):
    """Full-resolution texture for the pixels ``where``, copied from real pixels of their class.

    ``detail``: (H, W, 3) float32, the photo's detail above the model's resolution
    (``x - low_pass(x)``); ``where``: (H, W) bool, the pixels to texture; ``labels``: (H, W)
    uint8 class ids (the mapping mask); ``donors``: (H, W) bool, pixels whose detail is real.
    ``where`` is cut into ``block_px``² blocks (smaller for thin classes); each block of each
    class copies the detail of a random block lying wholly inside that class's donors (a related
    class's when it has none: ears <-> face <-> neck+clothes), away from their border, so the
    copy carries the class's own grain, colour noise and compression texture. Donor blocks much
    busier than the class's median (an object's edge, not grain) are never copied; a class
    without donors gets none. Returns (texture (H, W, 3) float32, zero outside ``where``;
    grain (H, W) float32, the RMS per channel of the texture's class, 0 where none was found).
    """
    h, w = where.shape
    tex = np.zeros_like(detail)
    grain = np.zeros((h, w), np.float32)
    if not where.any():
        return tex, grain
    energy = cv2.blur(np.einsum("ijk,ijk->ij", detail, detail), (block_px, block_px))  # a block's mean, at its centre
    pools: Dict[int, Optional[tuple]] = {}

    def pool(c: int):
        """(top-left ys, xs, block side, grain RMS) of the calm donor blocks of class c, or None."""
        if c not in pools:
            pools[c] = None
            src = donors & (labels == c)
            for b in (block_px, max(4, block_px // 2)):
                if src.sum() < b * b:
                    continue
                k = b + 2 * max(2, b // 4) + 1  # the block and a margin: no detail of a neighbouring class
                inner = np.flatnonzero(cv2.erode(src.astype(np.uint8), np.ones((k, k), np.uint8), borderValue=0))
                if len(inner) > 4096:  # plenty of variety; the rest would only cost time
                    inner = rng.choice(inner, 4096, replace=False)
                ys, xs = inner // w - b // 2, inner % w - b // 2
                ok = (ys >= 0) & (xs >= 0) & (ys + b <= h) & (xs + b <= w)
                if not ok.any():
                    continue
                ys, xs = ys[ok], xs[ok]
                e = energy[ys + b // 2, xs + b // 2]
                median = float(np.median(e))
                calm = e <= 3.0 * median  # grain, not the edge of an object inside the class
                pools[c] = (ys[calm], xs[calm], b, np.sqrt(median / 3.0))
                break
        return pools[c]

    for c in np.unique(labels[where]):
        c = int(c)
        cand = pool(c)
        for alt in _FALLBACK.get(c, ()):
            cand = cand if cand is not None else pool(alt)
        if cand is None:
            continue
        cy, cx, b, rms = cand
        ys, xs = np.nonzero(where & (labels == c))
        nbx = (w + b - 1) // b
        pick = rng.integers(0, len(cy), ((h + b - 1) // b) * nbx)[(ys // b) * nbx + xs // b]  # one donor per block
        tex[ys, xs] = detail[cy[pick] + ys % b, cx[pick] + xs % b]
        grain[ys, xs] = rms
    return tex, grain


def restore_detail(image: np.ndarray, given: np.ndarray, edited: np.ndarray, rebuilt: Optional[np.ndarray] = None,
                   labels: Optional[np.ndarray] = None, donors: Optional[np.ndarray] = None,
                   seed: Optional[int] = None, block_px: Optional[int] = None) -> np.ndarray:
    """SDEdit's result at the photo's own resolution: the model's low frequencies, the input's
    detail above the model's resolution where it is real, the photo's own grain where it is not.

    ``image``: (H, W, 3) uint8, the full-resolution input; ``given``: (S, S, 3) uint8, what the
    model was given (``image`` area-averaged to S²); ``edited``: (S, S, 3) uint8, what the model
    made of it. The model's change ``edited - given`` is upsampled (bicubic) and added to
    ``image``: colours, shapes and shading are the model's, the detail above S² the input's, so
    the new hair keeps its strands and the seams their sharpness.

    ``rebuilt``: (H, W) float32 in [0, 1], how much of a pixel's detail is not real (the pixels
    the try-on filled); ``labels``: (H, W) uint8 class ids (needed with ``rebuilt``); ``donors``:
    (H, W) bool, pixels whose detail is real (default: where ``rebuilt`` is 0). Where the model
    regenerated a rebuilt pixel, its detail is replaced by :func:`class_texture`: by the fraction
    ``rebuilt`` x min(1, c / g), with c the model's local change (its change blurred over a
    model pixel and a half, RMS over channels) and g the RMS grain of the class. A model that
    kept the fill (an oracle, a t0 near 0) leaves its detail as it was; one that repainted it
    by more than the grain gives it the grain of real pixels of its class. ``block_px``: the
    texture's block side (default 4x the upsampling factor, at least 8); ``seed``: its random
    draw. Returns (H, W, 3) uint8.
    """
    h, w = image.shape[:2]
    s = given.shape[0]
    x = image.astype(np.float32)
    delta = edited.astype(np.float32) - given.astype(np.float32)
    out = x + _upsample(delta, h, w)
    if rebuilt is not None and h > s:
        rebuilt = np.clip(np.asarray(rebuilt, np.float32), 0.0, 1.0)
        where = rebuilt > 0
        if where.any():
            if labels is None:
                raise ValueError("restore_detail needs the labels to texture rebuilt pixels")
            donors = ~where if donors is None else (np.asarray(donors, bool) & ~where)
            block = max(8, int(round(4 * h / s))) if block_px is None else int(block_px)
            detail = x - low_pass(x, s)
            tex, grain = class_texture(detail, where, np.asarray(labels), donors, block,
                                       np.random.default_rng(seed))
            change = np.sqrt(np.square(cv2.GaussianBlur(delta, (0, 0), 1.5)).mean(axis=2))
            change = _upsample(change, h, w)[..., 0]
            weight = rebuilt * np.clip(change / np.maximum(grain, 1e-6), 0.0, 1.0) * (grain > 0)
            out += weight[..., None] * (tex - detail)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def detail_masks(intended: np.ndarray, removed: np.ndarray, hair_alpha: np.ndarray,
                 artifacts: Optional[np.ndarray] = None, inside: Optional[np.ndarray] = None):
    """Where a try-on's detail is real, for :func:`restore_detail`.

    ``intended``: (S, S) uint8 the mapping mask; ``removed``: (S, S) bool where the target's old
    hair was; ``hair_alpha``: (S, S) float32 the new hair's matte; ``artifacts``: (S, S) bool the
    fast-marching fills; ``inside``: (S, S) bool the frame's pixels that lie in the photo.
    Returns (rebuilt (S, S) float32: the old hair's rebuilt place where no new hair covers it
    (``removed`` x (1 - alpha)) and the fast-marching fills (1, even on the new hair: their strands
    are smeared); donors (S, S) bool: pixels whose detail is real, to copy grain from: the new hair
    where it is opaque, the target's own pixels elsewhere, never a rebuilt one).
    """
    alpha = np.asarray(hair_alpha, np.float32)
    rebuilt = np.asarray(removed, bool) * (1.0 - alpha)
    if artifacts is not None:
        rebuilt = np.maximum(rebuilt, np.asarray(artifacts, bool))
    donors = (rebuilt == 0) & np.where(np.asarray(intended) == HAIR, alpha >= 0.99, alpha == 0)
    if inside is not None:
        donors &= np.asarray(inside, bool)
    return rebuilt.astype(np.float32), donors


def refine(image: np.ndarray, keep: np.ndarray, denoiser: Callable, *, sample_size: Optional[int] = None,
           feather_px: Optional[int] = None, rebuilt: Optional[np.ndarray] = None,
           labels: Optional[np.ndarray] = None, donors: Optional[np.ndarray] = None,
           **sdedit_kwargs) -> np.ndarray:
    """SDEdit a square crop of any size at its own resolution: resized to the model's S²,
    edited, brought back by :func:`restore_detail` (the model's low frequencies, the input's
    detail above S² where it is real, class texture where ``rebuilt``), and only the edit region
    (``~keep``) pasted back, feathered.

    ``image``: (H, H, 3) uint8 RGB (a head crop); ``keep``: (H, H) bool, True = kept (see
    :func:`edit_mask`). ``sample_size``: S (default ``denoiser.sample_size``, else 256).
    ``rebuilt`` ((H, H) float32), ``labels`` ((H, H) uint8), ``donors`` ((H, H) bool): see
    :func:`restore_detail` (None: all detail is real). ``feather_px`` (default H/64) and the
    :func:`sdedit` keywords. Returns (H, H, 3) uint8 equal to ``image`` wherever ``keep`` is True.
    """
    keep = np.asarray(keep, bool)
    size = int(sample_size or getattr(denoiser, "sample_size", 256))
    h, w = image.shape[:2]
    small = image if (h, w) == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    keep_small = cv2.resize(keep.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    out = sdedit(small, keep_small, denoiser, **sdedit_kwargs)
    full = restore_detail(image, small, out, rebuilt, labels, donors, seed=sdedit_kwargs.get("seed"))
    feather = max(1, round(min(h, w) / 64)) if feather_px is None else int(feather_px)
    return paste_back(image, full, ~keep, feather)
