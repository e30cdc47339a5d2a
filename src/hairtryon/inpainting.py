"""Stage 6 of the method (paper 3.3.1): fast-marching inpainting.

The composite is parsed again; where that parse disagrees with the mapping mask (both made
binary: hair / not hair) lie the artifacts, which are filled with Telea's fast marching method
(``cv2.inpaint(..., cv2.INPAINT_TELEA)``). The same fill rebuilds what the target's old hair
covered (background, shoulders, a forehead under bangs).

Our fill is class-aware: each part of a hole is filled only from visible pixels of the class
the mapping mask gives it (a forehead from skin, a backdrop from background), so no colour of
leftover hair or of a neighbouring region is dragged in.

Arrays: images (S, S, 3) uint8 RGB; masks (S, S) bool; labels (S, S) uint8 class ids.
"""
from __future__ import annotations

import cv2
import numpy as np

from .framing import disk, resize
from .segmentation import FACE, HAIR


def skin_pixels(image: np.ndarray, labels: np.ndarray, strictness: float = 2.0, edge: float = 1 / 200) -> np.ndarray:
    """Face pixels that look like plain skin: no brows, eyes, nostrils or deep shadow (darker
    than the face's median luminance by ``strictness`` robust deviations), and at least
    ``edge`` of the image size from the face's edge. (S, S) bool."""
    face = labels == FACE
    if face.sum() < 50:
        return face
    face = cv2.erode(face.astype(np.uint8), disk(max(2, image.shape[0] * edge))).astype(bool)
    if not face.any():
        face = labels == FACE
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float32)
    vals = lum[face]
    median = np.median(vals)
    spread = np.median(np.abs(vals - median)) * 1.4826 + 1.0
    return face & (lum > median - strictness * spread)


