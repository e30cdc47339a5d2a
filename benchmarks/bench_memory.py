"""Peak memory of `hairtryon swap` on a very large photo (default 12000x12000, the issue's case).

The target is a real portrait enlarged to N x N and saved as a JPEG (../shared/faces/loho/
images/00148.jpg when present, else scikit-image's astronaut); the source a 1024² portrait.
The peak is the process's maximum resident set size, read from `/usr/bin/time -v` when it is
installed (else from getrusage of the child).

    .venv/bin/python benchmarks/bench_memory.py [--size 12000] [--refine classic]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=12000)
    ap.add_argument("--refine", default="classic")
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the hairtryon sources to measure")
    args = ap.parse_args()
    import cv2
    from skimage import data

    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    t_photo = args.faces / "loho" / "images" / "00148.jpg"
    s_photo = args.faces / "loho" / "images" / "00018.jpg"
    base = cv2.imread(str(t_photo)) if t_photo.is_file() else data.astronaut()[..., ::-1]
    env = dict(os.environ, PYTHONPATH=str(args.src), HAIRTRYON_OFFLINE="1")
    with tempfile.TemporaryDirectory() as d:
        big = Path(d) / f"big{args.size}.jpg"
        cv2.imwrite(str(big), cv2.resize(base, (args.size, args.size), interpolation=cv2.INTER_CUBIC),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        source = s_photo if s_photo.is_file() else Path(d) / "source.png"
        if not source.is_file():
            cv2.imwrite(str(source), data.astronaut()[:, ::-1, ::-1])
        cmd = [sys.executable, "-m", "hairtryon", "swap", str(big), str(source), "-o", str(Path(d) / "out.jpg"),
               "--refine", args.refine, "--force"]  # timed whatever the checks say of the pair
        timer = shutil.which("time", path="/usr/bin")
        t0 = time.perf_counter()
        if timer:
            p = subprocess.run([timer, "-v", *cmd], capture_output=True, text=True, env=env)
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
            peak_kb = int(m.group(1)) if m else -1
        else:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"swap failed: {p.stderr.strip().splitlines()[-1:]}")
    print(f"{args.size}x{args.size} target ({args.size ** 2 * 3 / 1e9:.2f} GB as RGB): peak {peak_kb / 1e6:.2f} GB, "
          f"{wall:.1f} s ({'/usr/bin/time -v' if timer else 'getrusage'})")


if __name__ == "__main__":
    main()
