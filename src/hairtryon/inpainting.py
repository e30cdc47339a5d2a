"""Stage 6 of the method (paper 3.3.1): fast-marching inpainting of the artifacts.

The mapping image is parsed again; where that parse disagrees with the mapping mask (both made
binary: hair / not hair) lie the artifacts, which are filled with Telea's fast marching method
(``cv2.inpaint(..., cv2.INPAINT_TELEA)``).

Two choices beyond the paper:

- Only artifacts where the mapping mask says *not hair* are filled (old hair left over, hair-like
  blotches in a rebuilt region). Where the mask says hair but the parser does not see it, the
  pixels are the source photo's own hair (thin strands, background seen between curls):
  filling them would only smear the hair.
- The fill is class-aware: each artifact is filled only from visible pixels of the class the
  mapping mask gives it, so no colour of leftover hair or of a neighbouring region is dragged in.
  Artifacts too large for a smooth fill to look like the photo (Telea drags colours into a blur)
  go to ``rebuild_large`` (the class-by-class rebuild of :mod:`hairtryon.rebuild`) when given.

Arrays: images (S, S, 3) uint8 RGB; masks (S, S) bool; labels (S, S) uint8 class ids.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from .framing import disk, parts_in_boxes, resize
from .segmentation import HAIR


def find_artifacts(parsed: np.ndarray, intended: np.ndarray, min_width: int,
                   keep: Optional[np.ndarray] = None) -> np.ndarray:
    """The artifact mask (3.3.1): the difference of the binary hair masks of the re-parsed
    composite and of the mapping mask (both (S, S) uint8 labels), without the slivers thinner
    than ``min_width`` pixels that any two parses of the same edge differ by, and never in
    ``keep`` ((S, S) bool: what stays as it is, e.g. the target's face and the new hair's own
    soft edge, where the re-parse sees hair rightly). (S, S) bool."""
    diff = ((parsed == HAIR) ^ (intended == HAIR)).astype(np.uint8)
    diff = cv2.morphologyEx(diff, cv2.MORPH_OPEN, disk(min_width / 2))
    if diff.any():
        diff = cv2.dilate(diff, disk(max(1, min_width / 4)))
    diff = diff.astype(bool)
    return diff if keep is None else diff & ~keep


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


def hair_colours(image: np.ndarray, new_alpha: np.ndarray, old_image: np.ndarray,
                 old_hair: np.ndarray, min_px: int = 50) -> np.ndarray:
    """The two hair colours an artifact is compared with (:func:`hairless_artifacts`): the median
    RGB of the new hair where it is opaque (``new_alpha`` (S, S) float32 > 0.95) in ``image``
    ((S, S, 3) uint8, the image the re-parse saw), and of the old hair (``old_hair`` (S, S) bool)
    in ``old_image`` ((S, S, 3) uint8, the target). Either is left out when it has fewer than
    ``min_px`` pixels. (K, 3) uint8, K <= 2."""
    colours = []
    for img, where in ((image, new_alpha > 0.95), (old_image, old_hair)):
        if where.sum() > min_px:
            colours.append(np.median(img[where], axis=0))
    return np.round(np.array(colours, np.float64)).astype(np.uint8).reshape(-1, 3)


def hairless_artifacts(image: np.ndarray, artifacts: np.ndarray, intended: np.ndarray, known: np.ndarray,
                       hair_colours: np.ndarray, reach: float) -> np.ndarray:
    """The artifacts that show no hair: parts (8-connected) of ``artifacts`` ((S, S) bool) where
    the mapping mask ``intended`` ((S, S) uint8 labels) says not hair and whose median colour
    in ``image`` ((S, S, 3) uint8, the composite) lies nearer the visible pixels of the same
    class around them (``known`` (S, S) bool, within ``reach`` pixels) than half its distance
    to every colour in ``hair_colours`` ((K, 3) uint8 RGB: the new hair's and the old hair's).
    There the re-parse took a clean wall beside the new hair for hair, and a fill could only mix
    the hair's colour into it (a grey blob above a head). (S, S) bool, a subset of ``artifacts``."""
    out = np.zeros_like(artifacts)
    todo = artifacts & (intended != HAIR)
    if not todo.any() or len(hair_colours) == 0:
        return out
    hair_lab = _lab(np.asarray(hair_colours, np.uint8))
    r = max(2, int(round(reach)))
    for part, box, sub in parts_in_boxes(todo, r):
        cls = np.bincount(intended[box][sub]).argmax()
        ring = cv2.dilate(sub.astype(np.uint8), disk(r)).astype(bool) & ~sub & known[box] & \
            (intended[box] == cls) & ~artifacts[box]
        if ring.sum() < 20:
            continue
        seen = image[box]
        here = np.median(_lab(seen[sub]), axis=0)
        around = np.median(_lab(seen[ring]), axis=0)
        to_scene = float(np.linalg.norm(here - around))
        to_hair = float(np.linalg.norm(hair_lab - here, axis=1).min())
        if to_scene < 0.5 * to_hair:
            out |= part
    return out


def telea(image: np.ndarray, part: np.ndarray, sources: np.ndarray, max_side: int = 320,
          radius: int = 4) -> np.ndarray:
    """Telea's fast marching fill of ``part`` ((S, S) bool) from ``sources`` ((S, S) bool) only,
    on a box around it reduced to at most ``max_side`` pixels (the fill is smooth anyway).
    Returns (S, S, 3) uint8 equal to ``image`` outside ``part``."""
    out = image.copy()
    if not part.any():
        return out
    h, w = part.shape
    ys, xs = np.nonzero(part)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = max(16, int(0.35 * max(y1 - y0, x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
    if sources[y0:y1, x0:x1].sum() < 30:
        return out
    f = max(1.0, max(y1 - y0, x1 - x0) / max_side)
    sh, sw = max(1, int(round((y1 - y0) / f))), max(1, int(round((x1 - x0) / f)))
    small = resize(image[y0:y1, x0:x1], (sh, sw), cv2.INTER_AREA)
    src = resize(sources[y0:y1, x0:x1].astype(np.float32), (sh, sw), cv2.INTER_AREA) > 0.99
    filled = cv2.inpaint(small, (~src).astype(np.uint8), radius, cv2.INPAINT_TELEA)
    up = resize(filled, (y1 - y0, x1 - x0), cv2.INTER_LINEAR)
    sel = part[y0:y1, x0:x1]
    out[y0:y1, x0:x1][sel] = up[sel]
    return out


def fast_marching(image: np.ndarray, artifacts: np.ndarray, intended: np.ndarray,
                  known: Optional[np.ndarray] = None, large: float = 0.0,
                  rebuild_large: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None) -> np.ndarray:
    """Fill the artifacts of the composite where the mapping mask ``intended`` says not hair,
    each from visible pixels (``known``, default: outside the artifacts) of the class the mask
    gives it, by Telea's fast marching. Connected artifacts larger than ``large`` pixels go to
    ``rebuild_large(image, hole) -> image`` instead, when given. (S, S, 3) uint8."""
    out = image.copy()
    todo = artifacts & (intended != HAIR)
    if not todo.any():
        return out
    if known is None:
        known = ~artifacts
    if rebuild_large is not None and large > 0:
        n, comp, stats, _ = cv2.connectedComponentsWithStats(todo.astype(np.uint8), connectivity=8)
        big = np.isin(comp, [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > large])
        if big.any():
            out = rebuild_large(out, big)
            todo &= ~big
    for cls in np.unique(intended[todo]):
        part = todo & (intended == cls)
        out = telea(out, part, known & (intended == cls) & ~artifacts)
    return out
