"""A catalogue of hairstyles: one target, many styles, one labelled grid.

``hairtryon catalog TARGET STYLES_DIR -o gallery.png`` (and :meth:`HairTryOn.catalog`) puts
every style photo of a folder on one person. The models load once and the target is analysed
once (the tool's analysis cache); each style costs only its own analysis and the try-on. A
style that fails (unreadable, no face, declined by the checks, ...) becomes a labelled cell with
its reason, and the rest go on.

Arrays: images (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .colour import REFERENCE, photo_name
from .errors import HairTryOnError
from .images import ImageLike, save_image

# the extensions a style folder's photos may have (every other file is left out, and said)
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif", ".mpo")


@dataclass
class Style:
    """One style of a catalogue. ``name``: how the grid labels it (the file name, or
    'style N'); ``photo``: (H, W, 3) uint8 the style photo (None when it could not be read);
    ``image``: (H, W, 3) uint8 the try-on at the target's full resolution (None when it failed
    or was not kept); ``output``: the same in the target's own kind when that is not RGB (a grey
    photo, transparency; see ``TryOnResult.output``), else None; ``reason``: why it failed (one sentence), else None; ``warnings``: the
    try-on's one-line messages; ``seconds``: time spent on it; ``path``: where the result was
    written (with ``out_dir``). ``tile``/``photo_tile``: the result's and the photo's head crops for
    the grid."""

    name: str
    photo: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = None
    output: Optional[np.ndarray] = field(default=None, repr=False)
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0
    path: Optional[Path] = None
    tile: Optional[np.ndarray] = field(default=None, repr=False)
    photo_tile: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class Catalog:
    """The catalogue of one target. ``target``: (H, W, 3) uint8; ``target_name``; ``target_tile``:
    its head crop; ``styles``: one :class:`Style` per style, in order; ``colour``: what
    ``color`` asked for, in words; ``seconds``: the whole run, models excluded."""

    target: np.ndarray
    target_name: str
    target_tile: np.ndarray
    styles: List[Style]
    colour: str = "each style's own"
    seconds: float = 0.0

    @property
    def done(self) -> List[Style]:
        return [s for s in self.styles if s.ok]

    @property
    def failed(self) -> List[Style]:
        return [s for s in self.styles if not s.ok]

    @property
    def images(self) -> dict:
        """{style name: (H, W, 3) uint8 result} of the styles that worked (and were kept)."""
        return {s.name: s.image for s in self.styles if s.ok and s.image is not None}

    def gallery(self, tile: int = 256, pairs_per_row: int = 3) -> np.ndarray:
        """The labelled grid, (H, W, 3) uint8: the target first, then each style's photo beside
        its result (or beside its reason), ``pairs_per_row`` styles to a row."""
        return gallery(self, tile, pairs_per_row)

    def save(self, gallery_path: Union[str, os.PathLike, None] = None,
             out_dir: Union[str, os.PathLike, None] = None) -> List[Path]:
        """Write the grid to ``gallery_path`` and every kept result to ``out_dir``
        (:func:`result_path`); returns the paths written. Every write is atomic."""
        written = []
        if out_dir is not None:
            for s in self.styles:
                if s.ok and s.image is not None:
                    s.path = save_image(s.image if s.output is None else s.output,
                                        result_path(out_dir, self.target_name, s.name))
                    written.append(s.path)
        if gallery_path is not None:
            written.append(save_image(self.gallery(), gallery_path))
        return written


def style_photos(folder: Union[str, os.PathLike]) -> List[Path]:
    """The photos of a styles folder: its files with a photo's extension
    (:data:`PHOTO_EXTENSIONS`), hidden files left out, sorted by name. Raises
    :class:`HairTryOnError` when the folder does not exist or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HairTryOnError(f"the styles folder {folder} does not exist or is not a folder.")
    photos = sorted(p for p in folder.iterdir()
                    if not p.name.startswith(".") and p.suffix.lower() in PHOTO_EXTENSIONS and not p.is_dir())
    if not photos:
        raise HairTryOnError(f"the styles folder {folder} holds no photos ({', '.join(PHOTO_EXTENSIONS)}).")
    return photos


