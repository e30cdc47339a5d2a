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

    sp = sub.add_parser("weights", help="list, fetch or verify model weights")
    sp.add_argument("action", choices=["list", "fetch", "verify"])
    sp.add_argument("names", nargs="*", help="weights names (default: all)")
    sp.add_argument("--force", action="store_true", help="fetch: download again even if cached")
    sp.set_defaults(func=cmd_weights)

    from .training import add_cli_commands  # label, train-segmenter, eval-segmenter

    add_cli_commands(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HairTryOnError as exc:
        msg = str(exc).strip()
        print(f"hairtryon: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hairtryon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
