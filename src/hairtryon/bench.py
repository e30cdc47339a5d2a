"""Speed, measured one way: ``hairtryon bench`` and its Python API.

- :func:`bench_stages`: seconds per stage of the try-on of one fixed pair at several input sizes
  (default 512² and 1024²): the models loaded once, the photos analysed afresh every run, the
  median of ``runs`` runs after a warm-up.
- :func:`bench_sdedit`: SDEdit (paper 3.3.2) on its own, with the DDPM CelebA-HQ 256²
  architecture (``google/ddpm-ema-celebahq-256``'s config, 113.7 M parameters) with random
  weights, saved in diffusers' format and loaded through :func:`hairtryon.refinement.load_diffusion_model`
  like the real model (speed does not depend on the weight values; the pretrained weights cannot
  be downloaded where this was written): seconds per UNet call, and per refine for each sampler
  (``ddim``: at most ``steps`` calls; ``ddpm``: the paper's, one call per level from t0 down),
  and the ddpm/ddim ratio, all measured in the same run.

The fixed pair is the project's two public-domain portraits (scikit-image's astronaut as the
target, matplotlib's Grace Hopper as the source), centre-cropped square and resized to each size.
The machine may be shared: the load average at the start and the end is part of the report.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

CELEBAHQ_256 = dict(  # config.json of google/ddpm-ema-celebahq-256
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32,
    time_embedding_type="positional",
)
STAGE_ORDER = ("analysis", "checks", "alignment", "matting", "cropping", "replacing", "reparse", "fast_marching",
               "sdedit", "paste_back")


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the system has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine() -> dict:
    """What the figures depend on: CPUs, torch threads, CUDA, the load average now."""
    import torch

    return {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average": load_average()}


def square(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> its centred square, resized to (size, size, 3) uint8."""
    import cv2

    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = image[y0:y0 + s, x0:x0 + s]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if size < s else cv2.INTER_CUBIC)


def fixed_pair(target=None, source=None):
    """(target, source) (H, W, 3) uint8: the given photos, or the two public-domain portraits."""
    from .images import load_image

    if target is None or source is None:
        from .cli import demo_photos

        photos = demo_photos()
        target = photos["astronaut"] if target is None else target
        source = photos["grace_hopper"] if source is None else source
    return load_image(target), load_image(source)