RESULT_FILES = r".+__.+\.png"  # what --out-dir holds: TARGET__STYLE.png


def result_path(out_dir: Union[str, os.PathLike], target_name: str, style_name: str) -> Path:
    """Where ``--out-dir`` puts a style's result: ``OUT_DIR/<target>__<style>.png`` (names
    reduced to letters, digits, '-', '_' and '.')."""
    clean = lambda n: re.sub(r"[^A-Za-z0-9._-]+", "_", Path(n).stem).strip("_") or "photo"
    return Path(out_dir) / f"{clean(target_name)}__{clean(style_name)}.png"


def _name(item, i: int) -> str:
    return Path(item).name if isinstance(item, (str, os.PathLike)) else f"style {i + 1}"


def run(tool, target: ImageLike, styles, color=None, progress: bool = False, out_dir=None,
        keep_images: bool = True, **options) -> Catalog:
    """The catalogue (see :meth:`HairTryOn.catalog`). ``styles``: a folder or a sequence of
    paths, PIL images or arrays. ``color`` is resolved once, before any style (its errors end
    the run: no style could honour it). With ``out_dir`` each result is written as soon as it
    is made; ``keep_images=False`` then drops it from memory (a long catalogue of large photos)."""
    t_start = time.perf_counter()
    if isinstance(styles, (str, os.PathLike)):
        styles = style_photos(styles)
    styles = list(styles)
    if not styles:
        raise HairTryOnError("the catalogue needs at least one style photo.")
    photo = tool.load(target, "target")  # loaded and analysed once; every style reuses them
    target_name = photo.name or "target"
    tgt = tool.analyze(photo, options.get("target_face", 0), "target")
    reference = tool.reference_colour(color, tgt, photo)  # once, before any style
    if color is None:
        said = "each style's own"
    elif isinstance(color, str) and color == "keep":
        said = f"kept from {photo_name(photo, 'target')}"
    else:
        said = f"from {photo_name(color, REFERENCE)}"
    if reference is not None:
        said += f", {reference.describe()}"
    cat = Catalog(photo.rgb, target_name, head_tile(photo.rgb, tgt.frame), [], said)
    bar = tqdm(styles, desc="catalogue", unit="style", disable=not progress, file=sys.stderr)
    for i, item in enumerate(bar):
        style = Style(_name(item, i))
        bar.set_postfix_str(style.name[:30])
        t0 = time.perf_counter()
        try:
            source = tool.load(item, "source")
            style.photo = source.rgb
            try:
                src = tool.analyze(source, options.get("source_face", 0), "source")
                style.photo_tile = head_tile(style.photo, src.frame)
            except HairTryOnError:
                style.photo_tile = head_tile(style.photo)
                raise
            result = _quietly(tool, photo, source, color=reference, **options)
            style.warnings = list(result.meta.get("warnings", []))
            style.tile = head_tile(result.image, tgt.frame)
            output = result.output
            style.image, style.output = result.image, (None if output is result.image else output)
            if out_dir is not None:
                style.path = save_image(output, result_path(out_dir, target_name, style.name))
                if not keep_images:
                    style.image = style.output = None
            del result, output
        except HairTryOnError as exc:
            style.reason = str(exc).strip()
        except Exception as exc:  # a bug on one photo must not lose the others; its trace goes to stderr
            traceback.print_exc(file=sys.stderr)
            style.reason = f"hairtryon failed on this photo ({exc.__class__.__name__}: {exc}); please report it."
        if style.photo is not None and style.photo_tile is None:
            style.photo_tile = head_tile(style.photo)
        style.seconds = time.perf_counter() - t0
        cat.styles.append(style)
    bar.close()
    cat.seconds = time.perf_counter() - t_start
    return cat


