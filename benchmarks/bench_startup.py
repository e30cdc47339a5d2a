"""Start-up overhead of the `hairtryon` command: where the time goes before the try-on runs.

Compares the wall time of `hairtryon swap T S -o OUT` as a process (what a person waits for)
with the same swap in a process whose models are already loaded (what the pipeline itself
takes), on a pair of 1024² portraits, and breaks the difference down: interpreter, imports
(numpy/Pillow/OpenCV, torch, MediaPipe, diffusers), model loading (face parser, Face Mesh),
first-call warm-up, reading and writing the photos.

    .venv/bin/python benchmarks/bench_startup.py [--runs 3] [--refine classic|auto] [--faces ../shared/faces]

The pair is ../shared/faces/loho/images/00148.jpg and 00018.jpg when present, else the two
public-domain portraits enlarged to 1024². Run it on an idle machine and say the load average
(printed first).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BREAKDOWN = r"""
import json, sys, time
t = {}
t0 = time.perf_counter()
def lap(name):
    global t0
    now = time.perf_counter(); t[name] = now - t0; t0 = now
import numpy, PIL.Image, cv2; lap("numpy + Pillow + OpenCV")
import hairtryon.cli; lap("hairtryon.cli")
import hairtryon.pipeline; lap("hairtryon.pipeline (imports)")
from hairtryon.landmarks import default_landmarker; default_landmarker(); lap("MediaPipe: import + Face Mesh")
torch_before = "torch" in sys.modules
from hairtryon.segmentation import get_segmenter; seg = get_segmenter("bisenet")
lap("face parser: " + ("torch + checkpoint" if "torch" in sys.modules and not torch_before else type(seg).__name__))
from hairtryon import images
from hairtryon.images import save_image
load = getattr(images, "load_photo", images.load_image)
T, S = load(sys.argv[1]), load(sys.argv[2]); lap("read the two photos")
from hairtryon.pipeline import HairTryOn
tool = HairTryOn(seg)
r = tool(T, S, refine=sys.argv[3], force=True); lap("first swap")
tool._cache.clear(); r = tool(T, S, refine=sys.argv[3], force=True); lap("second swap (warm)")
save_image(getattr(r, "output", r.image), sys.argv[4]); lap("write the result (PNG)")
t["modules"] = [m for m in ("torch", "diffusers", "matplotlib") if m in sys.modules]
print(json.dumps(t))
"""

IN_PROCESS = r"""
import json, statistics, sys, time
from hairtryon import images
from hairtryon.pipeline import HairTryOn
tool = HairTryOn()
load = getattr(images, "load_photo", images.load_image)
T, S = load(sys.argv[1]), load(sys.argv[2])
tool(T, S, refine=sys.argv[3], force=True)  # warm-up
times = []
for _ in range(int(sys.argv[4])):
    tool._cache.clear()
    t = time.perf_counter(); tool(T, S, refine=sys.argv[3], force=True); times.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(times), "runs": times, "diffusers": "diffusers" in sys.modules}))
"""


def pair(faces: Path, tmp: Path):
    t, s = faces / "loho" / "images" / "00148.jpg", faces / "loho" / "images" / "00018.jpg"
    if t.is_file() and s.is_file():
        return t, s
    import cv2
    from matplotlib import cbook
    from skimage import data

    from hairtryon.images import load_image, save_image

    a = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    g = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    g = cv2.resize(g[44:556], (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return save_image(a, tmp / "astronaut_1024.png"), save_image(g, tmp / "grace_hopper_1024.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the environment to measure")
    ap.add_argument("--refine", default="classic", choices=["classic", "auto", "none"])
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the hairtryon sources to measure (default: this tree's)")
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    env = dict(os.environ, PYTHONPATH=str(args.src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HAIRTRYON_OFFLINE", "1")  # no network: the figures do not depend on it
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t, s = pair(args.faces, tmp)
        print(f"pair: {t} <- {s}, refine {args.refine}")

        t0 = time.perf_counter()
        subprocess.run([args.python, "-c", "pass"], check=True, env=env)
        bare = time.perf_counter() - t0

        walls = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            p = subprocess.run([args.python, "-m", "hairtryon", "swap", str(t), str(s), "-o", str(tmp / "out.png"),
                                "--refine", args.refine, "--force"], env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if p.returncode != 0:
                sys.exit(f"swap failed: {p.stderr.strip().splitlines()[-1:]}")
        wall = statistics.median(walls)

        p = subprocess.run([args.python, "-c", IN_PROCESS, str(t), str(s), args.refine, str(args.runs)],
                           env=env, capture_output=True, text=True, check=True)
        inproc = json.loads(p.stdout.strip().splitlines()[-1])

        p = subprocess.run([args.python, "-c", BREAKDOWN, str(t), str(s), args.refine, str(tmp / "b.png")],
                           env=env, capture_output=True, text=True, check=True)
        parts = json.loads(p.stdout.strip().splitlines()[-1])

    print(f"\n`hairtryon swap` as a process: {wall:.2f} s median of {args.runs} ({', '.join(f'{w:.2f}' for w in walls)})")
    print(f"the same swap, models loaded:  {inproc['median']:.2f} s median of {args.runs}")
    print(f"start-up overhead:             {wall - inproc['median']:.2f} s")
    print(f"\nwhere a process's time goes (one run, in order; interpreter alone {bare:.2f} s):")
    for name, sec in parts.items():
        if isinstance(sec, float):
            print(f"  {name:32s} {sec:6.2f} s")
    print(f"  imported on this run: {', '.join(parts['modules']) or 'neither torch nor diffusers nor matplotlib'}")
    print(json.dumps({"process_s": round(wall, 3), "in_process_s": round(inproc["median"], 3),
                      "overhead_s": round(wall - inproc["median"], 3), "refine": args.refine}))


if __name__ == "__main__":
    main()
