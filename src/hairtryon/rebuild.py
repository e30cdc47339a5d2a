"""Replacing (paper 3.2.4), the part the paper leaves white: what the old hair covered, rebuilt
class by class from the target's own photo.

- **Background, neck and clothes**: exemplar-based synthesis (PatchMatch, ``pypatchmatch``)
  whose patches come only from the target's own pixels of the same class, away from the old
  hair's edge (where the parser's mistakes lie), solved on a reduced copy and given back the
  photo's fine grain at full resolution.
- **Skin** (a forehead under bangs, a cheek under long hair): a frequency split. Tone and
  shading continue the visible skin around the hole (a smooth membrane fill of its low
  frequencies); texture is the target's own skin: the mirror image of the other side of the
  face where that side is visible, else PatchMatch from plain skin (no eyes, brows or lips).
  Never the source's skin.
- **Hair** grown into gaps beside the face: PatchMatch from the new hair's own opaque pixels.

Arrays: images (S, S, 3) uint8 RGB; masks (S, S) bool; labels (S, S) uint8 class ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, TypeVar

import cv2
import numpy as np

from .framing import disk, grow, resize, smoothstep
from .segmentation import BACKGROUND, EARS, FACE, NECK

PATCHMATCH_SEED = 0  # where every PatchMatch search starts (see patch_fill)
BACKGROUND_PATCH_RADIUS = 2  # the background's patches, 5x5 on the reduced solve (its texture is fine grain)
T = TypeVar("T")


# ------------------------------------------------------------------------------ building blocks
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


def membrane(image: np.ndarray, known: np.ndarray, scale: float, iterations: int = 60) -> np.ndarray:
    """Harmonic (membrane) interpolation of ``image`` ((h, w, C) float32) from the ``known``
    pixels ((h, w) bool) into the rest: the smooth surface through the known values, as
    Laplace inpainting gives, solved coarse to fine (Jacobi relaxation, ``iterations`` per level,
    each level started from the one below) on a copy reduced by ``scale`` (the result is smooth
    at that scale). Returns (h, w, C) float32."""
    h, w = known.shape
    k = max(1.0, float(scale))
    sh, sw = max(4, int(round(h / k))), max(4, int(round(w / k)))
    weight = resize(known.astype(np.float32), (sh, sw), cv2.INTER_AREA)
    num = resize(image * known[..., None], (sh, sw), cv2.INTER_AREA)
    if num.ndim == 2:
        num = num[..., None]
    levels = [(num, weight)]
    while min(levels[-1][1].shape) > 8:
        n, wt = levels[-1]
        size = ((wt.shape[0] + 1) // 2, (wt.shape[1] + 1) // 2)
        n2 = resize(n, size, cv2.INTER_AREA)
        levels.append((n2 if n2.ndim == 3 else n2[..., None], resize(wt, size, cv2.INTER_AREA)))
    kernel = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
    cur = None
    for n, wt in reversed(levels):
        fixed = wt > 0.5
        vals = np.where(fixed[..., None], n / np.maximum(wt, 1e-6)[..., None], 0).astype(np.float32)
        if cur is None:
            cur = push_pull(vals, fixed)
        else:
            cur = resize(cur, wt.shape, cv2.INTER_LINEAR)
            cur = cur if cur.ndim == 3 else cur[..., None]
        for _ in range(int(iterations)):
            relaxed = cv2.filter2D(cur, -1, kernel, borderType=cv2.BORDER_REPLICATE)
            relaxed = relaxed if relaxed.ndim == 3 else relaxed[..., None]
            cur = np.where(fixed[..., None], vals, relaxed)
    out = resize(cur, (h, w), cv2.INTER_CUBIC).astype(np.float32)
    return out if out.ndim == 3 else out[..., None]


def detail_sigma(image: np.ndarray, where: np.ndarray, sigma: float = 1.0) -> float:
    """Robust standard deviation of the finest detail (luminance minus its Gaussian blur of
    ``sigma``) over ``where``: the photo's grain there. ``image`` (h, w, 3) uint8 or float."""
    if where.sum() < 30:
        return 0.0
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), sigma)
    return float(1.4826 * np.median(np.abs(detail[where])))