def _quietly(tool, *args, **kwargs):
    """One style's try-on without its RefineFallbackWarning (its meta['warnings'] says it, and
    the catalogue says each warning once)."""
    import warnings

    from .pipeline import RefineFallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RefineFallbackWarning)
        return tool(*args, **kwargs)


# ---------------------------------------------------------------------------------- pictures
TILE_BG = (236, 236, 236)


def head_tile(image: np.ndarray, frame=None) -> np.ndarray:
    """The part of ``image`` ((H, W, 3) uint8) a grid shows: the work frame's box (the head
    with room for long hair) inside the photo, or the whole photo without a frame; (h, w, 3)
    uint8 at most 512 px on a side."""
    img = np.asarray(image)
    if frame is not None:
        try:
            rows, cols, _, _ = frame.roi()
            img = img[rows, cols]
        except ValueError:
            pass
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil.thumbnail((512, 512), Image.LANCZOS)
    return np.asarray(pil)


def _fit(img: Optional[np.ndarray], tile: int) -> Image.Image:
    """``img`` letterboxed into a tile x tile cell (plain grey when None)."""
    cell = Image.new("RGB", (tile, tile), TILE_BG)
    if img is not None:
        pil = Image.fromarray(np.ascontiguousarray(img))
        pil.thumbnail((tile, tile), Image.LANCZOS)
        cell.paste(pil, ((tile - pil.width) // 2, (tile - pil.height) // 2))
    return cell


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> List[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def _clip(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def gallery(cat: Catalog, tile: int = 256, pairs_per_row: int = 3) -> np.ndarray:
    """The catalogue as one labelled grid ((H, W, 3) uint8): a first row with the target, then
    rows of (style photo | result) pairs; a failed style's result cell gives its reason."""
    from .visualize import _font

    bar = max(18, tile // 10)
    gap = max(6, tile // 24)
    pair_w = 2 * tile + gap
    cols = max(1, min(pairs_per_row, len(cat.styles)))
    rows = (len(cat.styles) + cols - 1) // cols
    width = max(cols * pair_w - gap, tile)
    height = (tile + bar) * (rows + 1) + gap * rows
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(11, int(bar * 0.7)))
    small = _font(max(10, int(bar * 0.6)))
    n_ok = len(cat.done)
    draw.text((4, 2), _clip(draw, f"target: {cat.target_name}", font, tile - 8), fill=(0, 0, 0), font=font)
    canvas.paste(_fit(cat.target_tile, tile), (0, bar))
    summary = [f"{n_ok} of {len(cat.styles)} styles tried on", f"hair colour: {cat.colour}"]
    if cat.failed:
        summary.append(f"{len(cat.failed)} not done (reason in the cell)")
    y = bar + 4
    for line in summary:
        for part in _wrap(draw, line, font, width - tile - 3 * gap):
            draw.text((tile + 2 * gap, y), part, fill=(0, 0, 0), font=font)
            y += bar
    for i, s in enumerate(cat.styles):
        r, c = divmod(i, cols)
        x, y = c * pair_w, (tile + bar) * (r + 1) + gap * (r + 1)
        draw.text((x + 4, y + 2), _clip(draw, f"{i + 1}. {s.name}", font, tile - 8), fill=(0, 0, 0), font=font)
        canvas.paste(_fit(s.photo_tile, tile), (x, y + bar))
        label = "result" if s.ok else "not done"
        draw.text((x + tile + 4, y + 2), label, fill=(0, 0, 0) if s.ok else (170, 0, 0), font=font)
        if s.ok:
            canvas.paste(_fit(s.tile, tile), (x + tile, y + bar))
        else:
            cell = Image.new("RGB", (tile, tile), (250, 235, 235))
            cd = ImageDraw.Draw(cell)
            ty = 6
            for line in _wrap(cd, s.reason or "", small, tile - 12):
                if ty + bar > tile:
                    break
                cd.text((6, ty), line, fill=(120, 0, 0), font=small)
                ty += int(bar * 0.85)
            canvas.paste(cell, (x + tile, y + bar))
    return np.asarray(canvas)
