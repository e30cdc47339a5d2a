"""Check SDEdit with the real pretrained model (issue 9): the paper's Figure 12 and its figures.

Runs the try-on of TARGET with the hairstyle of SOURCE through SDEdit with the paper's sampler
(DDPM, ancestral, every level from t0 down, the whole edit ``--repeats`` times: 3 in the paper's
code) and the fast one (DDIM, ``--steps`` levels) at t0 = 300, 500, 700 and 1000, next to the
classic result (fast marching, no diffusion model). Writes into ``--out``:

- ``figure12.png``: the paper's Figure 12, one row per sampler: target, source, classic result,
  then the result at each level (the work frame, ``--tile`` pixels a side);
- ``hair_crops.png``: the same results as full-resolution crops of the new hair (no resizing:
  what a person sees at 100 %);
- ``{sampler}_t{level}.png``: every result at the photo's own resolution, and ``classic.png``.

and prints, for each sampler and level: the seconds the refine took, the PSNR of the kept region
against the classic result (the pixels SDEdit must not touch: inf when they are bit for bit the
same), and the sharpness of the regenerated region against the classic result (its detail energy
above the model's resolution, refined / classic: 1.0 is as sharp as the classic result, the
256² result blown up to the photo gave about 0.06 on the hair).

    PYTHONPATH=src python benchmarks/verify_sdedit.py TARGET SOURCE [--out DIR] [--device auto|cpu|cuda]
        [--levels 300,500,700,1000] [--samplers ddpm,ddim] [--repeats 3] [--steps 25] [--seed 0]
        [--diffusion-model ID_OR_DIR] [--precision auto|fp32|bf16|fp16]

It needs the pretrained model (``google/ddpm-ema-celebahq-256``, about 450 MB, fetched into the
Hugging Face cache on first use where the Hub is reachable). Without it, it exits with status 2
and one line saying how to get it. Cost: the paper's sampler makes repeats x t0 UNet calls per
level (7,500 for the four levels with 3 repeats): minutes on a CUDA GPU, about an hour on a
laptop CPU (use --samplers ddim, or --repeats 1, for a quick look).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hairtryon.errors import HairTryOnError  # noqa: E402


def _to_photo(result, frame_array) -> np.ndarray:
    """A work-frame array in the photo's coordinates (nearest; 0 outside the frame)."""
    import cv2

    f = result.target.frame
    out = np.zeros(result.image.shape[:2], np.float32)
    rows, cols, brows, bcols = f.roi()
    out[rows, cols] = f.to_image_box(np.asarray(frame_array, np.float32), cv2.INTER_NEAREST)[brows, bcols]
    return out


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB of two uint8 images over ``where`` (inf when equal there)."""
    if not where.any():
        return float("nan")
    d = a.astype(np.float64)[where] - b.astype(np.float64)[where]
    mse = float(np.square(d).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def detail_energy(image: np.ndarray, scale: float, where: np.ndarray) -> float:
    """Mean squared detail that a resize by ``scale`` (< 1) loses, per channel, over ``where``:
    ``image`` minus the image area-averaged by ``scale`` and brought back (bicubic)."""
    import cv2

    x = image.astype(np.float32)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    low = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return float(np.square(x - low)[where].mean())


def hair_box(hair: np.ndarray, side: int):
    """(y, x) of the side x side window of the photo holding the most new hair."""
    import cv2

    h, w = hair.shape
    side = min(side, h, w)
    counts = cv2.boxFilter(hair.astype(np.float32), -1, (side, side), normalize=False,
                           anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[: h - side + 1, : w - side + 1]
    y, x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(y), int(x), side


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("source")
    ap.add_argument("--out", default="verify-sdedit", help="folder for the figures (default verify-sdedit/)")
    ap.add_argument("--levels", default="300,500,700,1000")
    ap.add_argument("--samplers", default="ddpm,ddim")
    ap.add_argument("--repeats", type=int, default=3, help="DDPM repeats of the whole edit (the paper's code: 3)")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edit-region", default="tight", choices=["tight", "paper"])
    ap.add_argument("--diffusion-model", default=None, help="Hub id or diffusers folder (default: the paper's)")
    ap.add_argument("--segmenter", default="bisenet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tile", type=int, default=384, help="side of a Figure 12 tile")
    ap.add_argument("--crop", type=int, default=384, help="side of a full-resolution hair crop")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except HairTryOnError as exc:  # the model missing offline, a bad file, no face: one sentence
        print(f"verify_sdedit: error: {str(exc).strip()}", file=sys.stderr)
        return 2


def run(args) -> int:
    import torch

    from hairtryon.diffusion import load_diffusion_model
    from hairtryon.images import load_image, save_image
    from hairtryon.pipeline import HairTryOn
    from hairtryon.visualize import labelled_grid

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise HairTryOnError(f"--levels takes noise levels like 300,500,700,1000, got '{args.levels}'.") from None
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    model = load_diffusion_model(args.diffusion_model, device=args.device, precision=args.precision)  # first: fail fast
    info = model.info
    print(f"model {info['model']} on {info['device']} in {info['precision']}, {model.sample_size}² "
          f"(torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          f"{', ' + torch.cuda.get_device_name(0) if info['device'].startswith('cuda') else ''})", flush=True)
    tool = HairTryOn(args.segmenter, diffusion_model=args.diffusion_model, device=args.device,
                     precision=args.precision)
    target, source = load_image(args.target), load_image(args.source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # a check of the model, not of the pair: pairs the checks would decline are tried anyway
    classic = tool(target, source, refine="classic", force=True)
    save_image(classic.image, out / "classic.png")
    head_side = classic.target.landmarks.head_frame(model.sample_size).side  # photo pixels the model sees as S²
    scale = min(1.0, model.sample_size / head_side)  # the model's resolution, in photo pixels
    frame = classic.target.frame
    rows = []
    crops = [("classic", None)]
    results = {}
    print(f"{'sampler':7} {'t0':>5} {'seconds':>9} {'kept PSNR dB':>13} {'sharpness':>10} {'hair sharpness':>15}")
    for sampler in samplers:
        tiles = [("target", frame.extract(target)), ("source", classic.source.crop), ("classic", frame.extract(classic.image))]
        for level in levels:
            t = time.perf_counter()
            r = tool(target, source, refine="sdedit", force=True, sampler=sampler, noise_level=level, steps=args.steps,
                     repeats=args.repeats if sampler == "ddpm" else 1, seed=args.seed, edit_region=args.edit_region)
            seconds = r.timings.get("sdedit", time.perf_counter() - t)
            edited = _to_photo(r, r.masks["edit_region"]) > 0
            hair = edited & (_to_photo(r, r.masks["hair_alpha"]) >= 0.99)
            kept = ~edited
            sharp = detail_energy(r.image, scale, edited) / max(detail_energy(classic.image, scale, edited), 1e-9)
            hair_sharp = (detail_energy(r.image, scale, hair) / max(detail_energy(classic.image, scale, hair), 1e-9)
                          if hair.any() else float("nan"))
            print(f"{sampler:7} {level:5d} {seconds:9.1f} {psnr(r.image, classic.image, kept):13.2f} "
                  f"{sharp:10.3f} {hair_sharp:15.3f}", flush=True)
            save_image(r.image, out / f"{sampler}_t{level}.png")
            tiles.append((f"{sampler} t0 = {level}", frame.extract(r.image)))
            crops.append((f"{sampler} t0={level}", r))
            results[(sampler, level)] = r
        rows.extend(tiles)
    cols = 3 + len(levels)
    save_image(labelled_grid(rows, cols=cols, tile=args.tile,
                             caption=f"SDEdit at t0 = {', '.join(map(str, levels))} ({info['model']})"),
               out / "figure12.png")
    any_result = next(iter(results.values()))
    hair = _to_photo(any_result, any_result.masks["hair_alpha"]) >= 0.99
    y, x, side = hair_box(hair, args.crop)
    tiles = [(name, (classic if r is None else r).image[y:y + side, x:x + side]) for name, r in crops]
    save_image(labelled_grid(tiles, cols=1 + len(levels), tile=side,
                             caption=f"the new hair at 100 % (photo pixels {x}..{x + side}, {y}..{y + side})"),
               out / "hair_crops.png")
    print(f"wrote {out}/figure12.png, {out}/hair_crops.png and every result at full resolution "
          f"(sharpness: detail finer than the model's {model.sample_size}² head crop, {head_side} photo pixels a "
          f"side, refined / classic, over the regenerated region and over its new hair)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