def add_grain(filled: np.ndarray, hole: np.ndarray, target_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``filled`` ((h, w, 3) float32 or uint8) with fine noise added in ``hole`` so that its
    grain (:func:`detail_sigma`) reaches ``target_sigma``. Returns (h, w, 3) float32."""
    out = filled.astype(np.float32)
    have = detail_sigma(out, hole)
    need = float(np.sqrt(max(0.0, target_sigma ** 2 - have ** 2)))
    if need < 0.3 or not hole.any():
        return out
    noise = cv2.GaussianBlur(rng.standard_normal(hole.shape, dtype=np.float32), (0, 0), 0.6)
    noise *= need / max(float(noise.std()), 1e-6) * 1.1
    out[hole] += noise[hole][:, None]
    return out


def _box(mask: np.ndarray, margin: float, min_margin: int = 16) -> Tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = max(min_margin, int(margin * max(y1 - y0, x1 - x0)))
    return slice(max(0, y0 - m), min(h, y1 + m)), slice(max(0, x0 - m), min(w, x1 + m))


def _boxes(hole: np.ndarray, margin: float, min_margin: int = 16) -> List[Tuple[slice, slice, np.ndarray]]:
    """The boxes a fill of ``hole`` ((S, S) bool) is solved on, each with the part of the hole
    it fills ((rows, cols, (S, S) bool)): the hole's connected parts, each with ``margin`` of
    its own size on each side, those whose boxes mostly overlap (by more than half of the
    smaller one) together. The one box around the whole hole (``margin`` of the whole's size)
    when those boxes would cover more than it."""
    whole = _box(hole, margin, min_margin)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8), connectivity=8)
    if n <= 2:
        return [whole + (hole,)]
    h, w = hole.shape
    groups = []  # [y0, y1, x0, x1, {component ids}]
    for i, (x, y, bw, bh, _) in enumerate(stats[1:], start=1):
        m = max(min_margin, int(margin * max(bw, bh)))
        groups.append([max(0, y - m), min(h, y + bh + m), max(0, x - m), min(w, x + bw + m), {i}])
    area = lambda g: (g[1] - g[0]) * (g[3] - g[2])
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i], groups[j]
                overlap = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
                if overlap > 0.5 * min(area(a), area(b)):
                    groups[i] = [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), a[4] | b[4]]
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    whole_area = (whole[0].stop - whole[0].start) * (whole[1].stop - whole[1].start)
    if sum(area(g) for g in groups) > whole_area:
        return [whole + (hole,)]
    return [(slice(g[0], g[1]), slice(g[2], g[3]), np.isin(labels, list(g[4]))) for g in groups]


def patch_fill(image: np.ndarray, hole: np.ndarray, sources: np.ndarray, max_side: int = 384,
               patch_radius: int = 3, margin: float = 0.6, seed: int = 0, whole_patches: bool = False) -> np.ndarray:
    """Exemplar-based fill of ``hole`` whose patches come only from ``sources`` (PatchMatch,
    Barnes et al. 2009, via ``pypatchmatch``; its ``global_mask`` keeps every other pixel out,
    and their values play no part).

    Solved on a box around the hole (``margin`` of its size on each side) reduced to at most
    ``max_side`` pixels, upsampled, and given the sources' grain at full resolution. Parts of
    the hole apart are solved each on its own box, at once (:func:`_boxes`).
    ``image`` (S, S, 3) uint8, ``hole``/``sources`` (S, S) bool. Returns (S, S, 3) uint8 equal
    to ``image`` outside ``hole``. PatchMatch's search always starts from the same seed (the
    library keeps one seed for the whole process, so fills that run at once must agree on it);
    ``seed`` seeds the grain. ``whole_patches``: only patches that lie wholly on ``sources``
    (PatchMatch keeps the other pixels out as patch centres only, so a patch centred next to a
    glasses rim on the cheek would carry a piece of it), where enough of them are left; for
    plain textures (skin), not for patterned ones (clothes), where it leaves only a few motifs
    to repeat."""
    out = image.copy()
    if not hole.any():
        return out
    whole = _box(hole, margin)
    extent = max(whole[0].stop - whole[0].start, whole[1].stop - whole[1].start)
    known = sources & ~hole
    jobs = _boxes(hole, margin)

    def solve(i):
        rows, cols, part = jobs[i]
        # too little of that class in the part's box: in the box around the whole hole, then
        # in the whole frame
        for rows, cols in ((rows, cols), whole, (slice(0, hole.shape[0]), slice(0, hole.shape[1]))):
            values = _solve(image[rows, cols], part[rows, cols], known[rows, cols], max_side, extent, patch_radius,
                            np.random.default_rng(seed + i), whole_patches)
            if values is not None:
                break
        return rows, cols, part[rows, cols], values

    for rows, cols, part, values in _at_once([lambda i=i: solve(i) for i in range(len(jobs))],
                                             [float(job[2].sum()) for job in jobs]):
        if values is not None:  # the parts are apart: each writes only its own pixels
            out[rows, cols][part] = values[part]
    return out


def _solve(box: np.ndarray, hole: np.ndarray, sources: np.ndarray, max_side: int, extent: int, patch_radius: int,
           rng: np.random.Generator, whole_patches: bool = False) -> Optional[np.ndarray]:
    """One PatchMatch solve of ``hole`` ((h, w) bool) in ``box`` ((h, w, 3) uint8) from
    ``sources`` ((h, w) bool), at the scale that brings ``extent`` (or the box, if larger) to
    ``max_side``. Returns the filled box ((h, w, 3) uint8), or None (too few sources)."""
    from patchmatch import patch_match

    if sources.sum() < 50:
        return None
    bh, bw = hole.shape
    f = min(1.0, max_side / max(bh, bw, extent))
    sh, sw = max(8, int(round(bh * f))), max(8, int(round(bw * f)))
    small = resize(box, (sh, sw), cv2.INTER_AREA) if f < 1 else box
    small_hole = resize(hole.astype(np.float32), (sh, sw), cv2.INTER_AREA) > 0.0 if f < 1 else hole
    small_src = resize(sources.astype(np.float32), (sh, sw), cv2.INTER_AREA) > 0.999 if f < 1 else sources
    small_src &= ~small_hole
    if small_src.sum() < 20:
        return None
    if whole_patches:  # sources whose whole patch is source, where enough of them are left
        k = 2 * patch_radius + 1
        core = cv2.erode(small_src.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        if core.sum() >= max(20, 0.25 * small_src.sum()):
            small_src = core
    patch_match.set_random_seed(PATCHMATCH_SEED)
    excluded = (~small_src & ~small_hole).astype(np.uint8)
    filled = patch_match.inpaint(np.ascontiguousarray(small), small_hole.astype(np.uint8),
                                 global_mask=excluded, patch_size=patch_radius)
    up = resize(filled, (bh, bw), cv2.INTER_CUBIC).astype(np.float32) if f < 1 else filled.astype(np.float32)
    if f < 1:
        up = add_grain(up, hole, detail_sigma(box, sources), rng)
    return np.clip(np.round(up), 0, 255).astype(np.uint8)


def _at_once(tasks: List[Callable[[], T]], sizes: List[float]) -> List[T]:
    """Every task's result, in their order; the tasks run at once on the machine's cores (the
    biggest, by ``sizes``, first). PatchMatch, OpenCV and NumPy leave Python's lock while they
    work, so fills of different regions do run side by side."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = min(len(tasks), os.cpu_count() or 1)
    if workers <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {i: pool.submit(tasks[i]) for i in sorted(range(len(tasks)), key=lambda i: -sizes[i])}
        return [futures[i].result() for i in range(len(tasks))]


# ------------------------------------------------------------------------------ skin
def plain_skin(image: np.ndarray, face: np.ndarray, features: np.ndarray, strictness: float = 1.5,
               unit: Optional[float] = None) -> np.ndarray:
    """Face pixels that are plain skin ((S, S) bool): inside ``face`` ((S, S) bool, the visible
    face), away from ``features`` ((S, S) bool: eyes, brows, lips), its edge and deep shadows
    (darker than the median luminance by ``strictness`` robust deviations), and away from what is
    not plain skin on it (a glasses frame, its glint, a strap: chroma farther from the skin's
    median than 3 robust deviations, or an edge sharper than 6 times the skin's median
    gradient)."""
    s = unit or image.shape[0]
    inner = cv2.erode(face.astype(np.uint8), disk(max(2, s / 150))).astype(bool) & ~features
    if inner.sum() < 50:
        return face & ~features
    rows, cols = _box(inner, 0.0, min_margin=2)  # colours and edges on the face's box only
    sub = inner[rows, cols]
    lab = cv2.cvtColor(image[rows, cols], cv2.COLOR_RGB2LAB).astype(np.float32)
    lum = lab[:, :, 0]
    vals = lum[sub]
    median = np.median(vals)
    spread = 1.4826 * np.median(np.abs(vals - median)) + 1.0
    plain = sub & (lum > median - strictness * spread) & (lum < median + 3 * spread)
    chroma = lab[:, :, 1:]
    off = np.linalg.norm(chroma - np.median(chroma[sub], axis=0), axis=2)
    plain &= off < 3.0 * (1.4826 * np.median(off[sub]) + 1.0)
    edge = np.abs(cv2.Sobel(lum, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(lum, cv2.CV_32F, 0, 1))
    plain &= edge < 6.0 * (np.median(edge[sub]) + 1.0)
    out = np.zeros_like(inner)
    out[rows, cols] = plain
    return out


def _lowpass(image: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``image`` ((h, w, 3) float32) over ``where`` ((h, w) bool), continued
    smoothly (membrane fill) to every other pixel; computed at a resolution that suits ``sigma``."""
    k = max(1, int(sigma // 3))
    h, w = where.shape
    sh, sw = max(4, h // k), max(4, w // k)
    small = resize(image * where[..., None], (sh, sw), cv2.INTER_AREA)
    weight = resize(where.astype(np.float32), (sh, sw), cv2.INTER_AREA)
    num = cv2.GaussianBlur(small, (0, 0), sigma / k)
    den = cv2.GaussianBlur(weight, (0, 0), sigma / k)
    # a thin part of ``where`` (a strip along the jaw) is still its own average, not one pushed
    # in from the nearest wide part (a forehead's, far lighter)
    known = (weight > 0.1) & (den > 0.05)
    avg = np.where(known[..., None], num / np.maximum(den, 1e-4)[..., None], 0).astype(np.float32)
    return resize(push_pull(avg, known), (h, w), cv2.INTER_LINEAR)


def skin_fill(image: np.ndarray, hole: np.ndarray, skin: np.ndarray, face: np.ndarray,
              mirror: Optional[np.ndarray] = None, seed: int = 0, unit: Optional[float] = None) -> np.ndarray:
    """Skin for ``hole`` ((S, S) bool) from the target's own skin: ``skin`` ((S, S) bool, plain
    visible skin, :func:`plain_skin`) gives texture, ``face`` ((S, S) bool, the visible face
    without eyes, brows and lips) gives tone and shading.

    Where the other side is visible skin of ``face``, the hole takes its mirror image (through
    ``mirror``, (3, 3) homography point -> mirror partner, :func:`hairtryon.mapping.face_mirror`),
    shading included, with the smooth tone difference measured around the hole added. Elsewhere a
    frequency split: tone and shading are the low frequencies of the visible skin around the
    hole continued inwards (a membrane fill), texture is PatchMatch from ``skin``. ``image`` (S, S,
    3) uint8; returns (S, S, 3) uint8 equal to ``image`` outside ``hole``. ``unit``: the size
    the widths are relative to (default the image's side; see :func:`rebuild`)."""
    out = image.copy()
    if not hole.any() or skin.sum() < 50:
        return out
    s = unit or image.shape[0]
    sigma = max(2.0, s / 60)
    rows, cols = _box(hole | (skin & grow(hole, s / 20)), 0.1)
    sub_hole = hole[rows, cols]
    img = image[rows, cols].astype(np.float32)
    sub_face = face[rows, cols] & ~sub_hole
    # tone and shading: the membrane through the visible face's own pixels, exact at the hole's
    # border (the face outside the hole stays the target's own, bit for bit; the shadow and
    # strands along the old hair's edge were taken with the old hair)
    redo = sub_hole
    low_target = membrane(img, sub_face, scale=max(2.0, s / 200))
    # ... but the old hair's shade along its edge (what was left of it) would carry across the
    # whole hole: the tone inside comes from the face beyond a band along the hole, and the
    # exact border values fade into it over about s/80 (a soft shade at the edge, no dark plate)
    band = sub_face & grow(sub_hole, s / 40)
    if (sub_face & ~band).sum() > 0.5 * sub_face.sum():
        robust = membrane(img, sub_face & ~band, scale=max(2.0, s / 200))
        depth = cv2.distanceTransform(sub_hole.astype(np.uint8), cv2.DIST_L2, 3)
        fade = np.exp(-depth / max(1.0, s / 80))[..., None]
        low_target = np.where(sub_hole[..., None], robust + fade * (low_target - robust), low_target)
    full_redo = np.zeros_like(hole)
    full_redo[rows, cols] = redo
    donor = patch_fill(image, full_redo, skin & ~full_redo, max_side=512, patch_radius=3, margin=0.5,
                       seed=seed, whole_patches=True)[rows, cols]
    donor = donor.astype(np.float32)
    result = donor - _lowpass(donor, redo, sigma) + low_target
    if mirror is not None:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        hw = image.shape[1], image.shape[0]
        mirrored = cv2.warpPerspective(image, mirror, hw, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        # the partner may be any visible skin of ``face`` (up to its outline, a strap on it
        # included: the other side's mirror image is what this side most likely shows)
        ok = cv2.warpPerspective(face.astype(np.uint8) * 255, mirror, hw, flags=flags) > 250
        mirrored, ok = mirrored[rows, cols].astype(np.float32), ok[rows, cols]
        ring = ok & sub_face  # visible skin whose mirror partner is visible skin
        if (ok & sub_hole).sum() > 50 and ring.sum() > 50:
            offset = _lowpass(img - mirrored, ring, sigma)
            w = cv2.GaussianBlur((ok & sub_hole).astype(np.float32), (0, 0), max(1.0, s / 200))
            w = (w * (ok & sub_hole))[..., None]
            result = w * (mirrored + offset) + (1 - w) * result
    blend = redo.astype(np.float32)[..., None]
    region = out[rows, cols]
    mixed = blend * result + (1 - blend) * img
    sel = blend[..., 0] > 0
    region[sel] = np.clip(np.round(mixed[sel]), 0, 255).astype(np.uint8)
    return out


def mirror_brows(image: np.ndarray, hole: np.ndarray, mesh: np.ndarray, unit: Optional[float] = None,
                 min_hidden: float = 0.15, max_hidden: float = 0.1) -> np.ndarray:
    """An eyebrow the old hair hid in part, completed with the mirror image of the other one.

    ``mesh``: (468, 2) Face Mesh points in the image's pixels; ``hole``: (S, S) bool the rebuilt
    pixels. A brow whose outline (the convex hull of its mesh points) lies at least
    ``min_hidden`` inside the hole, while the other lies at most ``max_hidden`` inside it, gets
    the other brow reflected onto it (an affine fit on the mirrored point pairs), blended in by
    Poisson image editing over its hidden part. ``image`` (S, S, 3) uint8 in and out."""
    from .landmarks import BROW_PAIRS

    s = unit or image.shape[0]
    h, w = image.shape[:2]
    pairs = np.array(BROW_PAIRS)
    grow_px = max(2.0, s / 150)
    out = image
    for this, other in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(mesh[this]).astype(np.int32)), 1)
        hull = grow(hull.astype(bool), grow_px)
        other_hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(other_hull, cv2.convexHull(np.round(mesh[other]).astype(np.int32)), 1)
        hidden = (hull & hole).sum() / max(1, hull.sum())
        if hidden < min_hidden or (other_hull.astype(bool) & hole).sum() > max_hidden * max(1, other_hull.sum()):
            continue
        src_pts = np.hstack([mesh[this], np.ones((len(this), 1))])  # least squares: brow -> mirrored brow
        m = np.linalg.lstsq(src_pts, mesh[other], rcond=None)[0].T
        donor = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
        region = (hull & hole).astype(np.uint8)
        region = cv2.dilate(region, disk(1)) & hull.astype(np.uint8)
        ys, xs = np.nonzero(region)
        if len(ys) < 20 or ys.min() < 2 or xs.min() < 2 or ys.max() > h - 3 or xs.max() > w - 3:
            continue
        # blend in the donor over the hidden part only (its own box, odd-sized, so the clone lands
        # where it came from)
        y0, y1, x0, x1 = ys.min() - 1, ys.max() + 2, xs.min() - 1, xs.max() + 2
        y1 += (y1 - y0 + 1) % 2
        x1 += (x1 - x0 + 1) % 2
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = region[y0:y1, x0:x1] * 255
        centre = ((x0 + x1 - 1) // 2, (y0 + y1 - 1) // 2)
        try:
            out = cv2.seamlessClone(donor, out, mask, centre, cv2.NORMAL_CLONE)
        except cv2.error:
            continue
    return out


def silhouette_shading(image: np.ndarray, face: np.ndarray, rebuilt: np.ndarray, strength: float = 0.12,
                       unit: Optional[float] = None) -> np.ndarray:
    """A rebuilt cheek's outline against what is not face: the skin darkens a little towards it,
    as a face turning away from the light does, and the edge is anti-aliased. ``face``: (S, S)
    bool the face's outline; ``rebuilt``: (S, S) bool the pixels that were rebuilt. (S, S, 3)
    uint8 in and out."""
    s = unit or image.shape[0]
    outline_side = rebuilt & face
    if not outline_side.any():
        return image
    width = max(2.0, s / 60)
    # the shade reaches a few widths into the face: the work is done on a box around that
    rows, cols = _box(outline_side, 0.0, min_margin=int(6 * width) + 2)
    sub_face, sub_rebuilt = face[rows, cols], rebuilt[rows, cols]
    dist = cv2.distanceTransform(sub_face.astype(np.uint8), cv2.DIST_L2, 3)
    shade = 1.0 - strength * np.exp(-dist / width) * (sub_rebuilt & sub_face)
    box = image[rows, cols].astype(np.float32) * shade[..., None]
    # anti-alias the outline: a one-pixel blur across it, where it was rebuilt
    edge = cv2.morphologyEx(sub_face.astype(np.uint8), cv2.MORPH_GRADIENT, disk(1)).astype(bool) & sub_rebuilt
    soft = cv2.GaussianBlur(box, (0, 0), max(0.7, s / 1000))
    box[edge] = soft[edge]
    out = image.copy()
    out[rows, cols] = np.clip(np.round(box), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------ the rebuild
@dataclass
class Rebuild:
    """The hairless target: ``image`` (S, S, 3) uint8 with what the old hair covered rebuilt;
    ``filled`` (S, S) bool the pixels that were rebuilt."""

    image: np.ndarray
    filled: np.ndarray


def rebuild(image: np.ndarray, hole: np.ndarray, under: np.ndarray, known: np.ndarray,
            features: np.ndarray, neck: Optional[np.ndarray] = None, cloth: Optional[np.ndarray] = None,
            mirror: Optional[np.ndarray] = None, seed: int = 0, unit: Optional[float] = None,
            mesh: Optional[np.ndarray] = None, body_mirror: Optional[np.ndarray] = None,
            tinted: Optional[np.ndarray] = None) -> Rebuild:
    """Rebuild ``hole`` ((S, S) bool, what the old hair covered and the new hair does not hide)
    class by class, as ``under`` ((S, S) uint8, :func:`hairtryon.mapping.under_hair`) says,
    from ``known`` ((S, S) bool) pixels of the same class only. ``features``: (S, S) bool the
    target's eyes, brows and lips (never copied as skin). Neck+clothes is split in two when
    ``neck`` ((S, S) bool, the neck's column) and ``cloth`` ((S, S) bool, the visible pixels that
    are clothes) are given: the neck from neck skin, the shoulders from clothes. ``mirror``: the
    face-mirror homography; ``mesh`` (468, 2) the Face Mesh points in the image's pixels (a brow
    half hidden under the old hair is completed from the other). ``body_mirror``: (3, 3) the
    reflection across the face's axis: a bare shoulder the old hair hid takes the other one's
    mirror image, shading included, where that one shows skin. ``tinted``: (S, S) bool pixels
    beside the old hair that keep their texture and only lose its shade or tint
    (:func:`restore_tone`, first, so the fills meet the tone made good). ``unit``: the size every width here is relative to, in pixels (the
    side of the face's nominal work frame; default the image's side). Returns a :class:`Rebuild`."""
    out = image.copy()
    s = unit or image.shape[0]
    if tinted is not None and tinted.any():
        for cls in (FACE, BACKGROUND):
            region = tinted & (under == cls) & ~hole
            out = restore_tone(out, region, known & (under == cls) & ~tinted & ~hole & ~features, unit=s)
    # each class is filled from its own pixels only, so the fills are independent: they run at
    # once (PatchMatch leaves Python's lock) and are written back in this order, each with the
    # shading that goes with it
    steps = []  # (its hole, the fill: image -> image, then: image -> image or None)
    # sources keep away from the old hair's edge: the parser's mistakes (strands called
    # background) lie there
    clean = known & ~grow(hole, max(2, s / 120))
    others = clean & np.isin(under, (BACKGROUND, NECK, EARS))
    bg_hole = hole & (under == BACKGROUND)
    bg_src = _enough(clean & (under == BACKGROUND), others)

    def background_fill(im):
        im = patch_fill(im, bg_hole, bg_src, patch_radius=BACKGROUND_PATCH_RADIUS, seed=seed)
        return continue_tone(im, bg_hole, clean & (under == BACKGROUND), unit=s)

    steps.append((bg_hole, background_fill, None))
    ears = hole & (under == EARS)
    steps.append((ears, lambda im: patch_fill(im, ears, others, seed=seed + 1), None))
    body_part, body_src = hole & (under == NECK), known & (under == NECK)
    if body_part.any():
        cloth = np.zeros_like(hole) if cloth is None else cloth
        neck = np.zeros_like(hole) if neck is None else neck
        # the neck is skin; the shoulders are clothes where the visible shoulders mostly are
        # (their pattern copied), else bare skin like the visible ones
        shoulders_src = body_src & ~neck
        dressed = (shoulders_src & cloth).sum() >= 0.5 * max(1, shoulders_src.sum())
        skin_src = body_src & ~cloth
        for part, is_cloth in ((body_part & neck, False), (body_part & ~neck, dressed)):
            if not part.any():
                continue
            if is_cloth:
                src = _enough(clean & body_src & cloth, clean & body_src)
                steps.append((part, lambda im, part=part, src=src: patch_fill(im, part, src, max_side=640,
                                                                               seed=seed + 2), None))
            elif skin_src.sum() >= 100:
                plain = plain_skin(image, skin_src, features, unit=s)
                steps.append((part, lambda im, part=part, plain=plain: skin_fill(im, part, plain, skin_src, body_mirror,
                                                                                 seed=seed + 3, unit=s),
                              # a rounded neck or shoulder
                              lambda im, part=part: silhouette_shading(im, under == NECK, part, unit=s)))
            else:
                src = _enough(clean & body_src, others)
                steps.append((part, lambda im, part=part, src=src: patch_fill(im, part, src, seed=seed + 3), None))
    face_part = hole & (under == FACE)
    if face_part.any():
        visible = known & (under == FACE)

        def face_fill(im):
            im = skin_fill(im, face_part, plain_skin(image, visible, features, unit=s), visible & ~features, None,
                           seed=seed, unit=s)
            return mirror_brows(im, face_part, mesh, unit=s) if mesh is not None else im

        steps.append((face_part, face_fill, lambda im: silhouette_shading(im, under == FACE, hole, unit=s)))
    steps = [step for step in steps if step[0].any()]
    fills = _at_once([lambda fill=fill: fill(out) for _, fill, _ in steps], [float(part.sum()) for part, _, _ in steps])
    for (part, _, then), filled in zip(steps, fills):
        out[part] = filled[part]
        if then is not None:
            out = then(out)
    # where two rebuilt classes meet (a shoulder against the background), the edge is as soft
    # as a photographed one, not a rasterised polygon's
    seams = hole & (cv2.morphologyEx(np.where(hole, under, 255).astype(np.uint8), cv2.MORPH_GRADIENT,
                                     disk(1)) > 0) & (under != FACE)
    if seams.any():
        soft = cv2.GaussianBlur(out, (0, 0), max(0.8, s / 700))
        out[seams] = soft[seams]
    return Rebuild(out, hole.copy())


def continue_tone(image: np.ndarray, hole: np.ndarray, around: np.ndarray, unit: Optional[float] = None) -> np.ndarray:
    """``hole`` ((S, S) bool, filled by patches) given the tone of what lies ``around`` it
    ((S, S) bool, the same class's own pixels): the fill's low frequencies (a Gaussian of
    ``unit``/60) replaced by the membrane through the pixels around the hole, so the fill
    continues the photo's gradients and meets them without a step, while its texture stays the
    patches'. Far from every pixel around it (a hole that reaches the photo's border, where the
    membrane would only stretch a few pixels' tone across it), the fill keeps its own tone,
    the patches', fully beyond ``unit``/8. (S, S, 3) uint8 in and out; pixels outside ``hole``
    unchanged."""
    boxed = _tone_box(image, hole, around, 0.15, min_region=1)
    if boxed is None:
        return image
    rows, cols, sub_hole, sub_around, img = boxed
    s = unit or image.shape[0]
    sigma = max(2.0, s / 60)
    low_fill = _lowpass(img, sub_hole, sigma)
    low_around = membrane(img, sub_around, scale=max(2.0, s / 200))
    far = cv2.distanceTransform((~sub_around).astype(np.uint8), cv2.DIST_L2, 3)
    near = (1.0 - smoothstep(far / (s / 8)))[..., None]
    return _write_back(image, rows, cols, img + near * (low_around - low_fill), sub_hole)


def restore_tone(image: np.ndarray, region: np.ndarray, beyond: np.ndarray, unit: Optional[float] = None) -> np.ndarray:
    """``region`` ((S, S) bool: pixels that the old hair shaded or tinted, beside it) given the
    tone of the same class ``beyond`` it ((S, S) bool), its texture kept: the region's own
    local average (a Gaussian of ``unit``/150) is replaced by the average of the pixels beyond
    (``unit``/60, continued into the region), fully from ``unit``/75 inside it, in a ramp
    before. (S, S, 3) uint8 in and out; pixels outside ``region`` unchanged."""
    boxed = _tone_box(image, region, beyond, 0.3, min_region=10)
    if boxed is None:
        return image
    rows, cols, sub, sub_b, img = boxed
    s = unit or image.shape[0]
    sigma = max(1.5, s / 150)
    own = _lowpass(img, sub, sigma)
    wanted = _lowpass(img, sub_b, max(2.0, s / 60))
    ramp = cv2.distanceTransform((~sub_b).astype(np.uint8), cv2.DIST_L2, 3)
    w = np.clip(ramp / (2.0 * sigma), 0.0, 1.0)[..., None]
    return _write_back(image, rows, cols, img + w * (wanted - own), sub)


def _tone_box(image: np.ndarray, region: np.ndarray, reference: np.ndarray, margin: float, min_region: int):
    """The box around ``region`` (``margin`` of its size on each side) that a tone correction
    works on: (rows, cols, the region and the ``reference`` pixels in it, the box as float32),
    or None where the region has fewer than ``min_region`` pixels or the box fewer than 50 of
    the reference."""
    if region.sum() < min_region or reference.sum() < 50:
        return None
    rows, cols = _box(region, margin)
    sub, sub_ref = region[rows, cols], reference[rows, cols]
    if sub_ref.sum() < 50:
        return None
    return rows, cols, sub, sub_ref, image[rows, cols].astype(np.float32)


def _write_back(image: np.ndarray, rows: slice, cols: slice, values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with the box (``rows``, ``cols``) taking ``values`` ((h, w, 3) float,
    rounded and clipped to uint8) where ``where`` ((h, w) bool) says."""
    out = image.copy()
    out[rows, cols][where] = np.clip(np.round(values[where]), 0, 255).astype(np.uint8)
    return out


def _enough(sources: np.ndarray, fallback: np.ndarray, minimum: int = 100) -> np.ndarray:
    return sources if sources.sum() >= minimum else fallback


def grow_hair(foreground: np.ndarray, alpha: np.ndarray, gaps: np.ndarray, seed: int = 0,
              unit: Optional[float] = None):
    """The new hair grown over ``gaps`` ((S, S) bool): its colours synthesised by PatchMatch
    from its own opaque pixels, fully opaque there with a soft rim. ``foreground`` (S, S, 3)
    float32 0-255, ``alpha`` (S, S) float32. Returns (foreground, alpha), new arrays."""
    if not gaps.any():
        return foreground, alpha
    core = alpha > 0.95
    if core.sum() < 100:
        return foreground, alpha
    fg8 = np.clip(np.round(foreground), 0, 255).astype(np.uint8)
    grown = patch_fill(fg8, gaps, core & ~gaps, max_side=448, patch_radius=4, margin=0.8, seed=seed)
    s = unit or gaps.shape[0]
    # opaque inside, a soft rim; towards its lower end the grown hair thins out like hair tips
    soft = cv2.GaussianBlur(gaps.astype(np.float32), (0, 0), max(1.0, s / 400))
    rows = np.nonzero(gaps.any(axis=1))[0]
    taper = np.ones(gaps.shape[0], np.float32)
    if len(rows):
        length = max(2.0, s / 25)
        taper = np.clip((rows.max() - np.arange(gaps.shape[0])) / length, 0, 1).astype(np.float32)
    grown_alpha = np.where(gaps, np.clip(2.0 * soft, 0.0, 1.0), 0.0) * taper[:, None]
    new_alpha = np.maximum(alpha, grown_alpha).astype(np.float32)
    fg = np.where(gaps[..., None], grown.astype(np.float32), foreground).astype(np.float32)
    return fg, new_alpha


__all__ = ["push_pull", "detail_sigma", "add_grain", "patch_fill", "continue_tone", "restore_tone", "plain_skin", "skin_fill", "Rebuild",
           "rebuild", "grow_hair"]