def random_model(folder, config: Optional[dict] = None, seed: int = 0) -> Path:
    """A diffusers folder at ``folder``: a ``UNet2DModel`` of ``config`` (default the DDPM
    CelebA-HQ 256² architecture) with random weights, and the DDPM CelebA-HQ schedule."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from .diffusion import DDPM_DEFAULTS

    torch.manual_seed(seed)
    unet = UNet2DModel(**(config or CELEBAHQ_256))
    unet.save_pretrained(folder)
    DDPMScheduler.from_config(DDPM_DEFAULTS).save_pretrained(folder)
    return Path(folder)


def bench_stages(sizes: Sequence[int] = (512, 1024), runs: int = 5, refine: str = "classic", target=None,
                 source=None, diffusion_model: Optional[str] = None, device: str = "auto",
                 precision: str = "auto", segmenter: str = "bisenet", **sdedit_options) -> dict:
    """Median seconds per stage of the try-on of the fixed pair at each input size
    ({'SIZE': {stage: s}}, stages in the pipeline's order, and 'total'), ``runs`` runs after one
    warm-up, models loaded once, photos analysed afresh each run. ``refine``: classic (default),
    none, or sdedit (with ``diffusion_model``, e.g. a :func:`random_model` folder)."""
    from .pipeline import HairTryOn

    tool = HairTryOn(segmenter=segmenter, cache_size=0, diffusion_model=diffusion_model, device=device,
                     precision=precision)
    target, source = fixed_pair(target, source)
    sdedit_options.setdefault("seed", 0)
    out: Dict[str, Dict[str, float]] = {}
    for size in sizes:
        t, s = square(target, size), square(source, size)
        timings = []
        for i in range(runs + 1):
            r = tool(t, s, refine=refine, force=True, **sdedit_options)  # Grace Hopper's cap: timed anyway
            if i:  # the first run is the warm-up
                timings.append(r.timings)
        stages = [k for k in STAGE_ORDER if k in timings[0]]
        stages += [k for k in timings[0] if k not in STAGE_ORDER and k != "total"] + ["total"]
        out[str(size)] = {k: statistics.median(tm[k] for tm in timings) for k in stages}
    return out


class _Counted:
    """A denoiser that counts its calls (the UNet calls of a refine), otherwise the model itself."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)

    def __getattr__(self, name):
        return getattr(self.model, name)


def _test_image(size: int):
    """The astronaut at size², and a keep mask: its lower 60 % kept (the edit is the top 40 %)."""
    from skimage import data

    image = square(data.astronaut(), size)
    keep = np.zeros((size, size), bool)
    keep[int(size * 0.4):] = True
    return image, keep


def bench_sdedit(t0: int = 500, steps: int = 25, calls: int = 5, runs: int = 1, size: Optional[int] = None,
                 model_dir=None, config: Optional[dict] = None, device: str = "auto", precision: str = "auto",
                 samplers: Sequence[str] = ("ddim", "ddpm")) -> dict:
    """SDEdit's speed: {'model': what was loaded, 'size', 't0', 'unet_call_s': median of ``calls``
    isolated UNet calls after a warm-up, 'samplers': {sampler: {'refine_s': median of ``runs``
    refines, 'unet_calls', 'per_call_s': refine_s / unet_calls}}, 'ddpm_over_ddim'}. The model:
    ``model_dir`` (a diffusers folder), else random weights of ``config`` (default the DDPM
    CelebA-HQ 256² architecture) in a temporary folder. ``size``: the image side (default the
    model's own)."""
    import torch

    from . import refinement as rf

    with tempfile.TemporaryDirectory(prefix="hairtryon-bench-") as tmp:
        folder = model_dir or random_model(tmp, config)
        model = rf.load_diffusion_model(str(folder), device=device, precision=precision)
    size = int(size or model.sample_size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    model(x, t0 - 1)  # warm-up (oneDNN primitives, CUDA kernels)
    times = []
    for i in range(calls):
        t = time.perf_counter()
        model(x, t0 - 1 - i)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    image, keep = _test_image(size)
    report = {"model": dict(model.info, parameters_m=round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 1),
                            weights="random" if model_dir is None else str(model_dir)),
              "size": size, "t0": t0, "steps": steps, "unet_call_s": statistics.median(times), "samplers": {}}
    for sampler in samplers:
        secs, counted = [], _Counted(model)
        for _ in range(max(1, runs)):
            counted.calls = 0
            t = time.perf_counter()
            rf.sdedit(image, keep, counted, sampler=sampler, t0=t0, steps=steps, seed=0, progress=False)
            secs.append(time.perf_counter() - t)
        refine_s = statistics.median(secs)
        report["samplers"][sampler] = {"refine_s": refine_s, "unet_calls": counted.calls,
                                       "per_call_s": refine_s / max(1, counted.calls)}
    s = report["samplers"]
    if "ddim" in s and "ddpm" in s:
        report["ddpm_over_ddim"] = s["ddpm"]["refine_s"] / s["ddim"]["refine_s"]
    return report


def run_bench(sizes: Sequence[int] = (512, 1024), runs: int = 5, refine: str = "classic", stages: bool = True,
              sdedit: bool = False, t0: int = 500, steps: int = 25, calls: int = 5, sdedit_runs: int = 1,
              sdedit_size: Optional[int] = None,
              diffusion_model: Optional[str] = None, device: str = "auto", precision: str = "auto",
              target=None, source=None, segmenter: str = "bisenet") -> dict:
    """The whole benchmark as one dict (what ``hairtryon bench --json`` prints): 'machine',
    'stages' (:func:`bench_stages`), 'sdedit' (:func:`bench_sdedit`), 'load_average_end'."""
    report: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="hairtryon-bench-") as tmp:
        model = diffusion_model
        if refine == "sdedit" and model is None:
            model = str(random_model(tmp))
        if stages:
            report["stages"] = bench_stages(sizes, runs, refine, target, source, model, device, precision, segmenter,
                                            noise_level=t0, steps=steps)
            report["stages_refine"] = refine
        if sdedit:
            report["sdedit"] = bench_sdedit(t0, steps, calls, sdedit_runs, sdedit_size, model_dir=diffusion_model,
                                            device=device, precision=precision)
    report["load_average_end"] = load_average()
    return report


def format_report(report: dict) -> str:
    """The report as plain-text tables."""
    m = report["machine"]
    lines = [f"{m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads, {m['cpu_capability']}), "
             f"CUDA: {m['cuda'] or 'no'}; load average {m['load_average']} at the start, "
             f"{report.get('load_average_end')} at the end"]
    if "stages" in report:
        sizes = list(report["stages"])
        names = []
        for st in report["stages"].values():
            names += [k for k in st if k not in names]
        lines += ["", f"seconds per stage (refine {report['stages_refine']}), median after a warm-up:",
                  f"{'stage':16s}" + "".join(f"{s + '²':>10s}" for s in sizes)]
        for k in names:
            lines.append(f"{k:16s}" + "".join(f"{report['stages'][s].get(k, float('nan')):10.3f}" for s in sizes))
    if "sdedit" in report:
        sd = report["sdedit"]
        mo = sd["model"]
        lines += ["", f"SDEdit at {sd['size']}², t0 = {sd['t0']}, {mo['parameters_m']} M-parameter UNet "
                      f"({mo['weights']} weights, {mo['precision']} on {mo['device']}): one UNet call "
                      f"{sd['unet_call_s']:.3f} s",
                  f"{'sampler':8s} {'UNet calls':>10s} {'s per call':>11s} {'s per refine':>13s}"]
        for name, s in sd["samplers"].items():
            lines.append(f"{name:8s} {s['unet_calls']:10d} {s['per_call_s']:11.3f} {s['refine_s']:13.1f}")
        if "ddpm_over_ddim" in sd:
            lines.append(f"ddpm / ddim: {sd['ddpm_over_ddim']:.1f}x the seconds of a refine")
    return "\n".join(lines)
