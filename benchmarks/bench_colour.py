"""Benchmark of the hair colour control (``--color``) and of the catalogue (issue 15).

Colour: seeded ordered (target, shape source, colour reference) triples of distinct photos,
drawn from ../shared/faces (all three sets) until ``--faces-n`` are done, and separately from
../shared/portraits until ``--portraits-n`` are done. Each is run twice, classic refine: without
a colour and with the reference's colour. Pairs the checks decline are listed as declined;
references without enough visible hair (or without a face) as refused; neither counts as done.
Per triple (see ``hairtryon.colour.figures``): CIEDE2000 between the result's median hair colour
and the reference's (target: median <= 6), the hair-shape IoU change against the run without
colour (target: within 0.01), the strands' high-frequency energy ratio, relative to the hair's
lightness spread (target: within 15%; the absolute ratio is printed too). Contact sheets (target
| shape | colour ref | without colour | with colour) go to ``--out``; look at every one.

Catalogue: ``hairtryon catalog`` on ``--styles`` styles against ``hairtryon swap`` once per
style, both from the command line (models loaded by each process, as a person would run them),
both with ``--force`` so that every style does the whole try-on.

    .venv/bin/python benchmarks/bench_colour.py --out out/bench_colour [--colour-only|--catalog-only] [--judge /tmp/judge-venv/bin/python]
    .venv/bin/python benchmarks/bench_colour.py --out out/bench_colour --summary-only [--judge ...]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HAIRTRYON_TEST_FACES", ROOT.parent / "shared" / "faces")).parent


def face_photos(faces: Path):
    return (sorted((faces / "loho" / "images").glob("*.jpg")) + sorted((faces / "maskgan").glob("*.jpg"))
            + sorted((faces / "ctrlhair").glob("*.png")))


def portrait_photos(portraits: Path):
    return sorted(p for p in portraits.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def tag(p: Path) -> str:
    """A short name: 'loho 00148', 'ctrlhair 02989', 'maskgan 1', or the portrait's name."""
    parent = p.parent.name if p.parent.name != "images" else p.parent.parent.name
    if parent in ("loho", "maskgan", "ctrlhair"):
        return f"{parent} {p.stem.split('_')[-1]}"
    return p.stem.split("_", 1)[-1][:20]


def colour_set(tool, photos, n: int, seed: int, label: str, out: Path, max_tries: int = 400):
    """Triples drawn until ``n`` are done; returns the rows (dicts)."""
    from hairtryon import colour
    from hairtryon.checks import CannotDoWell
    from hairtryon.errors import HairTryOnError
    from hairtryon.images import save_image

    rng = random.Random(seed)
    seen, rows, tiles = set(), [], []
    declined, refused = [], []
    print(f"\n== {label}: {n} triples (seed {seed}) from {len(photos)} photos", flush=True)
    print(f"{'target':>20s} {'shape':>20s} {'colour':>20s} {'dE':>6s} {'dE0':>6s} {'dIoU':>7s} {'HF':>5s} "
          f"{'HFrel':>5s} {'sec':>5s}")
    tries = 0
    while len(rows) < n and tries < max_tries:
        tries += 1
        t, s, r = rng.sample(photos, 3)
        if (t, s, r) in seen:
            continue
        seen.add((t, s, r))
        t0 = time.perf_counter()
        try:
            ref = tool.analyze(r)
            colour.measure_analysis(ref, colour.photo_name(r, colour.REFERENCE))
        except HairTryOnError as exc:
            refused.append((t, s, r, str(exc)))
            print(f"{tag(t):>20s} {tag(s):>20s} {tag(r):>20s}  refused (reference): {exc}", flush=True)
            continue
        try:
            base = tool(t, s, refine="classic")
            col = tool(t, s, refine="classic", color=r)
        except CannotDoWell as exc:
            declined.append((t, s, r, str(exc)))
            print(f"{tag(t):>20s} {tag(s):>20s} {tag(r):>20s}  declined: {exc}", flush=True)
            continue
        except HairTryOnError as exc:
            refused.append((t, s, r, str(exc)))
            print(f"{tag(t):>20s} {tag(s):>20s} {tag(r):>20s}  refused: {exc}", flush=True)
            continue
        f = colour.figures(tool, base, col, ref)
        f.update(target=str(t), shape=str(s), reference=str(r), seconds=time.perf_counter() - t0)
        rows.append(f)
        results = out / f"{label}_results"
        f["base_png"] = str(save_image(base.image, results / f"{len(rows):02d}_without.png"))
        f["colour_png"] = str(save_image(col.image, results / f"{len(rows):02d}_with.png"))
        print(f"{tag(t):>20s} {tag(s):>20s} {tag(r):>20s} {f['delta_e']:6.2f} {f['delta_e_before']:6.2f} "
              f"{f['iou_change']:+7.3f} {f['hf_ratio_abs']:5.2f} {f['hf_ratio']:5.2f} {f['seconds']:5.1f}", flush=True)
        fr = base.target.frame
        tiles.append([(f"T {tag(t)}", _head(base.target)), (f"shape {tag(s)}", _head(base.source)),
                      (f"colour {tag(r)}", _head(ref)), ("without --color", _cut(base.image, fr)),
                      (f"with --color, dE {f['delta_e']:.1f}", _cut(col.image, fr))])
        del base, col
    sheets = contact_sheets(tiles, out, label)
    (out / f"{label}.json").write_text(json.dumps({"rows": rows, "declined": [list(map(str, d)) for d in declined],
                                                   "refused": [list(map(str, d)) for d in refused], "drawn": tries},
                                                  indent=1))
    summary(rows, declined, refused, label, tries)
    print(f"contact sheets: {', '.join(map(str, sheets))}")
    return rows


