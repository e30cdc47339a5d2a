"""The ``hairtryon`` command: a thin shell over the Python API.

Errors a user can cause end in one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from .errors import HairTryOnError


def _out_sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix + ".png")


# ------------------------------------------------------------------------------------ commands
def cmd_parse(args) -> int:
    from .images import load_image, save_image
    from .landmarks import detect_landmarks
    from .segmentation import get_segmenter, parse

    image = load_image(args.image)
    landmarks = detect_landmarks(image, args.face) if args.face else None
    sm = parse(image, get_segmenter(args.segmenter), landmarks=landmarks)
    out = Path(args.output)
    save_image(sm.colorize(), out)
    labels_path = _out_sibling(out, "_labels")
    save_image(sm.labels, labels_path)
    if "note" in sm.meta:
        print(f"hairtryon: note: {sm.meta['note']}", file=sys.stderr)
    print(f"wrote {out} (colour map) and {labels_path} (class ids 0-4: "
          "background, hair, face, ears, neck+clothes)")
    return 0


def cmd_landmarks(args) -> int:
    from .images import load_image
    from .landmarks import default_landmarker

    image = load_image(args.image)
    lm = default_landmarker()(image, args.face)
    print(json.dumps(lm.to_dict(), indent=2 if args.pretty else None))
    return 0


def _tool(args):
    from .pipeline import HairTryOn

    return HairTryOn(segmenter=args.segmenter, diffusion_model=getattr(args, "diffusion_model", None),
                     device=getattr(args, "device", "auto"), precision=getattr(args, "precision", "auto"))


def _sdedit_options(args) -> dict:
    options = {"sampler": args.sampler, "steps": args.steps, "repeats": args.repeats, "seed": args.seed,
               "edit_region": args.edit_region}
    if hasattr(args, "noise_level"):
        options["noise_level"] = args.noise_level
    return options


def cmd_swap(args) -> int:
    import re
    import time

    from .images import load_image, save_image
    from .visualize import stage_grid

    target, source = load_image(args.target), load_image(args.source)
    tool = _tool(args)
    t0 = time.perf_counter()
    result = tool(target, source, refine=args.refine, target_face=args.target_face, source_face=args.source_face,
                  progress=True, **_sdedit_options(args))
    out = save_image(result.image, args.output)
    if "alignment_fallback" in result.meta:
        print(f"hairtryon: note: similarity transform used ({result.meta['alignment_fallback']})", file=sys.stderr)
    if args.save_stages:
        folder = Path(args.save_stages)
        for i, (name, img) in enumerate(result.stages.items(), 1):
            save_image(img, folder / f"{i:02d}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png")
        save_image(stage_grid(result.stages, caption=f"{Path(args.target).name} <- {Path(args.source).name}"),
                   folder / "stages.png")
        print(f"wrote the {len(result.stages)} stages and their grid to {folder}/")
    h, w = result.image.shape[:2]
    print(f"wrote {out} ({w}x{h}, refine: {result.meta['refine']}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_sweep(args) -> int:
    from .images import load_image, save_image

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise HairTryOnError(f"--levels takes comma-separated noise levels like 300,500,700,1000, got '{args.levels}'.") from None
    tool = _tool(args)
    grid, _ = tool.sweep(load_image(args.target), load_image(args.source), levels, progress=True,
                         **_sdedit_options(args))
    out = save_image(grid, args.output)
    print(f"wrote {out}: input, composite and SDEdit at t0 = {', '.join(map(str, levels))}")
    return 0


def demo_photos():
    """The two public-domain portraits that ship with registry packages: Eileen Collins
    (scikit-image's astronaut, 512x512) and Grace Hopper (matplotlib's sample, 512x600)."""
    from matplotlib import cbook
    from skimage import data

    from .images import load_image

    return {"astronaut": data.astronaut(),
            "grace_hopper": load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


def cmd_demo(args) -> int:
    from .images import save_image
    from .pipeline import HairTryOn
    from .visualize import stage_grid

    photos = demo_photos()
    folder = Path(args.output)
    tool = HairTryOn(segmenter=args.segmenter)
    for target, source in (("astronaut", "grace_hopper"), ("grace_hopper", "astronaut")):
        result = tool(photos[target], photos[source], progress=True)
        save_image(photos[target], folder / f"{target}.png")
        save_image(result.image, folder / f"{target}_with_{source}_hair.png")
        save_image(stage_grid(result.stages, caption=f"{target} <- {source}"), folder / f"{target}_with_{source}_stages.png")
        print(f"wrote {folder / f'{target}_with_{source}_hair.png'} and its stage grid")
    return 0


def cmd_weights(args) -> int:
    from . import weights

    names = args.names or sorted(weights.REGISTRY)
    if args.action == "list":
        print(f"cache: {weights.cache_dir()}" + ("  (offline mode)" if weights.is_offline() else ""))
        for name in sorted(weights.REGISTRY):
            spec = weights.REGISTRY[name]
            state = "present" if spec.path.is_file() else "missing"
            print(f"{name:12s} {spec.filename:24s} {state:8s} sha256 {spec.sha256[:16]}…  {spec.description}")
            for src in spec.sources:
                print(f"{'':12s}   source: {src.describe()}")
        return 0
    if args.action == "fetch":
        for name in names:
            path = weights.fetch(name, force=args.force)
            print(f"{name}: ok {path}")
        return 0
    status = 0
    for name in names:  # verify
        res = weights.verify(name)
        print(f"{name}: {res.status} {res.path}")
        status = status or (0 if res.status == "ok" else 2)
    return status


# ------------------------------------------------------------------------------------- parsing
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hairtryon", description="Hairstyle try-on: your photo with the hairstyle of another.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"hairtryon {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("parse", help="semantic map of a photo (5 classes)")
    sp.add_argument("image")
    sp.add_argument("-o", "--output", required=True, help="colour map PNG; class ids go to OUT_labels.png")
    sp.add_argument("--face", type=int, default=0, help="which face, 0 = largest (default)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    sp.set_defaults(func=cmd_parse)

    sp = sub.add_parser("landmarks", help="the method's 4 face points as JSON")
    sp.add_argument("image")
    sp.add_argument("--face", type=int, default=0, help="which face, 0 = largest (default)")
    sp.add_argument("--pretty", action="store_true", help="indented JSON")
    sp.set_defaults(func=cmd_landmarks)

    def add_sdedit_options(sp, with_level: bool = True) -> None:
        g = sp.add_argument_group("SDEdit (paper 3.3.2)")
        g.add_argument("--diffusion-model", metavar="ID_OR_DIR",
                       help="Hugging Face Hub id or local diffusers folder (default google/ddpm-ema-celebahq-256)")
        g.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"],
                       help="ddim: fast, --steps UNet calls (default); ddpm: the paper's, one call per level")
        if with_level:
            g.add_argument("--noise-level", type=int, default=500, metavar="T0",
                           help="t0 in 1..1000 (default 500; 300 leaves artifacts, 1000 drifts from the hairstyle)")
        g.add_argument("--steps", type=int, default=25, help="ddim steps spanning t0 (default 25)")
        g.add_argument("--repeats", type=int, default=1, help="ddpm: repeat the whole edit K times (paper: 3)")
        g.add_argument("--seed", type=int, default=None, help="same seed, same output")
        g.add_argument("--edit-region", default="tight", choices=["tight", "paper"],
                       help="tight: keep the target's background (default); paper: regenerate it too")
        g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
        g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="auto: bfloat16 on CPUs that run it fast, fp16 on CUDA; fp32 on request")

    def add_photo_options(sp) -> None:
        sp.add_argument("target", help="photo of the person (TARGET)")
        sp.add_argument("source", help="photo of the hairstyle (SOURCE)")
        sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")

    sp = sub.add_parser("swap", help="the target photo with the source photo's hairstyle")
    add_photo_options(sp)
    sp.add_argument("-o", "--output", required=True, help="output image (PNG or JPEG), the target's size")
    sp.add_argument("--refine", default="auto", choices=["auto", "sdedit", "classic", "none"],
                    help="auto: SDEdit when the diffusion model is available, else classic (default); "
                         "sdedit: fail without it; classic: fast-marching fill of the artifacts; none: stop before it")
    sp.add_argument("--save-stages", metavar="DIR", help="also write every stage and a labelled grid of them")
    sp.add_argument("--target-face", type=int, default=0, help="which face in the target, 0 = largest")
    sp.add_argument("--source-face", type=int, default=0, help="which face in the source, 0 = largest")
    add_sdedit_options(sp)
    sp.set_defaults(func=cmd_swap)

    sp = sub.add_parser("sweep", help="SDEdit at several noise levels in one labelled grid (paper Fig. 12)")
    add_photo_options(sp)
    sp.add_argument("--levels", default="300,500,700,1000", help="comma-separated t0 values (default 300,500,700,1000)")
    sp.add_argument("-o", "--output", required=True, help="the grid image")
    add_sdedit_options(sp, with_level=False)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("demo", help="the try-on on two public-domain portraits, both ways")
    sp.add_argument("-o", "--output", default="demo", help="folder for the results (default: demo/)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("weights", help="list, fetch or verify model weights")
    sp.add_argument("action", choices=["list", "fetch", "verify"])
    sp.add_argument("names", nargs="*", help="weights names (default: all)")
    sp.add_argument("--force", action="store_true", help="fetch: download again even if cached")
    sp.set_defaults(func=cmd_weights)

    from .training import add_cli_commands  # label, train-segmenter, eval-segmenter

    add_cli_commands(sub)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"hairtryon: warning: {message}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    import warnings

    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return int(args.func(args) or 0)
    except HairTryOnError as exc:
        msg = str(exc).strip()
        print(f"hairtryon: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hairtryon: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
