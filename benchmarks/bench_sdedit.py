"""Speed of SDEdit refinement: the paper's DDPM sampler against DDIM, measured in one run.

A thin wrapper over ``hairtryon bench --sdedit-only`` (``hairtryon.bench.bench_sdedit``), kept
so that existing commands still work; there is one way to measure. The model is the DDPM
CelebA-HQ 256² architecture (google/ddpm-ema-celebahq-256, 113.7 M parameters) with random
weights, loaded through hairtryon.refinement.load_diffusion_model like the real one.

    PYTHONPATH=src python benchmarks/bench_sdedit.py [--t0 500] [--steps 25] [--calls 5] [--runs 1]
                                                     [--small 0] [--threads N] [--device auto] [--json]

Both samplers are always measured for real (``--full-ddpm`` is accepted and changes nothing):
at t0 = 500 the DDPM refine is 500 UNet calls, about 10 minutes on a 2-core CPU. ``--small N``
measures at N² instead of the model's 256² (a quick look at the ratio).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hairtryon.bench import CELEBAHQ_256  # noqa: E402,F401  (the architecture, for scripts that import it here)
from hairtryon.cli import main as hairtryon  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t0", type=int, default=500)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--calls", type=int, default=5, help="isolated UNet calls timed (median)")
    ap.add_argument("--runs", type=int, default=1, help="refines timed per sampler (median)")
    ap.add_argument("--small", type=int, default=0, help="image side instead of the model's 256 (0: 256)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--full-ddpm", action="store_true", help="(always on)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    args = ["bench", "--sdedit-only", "--noise-level", str(a.t0), "--steps", str(a.steps), "--calls", str(a.calls),
            "--sdedit-runs", str(a.runs), "--threads", str(a.threads), "--device", a.device,
            "--precision", a.precision] + (["--sdedit-size", str(a.small)] if a.small else []) \
        + (["--json"] if a.json else [])
    return hairtryon(args)


if __name__ == "__main__":
    sys.exit(main())