def _cut(image, frame):
    from hairtryon.catalog import head_tile

    return head_tile(image, frame)


def _head(analysis):
    return _cut(analysis.image, analysis.frame)


def contact_sheets(rows, out: Path, label: str, per_sheet: int = 6):
    from hairtryon.images import save_image
    from hairtryon.visualize import labelled_grid

    paths = []
    for k in range(0, len(rows), per_sheet):
        tiles = [t for row in rows[k:k + per_sheet] for t in row]
        grid = labelled_grid(tiles, cols=5, tile=300, caption=f"{label}: triples {k + 1}-{min(k + per_sheet, len(rows))}")
        paths.append(save_image(grid, out / f"{label}_sheet{k // per_sheet + 1}.png"))
    return paths


def summary(rows, declined, refused, label: str, tries: int) -> None:
    if not rows:
        print(f"{label}: no triple done")
        return
    med = lambda k: statistics.median(r[k] for r in rows)
    de = [r["delta_e"] for r in rows]
    hf = [r["hf_ratio_abs"] for r in rows]
    dio = [abs(r["iou_change"]) for r in rows]
    print(f"\n{label}: {len(rows)} triples done ({len(declined)} declined by the checks, {len(refused)} refused, "
          f"{tries} drawn)")
    print(f"  CIEDE2000 result vs reference: median {med('delta_e'):.2f} (max {max(de):.2f}; <= 6 on "
          f"{sum(d <= 6 for d in de)} of {len(de)}); without --color: median {med('delta_e_before'):.2f}")
    print(f"  hair-shape IoU change vs the run without --color: median {statistics.median(dio):.4f}, max "
          f"{max(dio):.4f} (within 0.01 on {sum(d <= 0.01 for d in dio)} of {len(dio)}); IoU of the two runs' hair "
          f"median {med('iou_runs'):.3f}")
    print(f"  strands' high-frequency energy, with over without --color: median {med('hf_ratio_abs'):.3f}, range "
          f"{min(hf):.3f}-{max(hf):.3f} (within 15% on {sum(abs(h - 1) <= 0.15 for h in hf)} of {len(hf)}); "
          f"relative to the hair's L* spread: median {med('hf_ratio'):.2f}")
    judged = [r for r in rows if "judge_de" in r]
    if judged:
        jm = lambda k: statistics.median(r[k] for r in judged)
        jd = [abs(r["judge_iou_change"]) for r in judged]
        print(f"  the independent judge (../shared/judge, its own parser), {len(judged)} triples: CIEDE2000 result vs "
              f"reference median {jm('judge_de'):.2f} (without --color {jm('judge_de_before'):.2f}); shape IoU change "
              f"median {statistics.median(jd):.4f}, max {max(jd):.4f} (within 0.01 on {sum(d <= 0.01 for d in jd)})")


