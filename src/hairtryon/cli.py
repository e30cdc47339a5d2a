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


STAGE_FILES = r"(\d\d_[a-z0-9_]+|stages)\.png"  # what --save-stages writes


def _out_sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix + ".png")


def _progress() -> bool:
    """Progress bars only on a terminal: in a log or a pipe they would share lines with messages."""
    return sys.stderr.isatty()


def _warn(message: str) -> None:
    """One warning line for the person, on its own line (progress bars are closed by then)."""
    print(f"hairtryon: warning: {message}", file=sys.stderr)


def _check_outputs(args, inputs) -> None:
    """Every output of a photo command validated before any photo is read or model loaded."""
    from .images import check_output_path

    check_output_path(args.output, inputs)
    if getattr(args, "save_stages", None):
        check_output_path(args.save_stages, inputs, folder=True, writes=STAGE_FILES)


def _load_pair(args):
    """The target and source photos (errors name the photo and its role), before any model loads."""
    from .images import load_photo

    return load_photo(args.target, "target"), load_photo(args.source, "source")


def _transparency_note(target, out) -> List[str]:
    from .images import ALPHA_FORMATS, writable_format

    if target.alpha is not None and writable_format(out) not in ALPHA_FORMATS:
        return [f"{Path(out).name} cannot hold transparency: the target's transparent parts were flattened onto "
                "white (write a .png to keep them)."]
    return []


def _run_quietly(fn, *a, **kw):
    """Call the API without its RefineFallbackWarning: the CLI prints meta['warnings'] itself."""
    import warnings

    from .pipeline import RefineFallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RefineFallbackWarning)
        return fn(*a, **kw)


# ------------------------------------------------------------------------------------ commands
def cmd_parse(args) -> int:
    from .images import check_output_path, load_image, save_image
    from .landmarks import detect_landmarks
    from .segmentation import get_segmenter, parse

    out = Path(args.output)
    check_output_path(out, [args.image])
    check_output_path(_out_sibling(out, "_labels"), [args.image])
    image = load_image(args.image)
    landmarks = detect_landmarks(image, args.face) if args.face else None
    sm = parse(image, get_segmenter(args.segmenter), landmarks=landmarks)
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
    lm = default_landmarker()(image, args.face, what=Path(args.image).name)
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


def _colour_arg(args):
    """``--color`` as ``HairTryOn`` takes it: None, 'keep' or the colour reference photo (read
    here, so that an unreadable file is said before the models load)."""
    from .colour import REFERENCE
    from .images import load_photo

    if args.color in (None, "keep"):
        return args.color
    return load_photo(args.color, REFERENCE)


