"""The field's measures (metrics.py, evaluation.py), ``hairtryon eval``, and the CI quality floors.

Cost, measured on the shared 2-core machine at a load average of about 6 (a dedicated CI machine
is faster): the metric tests instant; the measures of real results 39 s; the CLI evaluation 21 s
and its Ray twin 31 s; the floors 74 s (8 pairs of ../shared/faces/loho at 1024²) and 37 s (6
pairs of ../shared/portraits).
"""
import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from hairtryon import metrics
from hairtryon.batch import RunOptions, folder_pairs, run_eval
from hairtryon.cli import main
from hairtryon.evaluation import MEASURES, badness_order, evaluate, summarize
from hairtryon.pipeline import HairTryOn


# ------------------------------------------------------------------------- pure metric functions
def test_psnr_and_ssim_on_known_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    inner = (a < 250).all(axis=2)  # where +5 did not clip, the error is exactly 5
    assert metrics.psnr(a, b, inner) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-9)
    assert metrics.psnr(a, a) == float("inf") and metrics.psnr(a, a, max_db=100) == 100
    assert math.isnan(metrics.psnr(a, b, np.zeros((64, 64), bool)))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = lambda sigma: np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)  # noqa: E731
    assert 1.0 > metrics.ssim(a, noisy(5)) > metrics.ssim(a, noisy(40))
    assert metrics.ssim(a, noisy(40)) < 0.95
    # the mask decides which pixels count: damage outside it does not lower the score
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    spoiled = a.copy()
    spoiled[:, 40:] = 0
    assert metrics.ssim(a, spoiled, half) == pytest.approx(1.0)
    assert metrics.ssim(a, spoiled, ~half) < 0.5


def test_iou_colour_and_area():
    a = np.zeros((10, 10), bool)
    a[:, :5] = True
    b = np.zeros((10, 10), bool)
    b[:, 2:7] = True
    assert metrics.iou(a, b) == pytest.approx(30 / 70)
    assert metrics.iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    dark = red.copy()
    dark[..., 0] = 150
    ones = np.ones((8, 8), bool)
    assert metrics.colour_difference(red, ones, red, ones) == pytest.approx(0.0, abs=1e-9)
    d = metrics.colour_difference(red, ones, dark, ones)
    assert 5 < d < 30
    assert math.isnan(metrics.colour_difference(red, ones, dark, ones, min_pixels=65))
    assert metrics.area_fraction(a, np.ones((10, 10), bool)) == 0.5
    assert metrics.area_fraction(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_summary_and_worst_first_order():
    rows = [{"pair": "a", "status": "ok", "hair_iou": 0.95, "leftover": 0.0},
            {"pair": "b", "status": "ok", "hair_iou": 0.60, "leftover": 0.2},
            {"pair": "c", "status": "declined", "message": "wearing a hat"},
            {"pair": "d", "status": "failed", "message": "ValueError: x"},
            {"pair": "e", "status": "ok", "hair_iou": 0.90, "leftover": float("nan")}]
    s = summarize(rows)
    assert (s["pairs"], s["ok"], s["declined"], s["failed"]) == (5, 3, 1, 1)
    assert s["measures"]["hair_iou"]["median"] == pytest.approx(0.90)
    assert s["measures"]["hair_iou"]["worst"][0] == {"pair": "b", "value": 0.60}
    assert s["measures"]["leftover"]["n"] == 2 and s["measures"]["leftover"]["worst"][0]["pair"] == "b"
    assert [rows[i]["pair"] for i in badness_order(rows)] == ["d", "b", "e", "a", "c"]


# ------------------------------------------------------------------------- measures of real results
@pytest.fixture(scope="module")
def tool(segmenter):
    return HairTryOn(segmenter)


def test_measures_see_a_spoiled_result(tool, loho_dir):
    """The same try-on scored as made, and with its old hair pasted back (the target itself as
    the "result"): the shape, leftover and skin measures must see the difference."""
    # (forced: the bob would leave the side of his head bare, which the checks decline)
    r = tool(loho_dir / "images" / "19501.jpg", loho_dir / "images" / "00018.jpg", refine="classic", force=True)
    good = evaluate(r, tool)
    assert good["hair_iou"] > 0.85 and good["leftover"] < 0.01, good
    assert good["skin_delta_e"] < 6, good  # the long hair's forehead and temples are uncovered and measured
    r.image = r.target.image  # nothing done: the old hair is all still there
    bad = evaluate(r, tool)
    assert bad["hair_iou"] < good["hair_iou"] - 0.1, bad
    assert bad["leftover"] > 0.05, bad
    assert math.isnan(bad["skin_delta_e"])  # no skin was uncovered
    assert bad["nonhair_psnr"] == 100.0  # untouched pixels are identical


def test_another_scorer_reparses_every_photo(tool, loho_dir):
    """A scorer other than the try-on's parser parses target, source and result itself and
    moves the source hair with the try-on's transform: the same model as a second instance
    must give the same figures as the shortcut through the try-on's own maps."""
    from hairtryon.segmentation import BiSeNetSegmenter

    other = BiSeNetSegmenter()
    r = tool(loho_dir / "images" / "02602.jpg", loho_dir / "images" / "46826.jpg", refine="classic", force=True)
    own, indep = evaluate(r, tool), evaluate(r, tool, scorer=other)
    assert indep["hair_iou"] == pytest.approx(own["hair_iou"], abs=0.02)
    assert indep["hair_delta_e"] == pytest.approx(own["hair_delta_e"], abs=0.5)
    assert indep["leftover"] == pytest.approx(own["leftover"], abs=0.005)


# ------------------------------------------------------------------------- the eval command
@pytest.fixture(scope="module")
def eval_pairs(tmp_path_factory, ctrlhair_dir):
    """A pairs CSV of 5 pairs of 256² portraits and one bad pair (a photo without a face). The
    checks decline most of these tight crops (the photo cuts their hair off): the runs use --force."""
    root = tmp_path_factory.mktemp("evalpairs")
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(root / "blank.png")
    photos = sorted(ctrlhair_dir.glob("*.png"))[:4]
    rows = [(photos[0], photos[1]), (photos[1], photos[2]), (root / "blank.png", photos[0]),
            (photos[2], photos[3]), (photos[3], photos[0]), (photos[2], photos[1])]
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "source"])
        w.writerows([(str(t), str(s)) for t, s in rows])
    return root / "pairs.csv"


