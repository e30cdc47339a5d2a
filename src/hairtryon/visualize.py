"""Pictures of the method: labelled grids of stages (the paper's overview figure) and sweeps."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .framing import resize


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_grid(tiles: Sequence[Tuple[str, np.ndarray]], cols: Optional[int] = None, tile: int = 256,
                  caption: str = "") -> np.ndarray:
    """One image of labelled tiles: each (label, (H, W, 3) uint8 or (H, W) bool/uint8 image) is
    resized to ``tile`` x ``tile`` with its label above it. Returns (rows*(tile+bar), cols*tile, 3) uint8."""
    n = len(tiles)
    cols = cols or min(n, 5)
    rows = (n + cols - 1) // cols
    bar = max(18, tile // 10)
    top = bar if caption else 0
    canvas = Image.new("RGB", (cols * tile, top + rows * (tile + bar)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(11, int(bar * 0.7)))
    if caption:
        draw.text((6, 2), caption, fill=(0, 0, 0), font=font)
    for i, (label, img) in enumerate(tiles):
        a = np.asarray(img)
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        r, c = divmod(i, cols)
        x, y = c * tile, top + r * (tile + bar)
        canvas.paste(Image.fromarray(resize(a, (tile, tile)).astype(np.uint8)), (x, y + bar))
        draw.text((x + 4, y + 2), f"{i + 1}. {label}", fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def stage_grid(stages: Dict[str, np.ndarray], tile: int = 256, caption: str = "") -> np.ndarray:
    """The try-on's stages, in order, as one labelled grid."""
    return labelled_grid(list(stages.items()), cols=5, tile=tile, caption=caption)