def cmd_swap(args) -> int:
    import re
    import time

    from .images import save_image
    from .visualize import stage_grid

    _check_outputs(args, [args.target, args.source])  # a wrong -o fails at once, not after the work
    target, source = _load_pair(args)
    color = _colour_arg(args)
    tool = _tool(args)
    t0 = time.perf_counter()
    result = _run_quietly(tool, target, source, refine=args.refine, target_face=args.target_face,
                          source_face=args.source_face, progress=_progress(), force=args.force,
                          color=color, **_sdedit_options(args))
    out = save_image(result.output, args.output)
    for message in result.meta.get("warnings", []) + _transparency_note(target, out):
        _warn(message)
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
    hair = f", hair colour {result.meta['hair_colour']}" if "hair_colour" in result.meta else ""
    print(f"wrote {out} ({w}x{h}, refine: {result.meta['refine']}{hair}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_sweep(args) -> int:
    from .images import save_image

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise HairTryOnError(f"--levels takes comma-separated noise levels like 300,500,700,1000, got '{args.levels}'.") from None
    _check_outputs(args, [args.target, args.source])
    target, source = _load_pair(args)
    color = _colour_arg(args)
    tool = _tool(args)
    grid, _ = tool.sweep(target, source, levels, progress=_progress(), color=color, **_sdedit_options(args))
    out = save_image(grid, args.output)
    print(f"wrote {out}: input, composite and SDEdit at t0 = {', '.join(map(str, levels))}")
    return 0


def cmd_catalog(args) -> int:
    from .catalog import RESULT_FILES, style_photos
    from .images import check_output_path, load_photo

    # a wrong output, an unreadable target, a missing or empty folder: said before the models load
    styles = style_photos(args.styles)
    check_output_path(args.output, [args.target, *styles])
    if args.out_dir:
        check_output_path(args.out_dir, [args.target, *styles], folder=True, writes=RESULT_FILES)
    target, color = load_photo(args.target, "target"), _colour_arg(args)
    tool = _tool(args)
    cat = tool.catalog(target, styles, color=color, progress=_progress(), out_dir=args.out_dir,
                       keep_images=False, refine=args.refine, target_face=args.target_face, force=args.force,
                       **_sdedit_options(args))
    cat.save(gallery_path=args.output)
    seen = {}
    for s in cat.done:
        for line in s.warnings:
            seen.setdefault(line, []).append(s.name)
    for line, names in seen.items():  # each warning once, with the styles it concerns
        _warn(line + (f" ({len(names)} styles)" if len(names) > 1 else f" ({names[0]})"))
    for s in cat.failed:
        print(f"hairtryon: not done: {s.name}: {s.reason}", file=sys.stderr)
    per = cat.seconds / max(len(cat.styles), 1)
    print(f"wrote {args.output}: {len(cat.done)} of {len(cat.styles)} styles on {Path(args.target).name} "
          f"({per:.1f} s per style)" + (f"; results in {args.out_dir}/" if args.out_dir and cat.done else ""))
    if not cat.done:
        raise HairTryOnError(f"no style could be tried on {Path(args.target).name}; the reasons are above.")
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
    from .images import check_output_path, save_image
    from .pipeline import HairTryOn
    from .visualize import stage_grid

    folder = check_output_path(args.output, folder=True)
    photos = demo_photos()
    tool = HairTryOn(segmenter=args.segmenter)
    shown = set()
    for target, source in (("astronaut", "grace_hopper"), ("grace_hopper", "astronaut")):
        # Grace Hopper wears her officer's cap: the checks would decline both pairs (headwear);
        # the demo tries them anyway, and its warnings say why the result may look edited
        result = _run_quietly(tool, photos[target], photos[source], progress=_progress(), force=True)
        for message in result.meta.get("warnings", []):
            if message not in shown:  # the same fallback for both runs is said once
                _warn(message)
                shown.add(message)
        save_image(photos[target], folder / f"{target}.png")
        save_image(result.output, folder / f"{target}_with_{source}_hair.png")
        save_image(stage_grid(result.stages, caption=f"{target} <- {source}"), folder / f"{target}_with_{source}_stages.png")
        print(f"wrote {folder / f'{target}_with_{source}_hair.png'} and its stage grid")
    print(f"the demo's results are in {folder.resolve()}/ (open *_hair.png)")
    return 0


def cmd_serve(args) -> int:
    from .web import serve

    return serve(host=args.host, port=args.port, refine=args.refine, segmenter=args.segmenter,
                 diffusion_model=args.diffusion_model, device=args.device, precision=args.precision)


def cmd_label(args) -> int:
    from .training import label_folder

    rep = label_folder(args.photos, args.out, teacher=args.teacher, size=args.size, device=args.device,
                       progress=not args.quiet)
    for line in rep.skipped:
        print(f"hairtryon: skipped {line}", file=sys.stderr)
    print(f"wrote {len(rep.written)} labelled crops to {rep.out}/images and {rep.out}/labels "
          f"({len(rep.skipped)} skipped)")
    return 0


def cmd_train(args) -> int:
    from .training import TrainConfig, train_segmenter

    cfg = TrainConfig(
        data=args.data, out=args.out, input_size=args.size, width=args.width, depth=args.depth, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, loss=args.loss, class_weights=args.class_weights,
        val_every=args.val_every, val_fraction=args.val_fraction, layout=args.layout,
        label_classes=args.label_classes, framing=args.framing, augment=not args.no_augment, resume=args.resume,
        device=args.device, precision=args.precision, seed=args.seed, workers=args.workers, progress=not args.quiet)
    res = train_segmenter(cfg)
    print(f"best validation mIoU {res.best_miou:.3f} at step {res.best_step}: {res.best}  "
          f"(resumable state: {res.last})")
    return 0


def cmd_eval(args) -> int:
    from .segmentation import load_segmenter
    from .training import evaluate_segmenter
    from .unet_segmenter import resolve_device

    segmenter = load_segmenter(args.segmenter, device=resolve_device(args.device))
    rep = evaluate_segmenter(args.data, segmenter, layout=args.layout, label_classes=args.label_classes,
                             split=args.split, limit=args.limit, seed=args.seed, progress=not args.quiet)
    print(rep.format())
    return 0


def _run_options(args):
    from .batch import RunOptions

    sdedit = {k: v for k, v in _sdedit_options(args).items() if k != "seed"}
    return RunOptions(refine=args.refine, segmenter=getattr(args, "tryon_segmenter", None) or args.segmenter,
                      scorer=args.segmenter if hasattr(args, "tryon_segmenter") else None,
                      target_face=args.target_face, source_face=args.source_face, sdedit=sdedit,
                      seed=0 if args.seed is None else args.seed, diffusion_model=args.diffusion_model,
                      device=args.device, precision=args.precision, force=args.force)


def cmd_batch(args) -> int:
    from .batch import run_batch

    rep = run_batch(args.pairs, args.out_dir, _run_options(args), workers=args.workers, ray_address=args.ray,
                    progress=_progress() and not args.quiet)
    shown = list(dict.fromkeys(w["message"] for w in rep.warnings))
    for w in shown[:5]:
        _warn(w)
    if len(shown) > 5:
        print(f"hairtryon: warning: ... and {len(shown) - 5} more, each row's in {rep.warnings_csv}", file=sys.stderr)
    print(f"wrote {len(rep.written)} results to {args.out_dir}, skipped {len(rep.skipped)} already there, "
          f"{len(rep.errors)} failed" + (f" (see {rep.errors_csv})" if rep.errors else "")
          + f"; {rep.seconds:.1f} s")
    return 1 if rep.errors else 0


def cmd_evaluate(args) -> int:
    import random

    from .batch import folder_pairs, read_pairs, run_eval

    options = _run_options(args)
    source = Path(args.input)
    if source.is_dir():
        pairs = folder_pairs(source, args.pairs, options.seed)
    else:
        pairs = read_pairs(source)
        if args.pairs is not None and args.pairs < len(pairs):
            pairs = random.Random(options.seed).sample(pairs, max(1, args.pairs))
    rep = run_eval(pairs, args.out_dir, options, workers=args.workers, ray_address=args.ray,
                   save_results=args.save_results, sheet_rows=args.sheet_rows,
                   progress=_progress() and not args.quiet)
    s = rep.summary
    for w in s["warnings"][:5]:
        _warn(w)
    if len(s["warnings"]) > 5:
        print(f"hairtryon: warning: ... and {len(s['warnings']) - 5} more, each pair's in eval.csv", file=sys.stderr)
    run = s["run"]
    print(f"{s['pairs']} pairs: {s['ok']} ok, {s['declined']} declined, {s['failed']} failed; "
          f"{run['wall_s']:.1f} s; scored by {run['scorer']}"
          + (" (the try-on's own parser: flattering; --segmenter another for an independent view)"
             if run["scored_by_own_parser"] else ""))
    print(f"{'measure':14s} {'median':>9s} {'mean':>9s} {'n':>5s}  worst")
    for name, m in s["measures"].items():
        if m["n"]:
            worst = m["worst"][0]
            print(f"{name:14s} {m['median']:9.4g} {m['mean']:9.4g} {m['n']:5d}  {worst['value']:.4g} ({worst['pair']})")
    print("wrote " + ", ".join(str(p) for p in rep.files.values()))
    return 0


def cmd_bench(args) -> int:
    from .bench import format_report, run_bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        raise HairTryOnError(f"--sizes takes comma-separated sides like 512,1024, got '{args.sizes}'.") from None
    report = run_bench(sizes, args.runs, args.refine, stages=not args.sdedit_only, sdedit=args.sdedit or args.sdedit_only,
                       t0=args.noise_level, steps=args.steps, calls=args.calls, sdedit_runs=args.sdedit_runs,
                       sdedit_size=args.sdedit_size,
                       diffusion_model=args.diffusion_model, device=args.device, precision=args.precision,
                       target=args.target, source=args.source, segmenter=args.segmenter)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
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
        add_colour_option(sp)

    def add_colour_option(sp) -> None:
        sp.add_argument("--color", "--colour", metavar="REF|keep", default=None,
                        help="the new hair's colour: REF, a photo whose hair colour to use (it needs a face and "
                             "visible hair); keep: your own hair's colour; default: the hairstyle photo's")

    sp = sub.add_parser("swap", help="the target photo with the source photo's hairstyle")
    add_photo_options(sp)
    sp.add_argument("-o", "--output", required=True, help="output image (PNG or JPEG), the target's size")
    sp.add_argument("--refine", default="auto", choices=["auto", "sdedit", "classic", "none"],
                    help="auto: SDEdit when the diffusion model is available, else classic (default); "
                         "sdedit: fail without it; classic: fast-marching fill of the artifacts; none: stop before it")
    sp.add_argument("--save-stages", metavar="DIR", help="also write every stage and a labelled grid of them")
    sp.add_argument("--force", action="store_true",
                    help="try a pair the checks decline (headwear, a turned head, hands, ...) anyway, with warnings")
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

    sp = sub.add_parser("catalog", help="every hairstyle of a folder on one photo, in one labelled grid")
    sp.add_argument("target", help="photo of the person (TARGET)")
    sp.add_argument("styles", metavar="STYLES_DIR", help="folder of hairstyle photos (each one a style)")
    sp.add_argument("-o", "--output", required=True, help="the labelled grid (PNG or JPEG)")
    sp.add_argument("--out-dir", metavar="DIR", help="also write every result at full resolution, as TARGET__STYLE.png")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    add_colour_option(sp)
    sp.add_argument("--refine", default="auto", choices=["auto", "sdedit", "classic", "none"],
                    help="as for swap (default auto)")
    sp.add_argument("--force", action="store_true", help="try the styles the checks decline anyway, with warnings")
    sp.add_argument("--target-face", type=int, default=0, help="which face in the target, 0 = largest")
    add_sdedit_options(sp)
    sp.set_defaults(func=cmd_catalog)

    sp = sub.add_parser("demo", help="the try-on on two public-domain portraits, both ways")
    sp.add_argument("-o", "--output", default="demo", help="folder for the results (default: demo/)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("serve", help="the web app: try a hairstyle in the browser")
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: every network, "
                         "with a warning)")
    sp.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    sp.add_argument("--refine", default="auto", choices=["auto", "sdedit", "classic"],
                    help="the page's starting refine mode (default auto)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    sp.add_argument("--diffusion-model", metavar="ID_OR_DIR",
                    help="SDEdit's model: Hugging Face Hub id or local diffusers folder")
    sp.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    sp.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("weights", help="list, fetch or verify model weights")
    sp.add_argument("action", choices=["list", "fetch", "verify"])
    sp.add_argument("names", nargs="*", help="weights names (default: all)")
    sp.add_argument("--force", action="store_true", help="fetch: download again even if cached")
    sp.set_defaults(func=cmd_weights)

    # the paper's U-Net segmenter: pseudo-labels, training, evaluation
    from . import datasets as ds
    from .unet_segmenter import PRECISIONS

    layouts = ["auto", *ds.LAYOUTS]

    sp = sub.add_parser("label", help="pseudo-label a folder of portraits (5 classes) for train-segmenter")
    sp.add_argument("photos", help="folder of portraits")
    sp.add_argument("out", help="output folder: images/, labels/ and hairtryon-labels.json")
    sp.add_argument("--teacher", default="bisenet", help="segmenter that labels: bisenet (default) or unet:PATH")
    sp.add_argument("--size", type=int, default=512, help="side of the written crops (default 512)")
    sp.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_label)

    sp = sub.add_parser("train-segmenter", help="train the paper's U-Net segmenter on a labelled folder")
    sp.add_argument("--data", required=True,
                    help="labelled folder (CelebAMask-HQ, images/+labels/, or NAME.jpg+NAME.png)")
    sp.add_argument("--out", required=True, help="checkpoint of the best model (the last state goes to OUT.last.pt)")
    sp.add_argument("--size", type=int, default=256, help="input size of the U-Net (default 256; 512 optional)")
    sp.add_argument("--width", type=int, default=16, help="channels at full resolution (default 16, small; 64 classic)")
    sp.add_argument("--depth", type=int, default=4, help="down/up stages (default 4)")
    sp.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of AdamW (cosine schedule)")
    sp.add_argument("--loss", choices=["ce", "ce+dice"], default="ce+dice")
    sp.add_argument("--class-weights", choices=["auto", "none"], default="auto",
                    help="auto: inverse square-root class frequency (default)")
    sp.add_argument("--val-every", type=int, default=200, help="validate (mIoU per class) every N steps")
    sp.add_argument("--val-fraction", type=float, default=0.1,
                    help="held-out share when the folder has no official split (0: validate on the training images)")
    sp.add_argument("--layout", choices=layouts, default="auto")
    sp.add_argument("--label-classes", type=int, choices=[5, 19], default=None,
                    help="what label ids mean in images/+labels/ folders (default: 19, or 5 for `label` output)")
    sp.add_argument("--framing", choices=["auto", *ds.FRAMINGS], default="auto",
                    help="how the parser's face crop is found (auto: none for `label` output, aligned for "
                         "CelebAMask-HQ, landmarks otherwise)")
    sp.add_argument("--no-augment", action="store_true", help="no flip / scale / rotation / colour jitter")
    sp.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume from OUT.last.pt (or from the given checkpoint)")
    sp.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    sp.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                    help="auto: bfloat16 autocast where the device runs it natively (2x faster on recent CPUs)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval-segmenter", help="IoU per class of a segmenter on a labelled folder")
    sp.add_argument("--data", required=True,
                    help="labelled folder (CelebAMask-HQ, images/+labels/, NAME.jpg+NAME.png, or LOHO images/+masks/)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    sp.add_argument("--layout", choices=layouts, default="auto")
    sp.add_argument("--label-classes", type=int, choices=[5, 19], default=None)
    sp.add_argument("--split", choices=list(ds.SPLITS), default="all")
    sp.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    sp.add_argument("--seed", type=int, default=0, help="seed of the split when there is no official one")
    sp.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_eval)

    # many pairs: batch runs and the try-on's evaluation, on one machine or a Ray cluster
    def add_many_options(sp) -> None:
        sp.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the results")
        sp.add_argument("--refine", default="auto", choices=["auto", "sdedit", "classic", "none"],
                        help="as for swap (default auto)")
        sp.add_argument("--force", action="store_true",
                        help="try pairs the checks decline (headwear, a turned head, hands, ...) anyway, with warnings")
        sp.add_argument("--target-face", type=int, default=0, help="which face in each target, 0 = largest")
        sp.add_argument("--source-face", type=int, default=0, help="which face in each source, 0 = largest")
        g = sp.add_argument_group("scale-out")
        g.add_argument("--workers", type=int, default=None, metavar="N",
                       help="processes on this machine, models loaded once in each (default: 1, this process); "
                            "with --ray: Ray actors (default: one per CPU of the cluster)")
        g.add_argument("--ray", metavar="ADDRESS",
                       help="run on a Ray cluster: auto (the one this machine joined with `ray start`), "
                            "HOST:PORT, ray://HOST:10001 (Ray Client), or local (a new one here); "
                            "needs pip install 'hairtryon[ray]'")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        add_sdedit_options(sp)

    sp = sub.add_parser("batch", help="the try-on for every row of a pairs CSV, resumable")
    sp.add_argument("pairs", help="CSV with the columns target, source and optional output, refine "
                                  "(paths relative to the CSV's folder; outputs relative to --out-dir)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    add_many_options(sp)
    sp.set_defaults(func=cmd_batch)

    sp = sub.add_parser("eval", help="the try-on's quality measured over many pairs (CSV, summary, contact sheet)")
    sp.add_argument("input", help="a folder of portraits (its ordered pairs) or a pairs CSV")
    sp.add_argument("--pairs", type=int, default=None, metavar="N", help="a seeded sample of N pairs (--seed)")
    sp.add_argument("--tryon-segmenter", default="bisenet", help="the try-on's parser: bisenet (default) or unet:PATH")
    sp.add_argument("--segmenter", default=None,
                    help="the parser that scores the results (default: the try-on's own, which flatters it; "
                         "use another, e.g. unet:PATH, for an independent view)")
    sp.add_argument("--save-results", action="store_true", help="also write every result to DIR/results/")
    sp.add_argument("--sheet-rows", type=int, default=40, help="pairs on the contact sheet, worst first (default 40)")
    add_many_options(sp)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("bench", help="seconds per stage of a fixed pair at 512² and 1024², and SDEdit's samplers")
    sp.add_argument("--sizes", default="512,1024", help="input sides, comma-separated (default 512,1024)")
    sp.add_argument("--runs", type=int, default=5, help="timed runs per size after a warm-up (median; default 5)")
    sp.add_argument("--refine", default="classic", choices=["classic", "none", "sdedit"],
                    help="the try-on timed (default classic; sdedit: with --diffusion-model, else random weights "
                         "of the DDPM CelebA-HQ architecture)")
    sp.add_argument("--target", help="the fixed pair's target (default: the astronaut portrait)")
    sp.add_argument("--source", help="the fixed pair's source (default: the Grace Hopper portrait)")
    sp.add_argument("--segmenter", default="bisenet", help="bisenet (default) or unet:PATH")
    g = sp.add_argument_group("SDEdit samplers")
    g.add_argument("--sdedit", action="store_true",
                   help="also time SDEdit: one UNet call, and a refine with each sampler (ddpm: t0 UNet calls, "
                        "about 10 minutes on a 2-core CPU at t0 = 500)")
    g.add_argument("--sdedit-only", action="store_true", help="only the SDEdit part")
    g.add_argument("--noise-level", type=int, default=500, metavar="T0", help="t0 (default 500)")
    g.add_argument("--steps", type=int, default=25, help="ddim steps (default 25)")
    g.add_argument("--calls", type=int, default=5, help="isolated UNet calls timed (median; default 5)")
    g.add_argument("--sdedit-runs", type=int, default=1, help="refines timed per sampler (median; default 1)")
    g.add_argument("--sdedit-size", type=int, default=None, metavar="N",
                   help="image side of the SDEdit part (default: the model's, 256)")
    g.add_argument("--diffusion-model", metavar="ID_OR_DIR", help="a diffusers folder (default: random weights)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.set_defaults(func=cmd_bench)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _warn(str(message))


def main(argv: Optional[List[str]] = None) -> int:
    import warnings

    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .images import limit_malloc_arenas

    limit_malloc_arenas()  # photo-sized arrays freed by worker threads go back to a few heaps, not one each
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return int(args.func(args) or 0)
    except HairTryOnError as exc:
        msg = " ".join(str(exc).split())  # one line, whatever the message held
        sys.stdout.flush()
        print(f"hairtryon: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hairtryon: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
