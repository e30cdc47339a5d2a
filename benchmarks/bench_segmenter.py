"""Segmenter benchmark (issue 5): BiSeNet vs the paper's U-Net.

    # parse time per 512² image (skimage's astronaut), BiSeNet vs U-Nets (weights do not change speed)
    python benchmarks/bench_segmenter.py speed [--unet CKPT] [--repeats 10]
    # IoU per class on ../shared/faces/maskgan and loho, BiSeNet and a trained U-Net, through parse()
    python benchmarks/bench_segmenter.py quality --unet CKPT
    # the whole pseudo-label experiment: BiSeNet labels ../shared/faces/ctrlhair, a small U-Net
    # trains on them, then `quality` on maskgan and loho
    python benchmarks/bench_segmenter.py pseudo --workdir /tmp/bench --steps 1500

Timings are medians over ``--repeats`` calls after one warm-up; the load average is printed
because other processes on a 2-core machine change them a lot.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hairtryon.framing import resize  # noqa: E402
from hairtryon.segmentation import BiSeNetSegmenter, parse  # noqa: E402


def faces_root() -> Path:
    return Path(os.environ.get("HAIRTRYON_TEST_FACES", ROOT.parent / "shared" / "faces"))


def _times(fn, repeats: int):
    """(median, best) seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _unets(ckpt):
    """(label, segmenter) pairs of U-Nets to time."""
    from hairtryon.models.unet import UNet
    from hairtryon.unet_segmenter import UNetSegmenter, make_config

    out = []
    if ckpt:
        for prec in ("fp32", "bf16"):
            seg = UNetSegmenter.from_checkpoint(ckpt, precision=prec)
            c = seg.config
            out.append((f"U-Net {Path(ckpt).name} (width {c['width']}, {c['input_size']}², {prec})", seg))
    for width, size, prec in ((16, 256, "fp32"), (16, 256, "bf16"), (16, 512, "bf16"), (64, 256, "bf16")):
        seg = UNetSegmenter(UNet(5, width, 4), make_config(size, width), precision=prec)
        out.append((f"U-Net width {width}, {size}², {prec} (untrained)", seg))
    return out


def speed(args) -> None:
    import torch
    from skimage import data

    from hairtryon.landmarks import detect_landmarks

    image = data.astronaut()  # 512² RGB
    lm = detect_landmarks(image)
    t_lm = _times(lambda: detect_landmarks(image), args.repeats)[0]
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"image 512x512 (astronaut); landmarks (MediaPipe) {t_lm * 1000:.0f} ms")
    print(f"{'segmenter':52s} {'predict (median / best)':>24s} {'parse* (median / best)':>24s}")
    rows = [("BiSeNet (512², fp32, as shipped)", BiSeNetSegmenter())] + _unets(args.unet)
    for label, seg in rows:
        crop = resize(image, (seg.input_size, seg.input_size))
        p_med, p_min = _times(lambda: seg.predict(crop), args.repeats)
        q_med, q_min = _times(lambda: parse(image, seg, landmarks=lm), args.repeats)
        print(f"{label:52s} {p_med * 1000:10.0f} / {p_min * 1000:4.0f} ms "
              f"{q_med * 1000:10.0f} / {q_min * 1000:4.0f} ms")
    print("* parse = crop + segmenter + paste back, landmarks given (add the landmarks time for a fresh photo)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def quality(args) -> None:
    from hairtryon.training import evaluate_segmenter
    from hairtryon.unet_segmenter import UNetSegmenter

    segs = [BiSeNetSegmenter()] + ([UNetSegmenter.from_checkpoint(args.unet)] if args.unet else [])
    for sub in ("maskgan", "loho"):
        for seg in segs:
            rep = evaluate_segmenter(faces_root() / sub, seg, progress=False)
            print(rep.format() + "\n")


def pseudo(args) -> None:
    from hairtryon.training import TrainConfig, label_folder, train_segmenter

    work = Path(args.workdir)
    labelled = work / "ctrlhair-labels"
    if not (labelled / "labels").is_dir():
        rep = label_folder(str(faces_root() / "ctrlhair"), str(labelled), "bisenet", 512)
        print(f"labelled {len(rep.written)} ctrlhair portraits with BiSeNet ({len(rep.skipped)} skipped)")
    ckpt = work / "unet-ctrlhair.pt"
    res = train_segmenter(TrainConfig(str(labelled), str(ckpt), input_size=args.size, width=args.width,
                                      steps=args.steps, batch_size=args.batch_size, val_every=100,
                                      resume="auto" if (work / "unet-ctrlhair.last.pt").is_file() else None))
    print(f"trained {res.steps} steps; best validation mIoU (on held-out pseudo-labels) {res.best_miou:.3f} "
          f"at step {res.best_step}")
    args.unet = str(ckpt)
    quality(args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "quality", "pseudo"])
    p.add_argument("--unet", help="U-Net checkpoint (train-segmenter output)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--workdir", default="/tmp/hairtryon-bench-segmenter")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    {"speed": speed, "quality": quality, "pseudo": pseudo}[args.what](args)


if __name__ == "__main__":
    main()