def judge(rows, python: str) -> None:
    """The independent judge's figures (``../shared/judge/judge.py score``) added to each row:
    its CIEDE2000 of the result's hair against the reference's (with and without colour), and
    its shape IoU against the source (with and without colour)."""
    script = SHARED / "judge" / "judge.py"

    def score(t, s, result):
        r = subprocess.run([python, str(script), "score", t, s, result], capture_output=True, text=True)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    for row in rows:
        with_ref, without_ref = score(row["target"], row["reference"], row["colour_png"]), \
            score(row["target"], row["reference"], row["base_png"])
        with_src, without_src = score(row["target"], row["shape"], row["colour_png"]), \
            score(row["target"], row["shape"], row["base_png"])
        try:
            row.update(judge_de=with_ref["de_color"], judge_de_before=without_ref["de_color"],
                       judge_iou=with_src["iou_shape"], judge_iou_change=with_src["iou_shape"] - without_src["iou_shape"])
        except (KeyError, TypeError):
            print(f"  the judge could not score {Path(row['colour_png']).name}", file=sys.stderr)


def resummarise(out: Path, python=None) -> None:
    for label in ("faces", "portraits"):
        path = out / f"{label}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if python:
                judge(data["rows"], python)
                path.write_text(json.dumps(data, indent=1))
            summary(data["rows"], data["declined"], data["refused"], label, data.get("drawn", 0))


# ---------------------------------------------------------------------------------- catalogue
def catalog_speed(faces: Path, n: int, out: Path) -> None:
    photos = sorted((faces / "loho" / "images").glob("*.jpg"))
    target, styles = photos[0], (photos[1:] + sorted((faces / "maskgan").glob("*.jpg")))[:n]
    if len(styles) < n:
        print(f"only {len(styles)} styles found", file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="bench-styles-"))
    try:
        for p in styles:
            (folder / p.name).symlink_to(p)
        exe = [sys.executable, "-m", "hairtryon"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        common = ["--refine", "classic", "--force"]
        print(f"\n== catalogue vs swap: target {target.name}, {len(styles)} styles, classic, --force; "
              f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
        t0 = time.perf_counter()
        cat = subprocess.run(exe + ["catalog", str(target), str(folder), "-o", str(out / "catalog_gallery.png"),
                                    "--out-dir", str(out / "catalog_results")] + common,
                             env=env, capture_output=True, text=True)
        t_cat = time.perf_counter() - t0
        print(cat.stdout.strip().splitlines()[-1] if cat.stdout.strip() else cat.stderr[-2000:])
        swaps = []
        for p in styles:
            t0 = time.perf_counter()
            r = subprocess.run(exe + ["swap", str(target), str(p), "-o", str(out / "swap_results" / f"{p.stem}.png")]
                               + common, env=env, capture_output=True, text=True)
            swaps.append(time.perf_counter() - t0)
            print(f"  swap {p.name}: rc {r.returncode}, {swaps[-1]:.1f} s", flush=True)
        per_cat, per_swap = t_cat / len(styles), sum(swaps) / len(styles)
        print(f"catalogue: {t_cat:.1f} s for {len(styles)} styles = {per_cat:.2f} s per style; swap per style "
              f"{per_swap:.2f} s (median {statistics.median(swaps):.2f}); catalogue {per_swap / per_cat:.1f}x faster "
              f"per style; load average {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", default=str(SHARED / "faces"))
    ap.add_argument("--portraits", default=str(SHARED / "portraits"))
    ap.add_argument("--out", default="out/bench_colour", help="contact sheets, JSON, catalogue outputs")
    ap.add_argument("--faces-n", type=int, default=24)
    ap.add_argument("--portraits-n", type=int, default=12)
    ap.add_argument("--styles", type=int, default=12)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--colour-only", action="store_true")
    ap.add_argument("--catalog-only", action="store_true")
    ap.add_argument("--summary-only", action="store_true", help="print the summaries of the JSON in --out again")
    ap.add_argument("--judge", metavar="PYTHON", help="also score with ../shared/judge run by this Python "
                                                       "(its venv, e.g. /tmp/judge-venv/bin/python)")
    args = ap.parse_args(argv)
    faces, portraits, out = Path(args.faces), Path(args.portraits), Path(args.out)
    if not faces.is_dir():
        print(f"portraits not found at {faces}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        resummarise(out, args.judge)
        return 0
    if not args.catalog_only:
        from hairtryon.pipeline import HairTryOn

        tool = HairTryOn(cache_size=12)
        colour_set(tool, face_photos(faces), args.faces_n, args.seed, "faces", out)
        if portraits.is_dir():
            colour_set(tool, portrait_photos(portraits), args.portraits_n, args.seed, "portraits", out)
        del tool
        if args.judge:
            print("\n== the same results scored by the independent judge")
            resummarise(out, args.judge)
    if not args.colour_only:
        catalog_speed(faces, args.styles, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
