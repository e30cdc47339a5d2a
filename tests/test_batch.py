"""``hairtryon batch``: pairs CSV, atomic and resumable outputs, per-row errors, refusals, and
the same results from one process and from two.

Cost, measured on the shared 2-core machine at a load average of about 6: the refusals instant
(they come before any model loads); the serial + resumed + 2-process run 39 s; the killed and
resumed run 32 s.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairtryon.batch import pair_seed, read_pairs, run_batch, RunOptions
from hairtryon.cli import main
from hairtryon.errors import HairTryOnError


def _write_csv(path: Path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------- no models needed
def test_pairs_csv_paths_and_malformed_files(tmp_path):
    _write_csv(tmp_path / "p.csv", ["Target", "source", "output", "refine", "note"],
               [["a.jpg", "/abs/b.jpg", "", "", "x"], ["c.jpg", "d.jpg", "sub/out.jpg", "none", ""]])
    pairs = read_pairs(tmp_path / "p.csv", out_dir=tmp_path / "out")
    assert pairs[0].target == str(tmp_path / "a.jpg") and pairs[0].source == "/abs/b.jpg"
    assert pairs[0].output is None and pairs[0].name == "a__b" and pairs[0].row == 2
    assert pairs[1].output == str(tmp_path / "out" / "sub" / "out.jpg") and pairs[1].refine == "none"
    _write_csv(tmp_path / "bad.csv", ["photo", "style"], [["a", "b"]])
    with pytest.raises(HairTryOnError, match="target and source"):
        read_pairs(tmp_path / "bad.csv")
    _write_csv(tmp_path / "empty.csv", ["target", "source"], [["a.jpg", ""]])
    with pytest.raises(HairTryOnError, match="line 2: the source column is empty"):
        read_pairs(tmp_path / "empty.csv")


@pytest.mark.parametrize("case", ["target", "hardlink", "duplicate", "extension"])
def test_batch_refuses_before_any_work(tmp_path, capsys, case):
    photo = tmp_path / "me.png"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(photo)
    before = photo.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    rows = {"target": [["me.png", "me.png", str(photo)]],
            "hardlink": [["me.png", "me.png", "link.png"]],
            "duplicate": [["me.png", "me.png", "x.png"], ["me.png", "me.png", "x.png"]],
            "extension": [["me.png", "me.png", "x.xyz"]]}[case]
    if case == "hardlink":
        os.link(photo, out / "link.png")  # another name of the input itself
    _write_csv(tmp_path / "pairs.csv", ["target", "source", "output"], rows)
    assert main(["batch", str(tmp_path / "pairs.csv"), "--out-dir", str(out), "--refine", "classic"]) == 2
    err = capsys.readouterr().err
    expected = {"target": "own inputs", "hardlink": "own inputs", "duplicate": "both write",
                "extension": "unknown image format"}[case]
    assert expected in err and "Traceback" not in err
    assert photo.read_bytes() == before and not (out / "errors.csv").exists()


def test_pair_seed_comes_from_the_photos_not_their_names():
    a, b = b"photo a", b"photo b"
    assert pair_seed(a, b) == pair_seed(a, b) != pair_seed(b, a)
    assert pair_seed(a, b, 1) != pair_seed(a, b, 0)
    assert 0 <= pair_seed(a, b) < 2 ** 31


# ------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory, ctrlhair_dir):
    """6 rows of 256² portraits: 4 good (one with its own output name and refine), a photo
    without a face, and a missing file. (The checks decline most of these tight crops, whose hair
    the photo cuts off: the runs use --force, and the machinery is what is tested.)"""
    root = tmp_path_factory.mktemp("batchpairs")
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(root / "blank.png")
    p = sorted(ctrlhair_dir.glob("*.png"))
    rows = [[p[0], p[1], "", ""], [p[2], p[3], "mine.jpg", "none"], [root / "blank.png", p[0], "", ""],
            [p[4], p[5], "", ""], [root / "missing.png", p[1], "", ""], [p[6], p[7], "", ""]]
    return _write_csv(root / "pairs.csv", ["target", "source", "output", "refine"],
                      [[str(c) for c in r] for r in rows])


def _files(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".jpg")}


def test_batch_errors_resume_and_two_workers_identical(pairs_csv, tmp_path, capsys):
    out = tmp_path / "serial"
    assert main(["batch", str(pairs_csv), "--out-dir", str(out), "--refine", "classic", "--quiet", "--force"]) == 1
    files = _files(out)
    rows = list(csv.DictReader(open(pairs_csv)))
    assert set(files) == {r["output"] or f"{Path(r['target']).stem}__{Path(r['source']).stem}.png"
                          for r in rows if "blank" not in r["target"] and "missing" not in r["target"]}
    for name in files:
        assert Image.open(out / name).size == (256, 256)
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert [(e["row"], e["status"]) for e in errors] == [("4", "declined"), ("6", "declined")]
    assert "no face" in errors[0]["message"] and "not found" in errors[1]["message"]
    assert "4 results" in capsys.readouterr().out

    # again: nothing redone (same files, untouched), the failed rows tried again
    stamps = {n: (out / n).stat().st_mtime_ns for n in files}
    assert main(["batch", str(pairs_csv), "--out-dir", str(out), "--refine", "classic", "--quiet", "--force"]) == 1
    assert {n: (out / n).stat().st_mtime_ns for n in files} == stamps
    assert "skipped 4" in capsys.readouterr().out

    # two processes: the same images, byte for byte, and the same errors
    rep = run_batch(pairs_csv, tmp_path / "two", RunOptions(refine="classic", force=True), workers=2, progress=False)
    assert _files(tmp_path / "two") == files
    assert [(str(e["row"]), e["message"]) for e in rep.errors] == [(e["row"], e["message"]) for e in errors]


def test_killed_batch_resumes_without_partial_files(tmp_path, ctrlhair_dir):
    """A batch killed (SIGKILL) mid-run leaves only whole images; the next run keeps them as
    they are and does the rest."""
    p = sorted(ctrlhair_dir.glob("*.png"))[10:26]
    pairs = _write_csv(tmp_path / "pairs.csv", ["target", "source"], [[str(p[2 * i]), str(p[2 * i + 1])] for i in range(8)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hairtryon", "batch", str(pairs), "--out-dir", str(out),
                             "--refine", "none", "--quiet", "--force"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and len(list(out.glob("*.png"))) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = sorted(out.glob("*.png"))
    assert 2 <= len(finished) < 8, "the run was not interrupted mid-way"
    for f in finished:  # whole images only
        with Image.open(f) as im:
            im.load()
            assert im.size == (256, 256)
    stamps = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in finished}
    rep = run_batch(pairs, out, RunOptions(refine="none", force=True), progress=False)
    assert sorted(Path(s).name for s in rep.skipped) == sorted(stamps)
    assert len(rep.written) == 8 - len(stamps) and not rep.errors
    assert {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in out.glob("*.png") if f.name in stamps} == stamps
    assert len(list(out.glob("*.png"))) == 8
    assert not list(out.glob(".*.part"))  # a temporary file the kill left behind is gone
