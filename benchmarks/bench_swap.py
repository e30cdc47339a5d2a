"""Benchmark of `hairtryon swap` (classic refine) on pairs of ../shared/faces portraits.

Quality: one line per pair and a summary (median hair IoU, median CIEDE2000 of hair colour,
face PSNR, old-hair fraction; see hairtryon.evaluation). Speed: the whole swap of two 1024²
portraits, models loaded once, photos analysed afresh each run, median of 5 runs after a
warm-up.

    .venv/bin/python benchmarks/bench_swap.py [--faces ../shared/faces] [--speed-only|--quality-only]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


from hairtryon.evaluation import evaluate
from hairtryon.pipeline import HairTryOn

BANGED = ("00148", "02602", "19501")


def pairs(faces: Path):
    loho = sorted((faces / "loho" / "images").glob("*.jpg"))
    names = [p.stem for p in loho]
    out = []
    # every loho portrait as target once, with the next one as source (short, long, curly, bangs mixed)
    for i, p in enumerate(loho):
        out.append((p, loho[(i + 5) % len(loho)]))
    # the banged targets with two more sources each
    for b in BANGED:
        if b in names:
            t = loho[names.index(b)]
            for s in ("00018", "46826"):
                if s in names:
                    out.append((t, loho[names.index(s)]))
    mg = sorted((faces / "maskgan").glob("*.jpg"))
    for i, p in enumerate(mg):
        out.append((p, mg[(i + 1) % len(mg)]))
    return out


def quality(tool: HairTryOn, faces: Path) -> None:
    rows = []
    print(f"{'target':>16s} {'source':>16s} {'align':>11s} {'IoU':>6s} {'dE00':>6s} {'PSNR':>6s} {'old%':>6s} {'took%':>6s} {'sec':>5s}")
    for t, s in pairs(faces):
        r = tool(t, s, refine="classic")
        m = evaluate(r, tool)
        rows.append(m)
        tag = lambda p: f"{p.parent.name if p.parent.name != 'images' else 'loho'}/{p.stem}"
        print(f"{tag(t):>16s} {tag(s):>16s} {r.meta['alignment']:>11s} {m['hair_iou']:6.3f} {m['hair_delta_e']:6.2f} "
              f"{m['face_psnr']:6.1f} {100 * m['old_hair']:6.2f} {100 * m['face_taken']:6.2f} {r.timings['total']:5.2f}", flush=True)
    med = lambda k: statistics.median(r[k] for r in rows)
    psnrs = [r["face_psnr"] for r in rows]
    print(f"\nsummary over {len(rows)} pairs: hair IoU median {med('hair_iou'):.3f} (min {min(r['hair_iou'] for r in rows):.3f}); "
          f"hair CIEDE2000 median {med('hair_delta_e'):.2f} (max {max(r['hair_delta_e'] for r in rows):.2f}); "
          f"face PSNR min {min(psnrs):.1f} dB median {statistics.median(psnrs):.1f} dB; "
          f"old hair max {100 * max(r['old_hair'] for r in rows):.2f}% of face area, under 1% on "
          f"{sum(r['old_hair'] < 0.01 for r in rows)} of {len(rows)} pairs; face pixels taken for old hair max "
          f"{100 * max(r['face_taken'] for r in rows):.2f}%")


def speed(tool: HairTryOn, faces: Path, runs: int = 5) -> None:
    t = faces / "loho" / "images" / "00148.jpg"
    s = faces / "loho" / "images" / "00018.jpg"
    from hairtryon.images import load_image

    target, source = load_image(t), load_image(s)
    assert target.shape[:2] == (1024, 1024) and source.shape[:2] == (1024, 1024)
    times, stages = [], []
    for i in range(runs + 1):
        tool._cache.clear()  # photos analysed afresh; models stay loaded
        t0 = time.perf_counter()
        r = tool(target, source, refine="classic")
        dt = time.perf_counter() - t0
        if i:
            times.append(dt)
            stages.append(r.timings)
    print(f"\nspeed: swap of two 1024x1024 portraits, {runs} runs after a warm-up, {os.cpu_count()} CPU(s): "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    keys = [k for k in stages[0] if k != "total"]
    print("  median per stage: " + ", ".join(f"{k} {statistics.median(st[k] for st in stages):.3f}" for k in keys))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", default=os.environ.get("HAIRTRYON_TEST_FACES",
                                                      str(Path(__file__).resolve().parents[1].parent / "shared" / "faces")))
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--quality-only", action="store_true")
    args = ap.parse_args(argv)
    faces = Path(args.faces)
    if not faces.is_dir():
        print(f"portraits not found at {faces}", file=sys.stderr)
        return 2
    tool = HairTryOn()
    if not args.speed_only:
        quality(tool, faces)
    if not args.quality_only:
        speed(tool, faces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