def push_pull(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Smooth membrane-like fill: every unknown pixel gets a Gaussian-pyramid average of the
    known pixels around it, at the finest scale where there are any. ``image`` (h, w, C) float32,
    ``known`` (h, w) bool; returns (h, w, C) float32 with known pixels unchanged."""
    c = image.shape[2]

    def down(a):
        return cv2.pyrDown(a).reshape((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2, -1)

    w0 = known.astype(np.float32)[..., None]
    levels = [(image.astype(np.float32) * w0, w0)]
    while min(levels[-1][1].shape[:2]) > 4:
        num, w = levels[-1]
        levels.append((down(num), down(w)))
    num, w = levels[-1]
    total = float(w.sum())
    mean = num.reshape(-1, c).sum(0) / total if total > 0 else np.zeros(c, np.float32)
    cur = np.broadcast_to(mean, num.shape).astype(np.float32)
    for num, w in reversed(levels):
        up = cur if cur.shape[:2] == w.shape[:2] else cv2.pyrUp(cur, dstsize=(w.shape[1], w.shape[0]))
        up = up.reshape(num.shape)
        local = num / np.maximum(w, 1e-6)
        conf = np.clip(w * 4.0, 0.0, 1.0)
        cur = conf * local + (1.0 - conf) * up
    return np.where(known[..., None], image, cur).astype(np.float32)


def skin_fill(image: np.ndarray, hole: np.ndarray, sources: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """Skin for a hole in a face (a forehead under old bangs): the face's typical lit-skin
    ``tone`` ((3,) float), plus the push-pull fill of the visible skin's difference from it,
    fading with the distance from the hole's border, so the border continues the skin around it
    while the inside is plain, even skin (no shadow of the old fringe carried in).
    ``image`` (h, w, 3) uint8, masks (h, w) bool; returns (h, w, 3) float32, 0-255."""
    img = image.astype(np.float32)
    tone = np.asarray(tone, np.float32)
    known = sources & ~hole
    residual = push_pull(img - tone, known)
    dist = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 3)
    fade = np.exp(-dist / max(2.0, 0.04 * max(image.shape[:2])))[..., None]
    return np.clip(tone + residual * fade, 0, 255)


def colour_modes(image: np.ndarray, part: np.ndarray, sources: np.ndarray, min_separation: float = 40.0):
    """Split a hole between the colour modes of its sources (a neck and a black top, a wall
    and a window): the sources are clustered in two by colour (k-means in Lab); if the clusters
    differ by more than ``min_separation`` (Lab units), each hole pixel goes with the nearer
    cluster. ``image`` (h, w, 3) uint8, masks (h, w) bool. Returns [(sub_part, sub_sources)]."""
    ys, xs = np.nonzero(sources)
    if len(ys) < 200:
        return [(part, sources)]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    step = max(1, len(ys) // 5000)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(lab[ys[::step], xs[::step]], 2, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    if np.linalg.norm(centres[0] - centres[1]) < min_separation:
        return [(part, sources)]
    member = np.argmin(((lab[..., None, :] - centres[None, None]) ** 2).sum(-1), axis=-1)
    dists = []
    for k in range(2):
        seeds = sources & (member == k)
        dists.append(cv2.distanceTransform((~seeds).astype(np.uint8), cv2.DIST_L2, 3) if seeds.any()
                     else np.full(part.shape, np.inf, np.float32))
    nearest = np.argmin(np.stack(dists), axis=0)
    return [(part & (nearest == k), sources & (member == k)) for k in range(2) if (part & (nearest == k)).any()]


def _grain(image: np.ndarray, sources: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """Noise with the fine-grain strength of the source pixels, so a smooth fill does not look
    flatter than what surrounds it. ``image`` (h, w, 3) uint8, ``sources`` (h, w) bool;
    returns (shape[0], shape[1], 1) float32."""
    if sources.sum() < 50:
        return np.zeros(shape + (1,), np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
    sigma = 1.4826 * np.median(np.abs(detail[sources]))
    noise = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), 0.7) * (sigma * 1.6)
    return noise[..., None]


def _fill_part(image: np.ndarray, part: np.ndarray, sources: np.ndarray, known: np.ndarray,
               method: str, max_side: int, radius: int, tone=None, split: bool = False):
    """Fill one part of a hole from ``sources`` on a downscaled box around it (split between
    the sources' colour modes when ``split``); returns (box slices, filled box (bh, bw, 3) uint8,
    the sources used)."""
    h, w = part.shape
    ys, xs = np.nonzero(part)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = max(16, int(0.35 * max(y1 - y0, x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
    if sources[y0:y1, x0:x1].sum() < 30:  # nothing of that class nearby: use every known pixel
        sources = known
        if sources[y0:y1, x0:x1].sum() < 30:
            y0, y1, x0, x1 = 0, h, 0, w
    box = (slice(y0, y1), slice(x0, x1))
    f = max(1.0, max(y1 - y0, x1 - x0) / max_side)
    sh, sw = max(1, int(round((y1 - y0) / f))), max(1, int(round((x1 - x0) / f)))
    small = resize(image[box], (sh, sw), cv2.INTER_AREA)
    small_part = resize(part[box].astype(np.float32), (sh, sw), cv2.INTER_AREA) > 0.01
    small_src = (resize(sources[box].astype(np.float32), (sh, sw), cv2.INTER_AREA) > 0.99) & ~small_part
    filled = small.astype(np.float32)
    pieces = colour_modes(small, small_part, small_src) if split else [(small_part, small_src)]
    for sub, src in pieces:
        if method == "telea":
            done = cv2.inpaint(small, (~src).astype(np.uint8), radius, cv2.INPAINT_TELEA).astype(np.float32)
        elif tone is not None:
            done = skin_fill(small, ~src, src, tone)
        else:
            done = push_pull(small.astype(np.float32), src)
        filled[sub] = done[sub]
    up = resize(np.clip(filled, 0, 255).astype(np.uint8), (y1 - y0, x1 - x0), cv2.INTER_LINEAR)
    return box, up, sources


def fill(image: np.ndarray, region: np.ndarray, labels: np.ndarray, known: np.ndarray = None,
         max_side: int = 320, radius: int = 4, method: str = "telea", seed: int = 0) -> np.ndarray:
    """Fill ``region`` of ``image``, class by class.

    ``labels`` gives every pixel's intended class; the part of ``region`` of class c is filled
    only from ``known`` pixels (default: outside ``region``) of class c (skin-like pixels for the
    face). ``method``: 'telea' (fast marching, the paper's) or 'smooth' (a pyramid fill that
    also follows the colour modes of a class, with a shading model for skin and a matching
    grain: no streaks across large holes). Each part is filled on a downscaled box around it (at
    most ``max_side`` pixels; the fills are smooth anyway) and upsampled.
    Returns a new (S, S, 3) uint8 image; pixels outside ``region`` are unchanged."""
    out = image.copy()
    if not region.any():
        return out
    if known is None:
        known = ~region
    rng = np.random.default_rng(seed)
    smooth = method == "smooth"
    for cls in np.unique(labels[region]):
        part = region & (labels == cls)
        tone = None
        if cls == FACE:
            skin = skin_pixels(image, np.where(known, labels, 255).astype(np.uint8))
            tone = np.median(image[skin], axis=0) if skin.any() else image[known].mean(0)
            sources = skin & known
        else:
            sources = known & (labels == cls)
        box, up, used = _fill_part(image, part, sources, known, method, max_side, radius,
                                   tone if smooth else None, split=smooth and cls != FACE)
        sel = part[box]
        if smooth:
            up = np.clip(up.astype(np.float32) + _grain(image[box], used[box], sel.shape, rng), 0, 255).astype(np.uint8)
        out[box][sel] = up[sel]
    return out


def mirror_below(donor: np.ndarray, usable: np.ndarray, cut_row: int):
    """A donor image cut at ``cut_row``: rows above it as they are, rows below it the rows above
    mirrored (a forehead continued downwards without the eyebrows under it). ``donor`` (S, S, 3),
    ``usable`` (S, S) bool; returns both, mirrored alike."""
    rows = np.arange(donor.shape[0])
    rows = np.where(rows <= cut_row, rows, np.clip(2 * cut_row - rows, 0, donor.shape[0] - 1))
    return donor[rows], usable[rows]


def clone_skin(image: np.ndarray, donor: np.ndarray, region: np.ndarray, min_pixels: int = 400) -> np.ndarray:
    """Skin texture for a filled face region: the ``donor`` image's pixels ((S, S, 3) uint8,
    aligned with ``image``) over ``region`` ((S, S) bool), blended by Poisson image editing
    (``cv2.seamlessClone``) so their colours meet ``image`` at the region's border. Small or
    border-touching regions are left as they are. Returns (S, S, 3) uint8."""
    mask = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_OPEN, disk(2))
    h, w = mask.shape
    mask[:2, :] = mask[-2:, :] = 0
    mask[:, :2] = mask[:, -2:] = 0
    if mask.sum() < min_pixels:
        return image
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # seamlessClone centres the donor's mask box on ``center``: use an odd-sized box so the
    # donor lands exactly where it came from
    if (y1 - y0) % 2 == 0:
        y1 = min(h - 1, y1 + 1) if y1 < h - 1 else y1 - 1
    if (x1 - x0) % 2 == 0:
        x1 = min(w - 1, x1 + 1) if x1 < w - 1 else x1 - 1
    box = np.zeros_like(mask)
    box[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    center = (int((x0 + x1 - 1) // 2), int((y0 + y1 - 1) // 2))
    try:
        return cv2.seamlessClone(donor, image, box * 255, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return image


def find_artifacts(parsed: np.ndarray, intended: np.ndarray, min_width: int) -> np.ndarray:
    """The artifact mask (3.3.1): the difference of the binary hair masks of the re-parsed
    composite and of the mapping mask (both (S, S) uint8 labels), without the slivers thinner
    than ``min_width`` pixels that any two parses of the same edge differ by. (S, S) bool."""
    diff = ((parsed == HAIR) ^ (intended == HAIR)).astype(np.uint8)
    diff = cv2.morphologyEx(diff, cv2.MORPH_OPEN, disk(min_width / 2))
    if diff.any():
        diff = cv2.dilate(diff, disk(max(1, min_width / 4)))
    return diff.astype(bool)


def fast_marching(image: np.ndarray, artifacts: np.ndarray, intended: np.ndarray,
                  known: np.ndarray = None) -> np.ndarray:
    """Fill the artifacts of the composite (Telea's fast marching), each from visible pixels
    (``known``, default: outside the artifacts) of the class the mapping mask gives it.
    (S, S, 3) uint8."""
    return fill(image, artifacts, intended, known=known, method="telea")
