"""Benchmark of the new hair as a layer (paper 3.2.3; issue 13) on ordinary photos of ../shared/portraits.

Halo (``--halo``): three sources with hair against a visible background, copies with the
background painted saturated blue (0, 0, 255) and neutral grey
(:func:`hairtryon.evaluation.painted_background`), each swapped onto a dark and a light target;
per swap the leak (:func:`hairtryon.evaluation.blue_leak`: strongly blue pixels, Lab b* < -30,
within 15 px of the result's hair beyond the target's own, over the hair's area) and whether the
grey copy's hair is cut like the blue copy's (:func:`hairtryon.evaluation.cut_difference`).

Grain (``--grain``): 12 pairs; per pair, at the target photo's resolution
(:func:`hairtryon.evaluation.hair_layer_measures`): ``sharp`` the edge blur of the target's own
hair over that of the new hair (1: as sharp as the hair this photo had); ``sharpF`` the same
against the faces (target face over new hair, divided by source face over source hair);
``detail`` the high-frequency energy (finest octave over the next) of the new hair over the
target face's, divided by the source hair's over the source face's; ``grain`` the new hair's
grain level over the target face's. Then the colour against the source's
(:func:`hairtryon.evaluation.layer_colour_difference`, CIEDE2000) and the enlargement.

Crops (``--save DIR``): for the halo and grain pairs, 100% crops of the hair's edge from each
result, and their places, into DIR; ``--sheet BEFORE AFTER OUT.png`` puts two such folders side by
side (the places of BEFORE are reused by AFTER when given ``--places BEFORE``).

    .venv/bin/python benchmarks/bench_hair_layer.py --halo --grain [--save DIR] [--places DIR]
    .venv/bin/python benchmarks/bench_hair_layer.py --sheet BEFORE AFTER OUT.png
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hairtryon.pipeline import HairTryOn

PORTRAITS = Path(os.environ.get("HAIRTRYON_TEST_FACES", Path(__file__).resolve().parents[1].parent / "shared" / "faces")).parent / "portraits"

HALO_SOURCES = ["williamyang1991_unsplash-rDEOVtE7vOs.jpg",  # red bob before a lake and sky, curled in
                "thumbor_800px-Katherine_Maher.jpg",  # short blond curls before foliage
                "williamyang1991_yRpe13BHdKw.jpg"]  # big curly hair before a pool
HALO_TARGETS = ["williamyang1991_ILip77SbmOE.jpg",  # black studio
                "ahn-github_neutral.jpeg"]  # plain white
GRAIN_PAIRS = [  # (target, source): enlargements from 1x to 4x, soft and sharp photos, JPEG and PNG
    ("williamyang1991_ILip77SbmOE.jpg", "williamyang1991_unsplash-rDEOVtE7vOs.jpg"),
    ("williamyang1991_ILip77SbmOE.jpg", "thumbor_800px-Katherine_Maher.jpg"),
    ("ahn-github_neutral.jpeg", "williamyang1991_yRpe13BHdKw.jpg"),
    ("williamyang1991_i5R8hbZFDdc.jpg", "williamyang1991_unsplash-rDEOVtE7vOs.jpg"),
    ("thumbor_800px-Christophe_Henner_-_June_2016.jpg", "williamyang1991_pexels-andrea-piacquadio-733872.jpg"),
    ("IBM_face.png", "Azure-Samples_detection1.jpg"),
    ("hongweijia_Chris.jpeg", "williamyang1991_i5R8hbZFDdc.jpg"),
    ("ageitgey_obama.jpg", "IBM_face.png"),
    ("Zelex_kodim04.png", "thumbor_800px-Katherine_Maher.jpg"),
    ("amfang_tom_cruise.jpg", "williamyang1991_yRpe13BHdKw.jpg"),
    ("thumbor_800px-Guido-portrait-2014.jpg", "Niremizov_image-2-women-on-phones.jpg"),
    ("lulumuts_braid-out.jpg", "ahn-github_neutral.jpeg"),
]
CROP = 192


def short(name: str) -> str:
    return Path(name).stem.split("_", 1)[-1][:18]


def edge_places(result, n: int = 4):
    """Up to ``n`` (x, y) places in the target photo's pixels on the new hair's edge: its left,
    right and top ends against the background, and where it meets the face."""
    import cv2

    from hairtryon.framing import disk
    from hairtryon.segmentation import BACKGROUND, FACE

    tgt = result.target
    f = tgt.frame
    hair = result.masks["hair_alpha"] > 0.5
    edge = hair & ~cv2.erode(hair.astype(np.uint8), disk(2)).astype(bool) & tgt.inside
    r = max(2, f.size // 60)
    near_bg = cv2.dilate((tgt.semantic.labels == BACKGROUND).astype(np.uint8), disk(r)).astype(bool)
    near_face = cv2.dilate((tgt.semantic.labels == FACE).astype(np.uint8), disk(r)).astype(bool)
    places = []
    ys, xs = np.nonzero(edge & near_bg)
    if len(xs):
        upper = ys < np.quantile(ys, 0.7)
        for pick in (np.argmin(np.where(upper, xs, 1e9)), np.argmax(np.where(upper, xs, -1)), np.argmin(ys)):
            places.append((xs[pick], ys[pick]))
    ys, xs = np.nonzero(edge & near_face)
    if len(xs):
        eye_y = tgt.points[1:3, 1].mean()
        pick = np.argmin(np.abs(ys - eye_y) + 0.1 * np.abs(xs - tgt.points[1, 0]))
        places.append((xs[pick], ys[pick]))
    out = []
    for x, y in places[:n]:
        px = (x + 0.5) / f.scale - 0.5 + f.x0
        py = (y + 0.5) / f.scale - 0.5 + f.y0
        out.append((int(round(px)), int(round(py))))
    return out


def crop(image: np.ndarray, xy, size: int = CROP) -> np.ndarray:
    h, w = image.shape[:2]
    tile = np.full((size, size, 3), 128, np.uint8)
    x0, y0 = int(xy[0]) - size // 2, int(xy[1]) - size // 2
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + size), min(h, y0 + size)
    if sx1 > sx0 and sy1 > sy0:
        tile[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return tile


def save_crops(save: Path, key: str, result, places_from: Path = None) -> None:
    places = None
    if places_from is not None and (places_from / f"{key}.json").exists():
        places = json.loads((places_from / f"{key}.json").read_text())
    if places is None:
        places = edge_places(result)
    (save / f"{key}.json").write_text(json.dumps(places))
    tiles = [crop(result.image, p) for p in places]
    Image.fromarray(np.hstack(tiles) if tiles else np.zeros((CROP, CROP, 3), np.uint8)).save(save / f"{key}.png")


def halo(tool: HairTryOn, save: Path = None, places_from: Path = None):
    from hairtryon.evaluation import blue_leak, cut_difference, painted_background

    rows = []
    print(f"{'source':>20s} {'target':>20s} {'leak %':>8s} {'blue px':>8s} {'cut diff %':>10s} {'s':>5s}")
    for s in HALO_SOURCES:
        analysis = tool.analyze(PORTRAITS / s)
        copies = {"blue": painted_background(analysis, (0, 0, 255)), "grey": painted_background(analysis, (128, 128, 128))}
        for t in HALO_TARGETS:
            t0 = time.perf_counter()
            res = {c: tool(PORTRAITS / t, img, refine="classic", force=True) for c, img in copies.items()}
            dt = (time.perf_counter() - t0) / 2
            leak = blue_leak(res["blue"])
            cut = cut_difference(res["blue"], res["grey"])
            rows.append(dict(source=s, target=t, leak=leak["leak"], cut=cut))
            print(f"{short(s):>20s} {short(t):>20s} {100 * leak['leak']:8.3f} {leak['pixels']:8d} {100 * cut:10.3f} {dt:5.1f}",
                  flush=True)
            if save is not None:
                for c, r in res.items():
                    save_crops(save, f"halo_{short(s)}_{short(t)}_{c}", r, places_from)
    print(f"\nhalo: leak max {100 * max(r['leak'] for r in rows):.3f}% median {100 * statistics.median(r['leak'] for r in rows):.3f}% "
          f"of the hair's area over {len(rows)} swaps (limit 0.2%); grey-vs-blue cut difference max "
          f"{100 * max(r['cut'] for r in rows):.2f}% of the hair's area")
    return rows


def grain(tool: HairTryOn, save: Path = None, places_from: Path = None):
    from hairtryon.evaluation import hair_layer_measures, layer_colour_difference

    rows = []
    print(f"{'target':>20s} {'source':>20s} {'enlarge':>7s} {'sharp':>6s} {'sharpF':>6s} {'detail':>6s} {'grain':>6s} "
          f"{'dE00':>5s}   (edge blur px: new hair / target's own hair / target face; grain: new hair / target face)")
    for t, s in GRAIN_PAIRS:
        r = tool(PORTRAITS / t, PORTRAITS / s, refine="classic", force=True)  # the layer is measured, not the pair
        m = hair_layer_measures(r)
        m["colour"] = layer_colour_difference(r)
        m["upscale"] = r.meta.get("hair_upscale", float("nan"))
        m["warned"] = any("too small" in w for w in r.meta.get("warnings", []))
        rows.append(m)
        print(f"{short(t):>20s} {short(s):>20s} {m['upscale']:7.2f} {m['sharpness_own']:6.2f} {m['sharpness']:6.2f} "
              f"{m['detail']:6.2f} {m['noise']:6.2f} {m['colour']:5.2f}   ({m['hair_blur']:.2f} / {m['target_hair_blur']:.2f} / "
              f"{m['face_blur']:.2f}; {m['hair_noise']:.2f} / {m['face_noise']:.2f})"
              + ("  warned: source too small" if m["warned"] else ""), flush=True)
        if save is not None:
            save_crops(save, f"grain_{short(t)}_{short(s)}", r, places_from)
    med = lambda k, rr=rows: statistics.median(x[k] for x in rr if np.isfinite(x[k]))
    ok = [x for x in rows if not x["warned"]]
    inside = lambda k: sum(0.7 <= x[k] <= 1.4 for x in ok)
    print(f"\ngrain over {len(rows)} pairs (enlargement nan: under {1.5}x, not recorded): sharpness against the target's own "
          f"hair median {med('sharpness_own'):.2f} (in 0.7-1.4 on {inside('sharpness_own')} of the {len(ok)} pairs not warned "
          f"about); against the faces (sharpF) median {med('sharpness'):.2f}; high-frequency energy (detail) median "
          f"{med('detail'):.2f}; grain against the target's face median {med('noise'):.2f} (in 0.7-1.4 on "
          f"{inside('noise')} of {len(ok)}); colour CIEDE2000 median {med('colour'):.2f}, max {max(x['colour'] for x in rows):.2f}")
    return rows


def sheet(before: Path, after: Path, out: Path) -> None:
    """Each pair's crops: a row of before, a row of after, labelled."""
    import cv2

    keys = sorted(p.stem for p in before.glob("*.png") if (after / p.name).exists())
    blocks = []
    for k in keys:
        b, a = np.array(Image.open(before / f"{k}.png").convert("RGB")), np.array(Image.open(after / f"{k}.png").convert("RGB"))
        w = max(b.shape[1], a.shape[1])
        pad = lambda x: np.pad(x, ((0, 0), (0, w - x.shape[1]), (0, 0)), constant_values=255)
        label = np.full((22, w, 3), 255, np.uint8)
        cv2.putText(label, f"{k}: top before (main), below after (matting)", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        blocks += [label, pad(b), np.full((3, w, 3), 255, np.uint8), pad(a), np.full((10, w, 3), 255, np.uint8)]
    w = max(x.shape[1] for x in blocks)
    blocks = [np.pad(x, ((0, 0), (0, w - x.shape[1]), (0, 0)), constant_values=255) for x in blocks]
    Image.fromarray(np.vstack(blocks)).save(out)
    print(f"wrote {out} ({len(keys)} pairs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--halo", action="store_true")
    ap.add_argument("--grain", action="store_true")
    ap.add_argument("--save", type=Path, help="write 100%% crops of every result's hair edge here")
    ap.add_argument("--places", type=Path, help="take the crops' places from this earlier --save folder")
    ap.add_argument("--sheet", nargs=3, type=Path, metavar=("BEFORE", "AFTER", "OUT"))
    args = ap.parse_args(argv)
    if args.sheet:
        sheet(*args.sheet)
        return 0
    if not PORTRAITS.is_dir():
        print(f"portraits not found at {PORTRAITS}", file=sys.stderr)
        return 2
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    tool = HairTryOn(cache_size=32)
    if args.halo:
        halo(tool, args.save, args.places)
    if args.grain:
        grain(tool, args.save, args.places)
    return 0


if __name__ == "__main__":
    sys.exit(main())