@pytest.fixture(scope="module")
def serial_eval(eval_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_serial")
    assert main(["eval", str(eval_pairs), "--out-dir", str(out), "--refine", "classic", "--quiet", "--force"]) == 0
    return out


def test_cli_eval_writes_csv_summary_and_sheet(serial_eval):
    rows = list(csv.DictReader(open(serial_eval / "eval.csv")))
    assert len(rows) == 6 and set(MEASURES) <= set(rows[0])
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["status"] == "declined" and "no face" in bad[0]["message"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(0 < float(r["hair_iou"]) <= 1 and float(r["nonhair_psnr"]) > 20 for r in ok)
    assert len({r["seed"] for r in ok}) == 5  # every pair its own seed
    summary = json.loads((serial_eval / "summary.json").read_text())
    assert (summary["ok"], summary["declined"], summary["failed"]) == (5, 1, 0)
    assert len(summary["measures"]["hair_iou"]["worst"]) == 5
    assert summary["run"]["scored_by_own_parser"] is True
    assert summary["seconds_per_stage_median"]["analysis"] >= 0 and summary["peak_rss_mb"]["max"] > 100
    costs = list(csv.DictReader(open(serial_eval / "costs.csv")))
    assert len(costs) == 6 and float(costs[0]["s_total"]) > 0 and "s_score" in costs[0]
    sheet = Image.open(serial_eval / "sheet.png")
    assert sheet.size[0] == 3 * 192 and sheet.size[1] >= 6 * 192  # a row per pair


def test_ray_eval_gives_the_serial_csv(eval_pairs, serial_eval, tmp_path):
    """A local Ray instance with 2 CPUs (2 actors, models loaded once in each): eval.csv is
    byte for byte the serial one, the declined pair included."""
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert main(["eval", str(eval_pairs), "--out-dir", str(out), "--refine", "classic", "--quiet", "--force",
                 "--ray", "local", "--workers", "2"]) == 0
    assert (out / "eval.csv").read_bytes() == (serial_eval / "eval.csv").read_bytes()
    workers = {r["worker"] for r in csv.DictReader(open(out / "costs.csv"))}
    assert len(workers) == 2  # both actors did pairs


def test_eval_folder_pairs_are_seeded(ctrlhair_dir):
    all_pairs = folder_pairs(ctrlhair_dir)
    n = len(sorted(ctrlhair_dir.glob("*.png")))
    assert len(all_pairs) == n * (n - 1)
    a, b, c = folder_pairs(ctrlhair_dir, 7, seed=1), folder_pairs(ctrlhair_dir, 7, seed=1), folder_pairs(ctrlhair_dir, 7, seed=2)
    assert a == b and a != c and len(set(a)) == 7


# ------------------------------------------------------------------------- the CI floors
# Each floor is a test of its own, on the median of a fixed seeded sample (classic refine). A
# floor today's try-on does not reach is marked as expected to fail, with the measured figure;
# the mark is strict, so that a floor that starts passing fails here until its mark is removed.
#
# ../shared/faces: the floors, on 8 seeded pairs of ../shared/faces/loho.
FACES_FLOORS = {"hair_iou": (">=", 0.85), "hair_delta_e": ("<=", 6.0), "nonhair_psnr": (">=", 34.0),
                "leftover": ("<", 0.01), "skin_delta_e": ("<=", 3.0)}
FACES_SAMPLE = 8
FACES_SHORT = {
    "nonhair_psnr": "28.1 dB on the sample (7 of 8 done): the rebuild of the old hair's place changes pixels "
                    "beyond the hair, along its edge and at the brows (29.4 dB over all 156 loho pairs at 01de360)",
    "skin_delta_e": "15.0 on the sample since the matting merge (2.9 before it, at 01de360): rebuilt foreheads "
                    "come out as grey or brown patches",
}
# ../shared/portraits: what the realism work reached, measured on 6 seeded pairs at 01de360 (5
# done; medians hair IoU 0.785, hair dE 7.00, non-hair PSNR 32.5 dB, leftover 0.32%, skin dE 5.10
# over 3 pairs), the floors a little below. Over 48 seeded pairs the medians were 0.771, 2.44,
# 31.5 dB, 0.50%, 4.89: six pairs of ordinary photos make a noisy sample. The lead raises these.
PORTRAITS_HAIR_IOU = 0.78
PORTRAITS_HAIR_DELTA_E = 7.1
PORTRAITS_NONHAIR_PSNR = 32.0
PORTRAITS_LEFTOVER = 0.004
PORTRAITS_SKIN_DELTA_E = 5.2
# Since the eyebrow check (a pair whose new hairstyle would uncover a brow the old hair hid is
# declined) 4 of the first 6 seeded pairs are declined: the sample is 12 pairs. Since the check of
# what is left to invent (more than 1.3x the face's area of scene and clothes under the old hair,
# left bare) Katherine_Maher <- obama and yRpe13BHdKw <- goddess-locs are declined too: 3 done,
# medians hair IoU 0.421, hair dE 7.47, non-hair PSNR 18.6 dB, leftover 0, skin dE 18.3 over 1.
# Remeasured on 2026-12-02 (the code before and after that day's changes alike): 3 done, hair IoU
# 0.427, hair dE 7.75, non-hair PSNR 18.5 dB, leftover 0.03%, skin dE 32.4 over 1. Since the
# check of a target photo that ends where the new hairstyle begins (kodim15 <- angry declined)
# only 2 of those 12 were done: a median of two is noise, so the sample is now the README's 48
# seeded pairs (6 done, about 3 minutes, most pairs are declined within seconds). Measured on
# 2026-12-03 at 41ad382: hair IoU 0.860, hair dE 1.76, non-hair PSNR 36.3 dB, leftover 0.10%,
# skin dE 1.95 over 4: every floor met.
PORTRAITS_SAMPLE = 48
PORTRAITS_FLOORS = {"hair_iou": (">=", PORTRAITS_HAIR_IOU), "hair_delta_e": ("<=", PORTRAITS_HAIR_DELTA_E),
                    "nonhair_psnr": (">=", PORTRAITS_NONHAIR_PSNR), "leftover": ("<", PORTRAITS_LEFTOVER),
                    "skin_delta_e": ("<=", PORTRAITS_SKIN_DELTA_E)}
PORTRAITS_SHORT: dict = {}


def _check_floor(summary, measure, floor):
    op, f = floor
    ops = {">=": lambda v: v >= f, "<=": lambda v: v <= f, "<": lambda v: v < f}
    median = summary["measures"][measure]["median"]
    print(f"{measure} median {median} (floor {op} {f})")
    assert median is not None and ops[op](median), f"{measure} median {median} is below the floor {op} {f}"


def _sample_eval(folder, n, tmp, min_ok=None):
    rep = run_eval(folder_pairs(folder, n, seed=0), tmp, RunOptions(refine="classic"), progress=False)
    assert rep.summary["failed"] == 0 and rep.summary["ok"] >= (n // 2 if min_ok is None else min_ok), \
        rep.summary["not_ok"]
    return rep.summary


@pytest.fixture(scope="module")
def faces_eval(loho_dir, tmp_path_factory):
    return _sample_eval(loho_dir, FACES_SAMPLE, tmp_path_factory.mktemp("faces_eval"))


@pytest.fixture(scope="module")
def portraits_eval(tmp_path_factory):
    from conftest import faces_root

    folder = faces_root().parent / "portraits"
    if not folder.is_dir():
        pytest.skip(f"ordinary photos not found at {folder}")
    # most ordinary pairs drawn are declined with a reason (42 of these 48: headwear, a turned
    # head, no hair to copy, an eyebrow under the old hair, ...); the medians are over those done
    return _sample_eval(folder, PORTRAITS_SAMPLE, tmp_path_factory.mktemp("portraits_eval"), min_ok=4)


FLOORS = {"faces": (FACES_FLOORS, FACES_SHORT), "portraits": (PORTRAITS_FLOORS, PORTRAITS_SHORT)}


@pytest.mark.slow
@pytest.mark.parametrize("sample,measure", [(k, m) for k, (floors, _) in FLOORS.items() for m in floors])
def test_quality_floor(sample, measure, request):
    summary = request.getfixturevalue(f"{sample}_eval")  # a sample that cannot be run is an error, not an xfail
    floors, short = FLOORS[sample]
    if measure in short:
        request.applymarker(pytest.mark.xfail(strict=True, reason=short[measure]))
    _check_floor(summary, measure, floors[measure])
