"""Hair colour: measure a head of hair's colour, and give the new hair another photo's colour.

Beyond the paper, which takes shape and colour from one source photo: the new hairstyle may
wear the hair colour of a third photo (``--color REF``) or the target's own (``--color keep``).

Everything happens in CIELAB (D65; L* 0-100, a* and b* about -128..127), where distances are
perceptual. A head of hair is described by :class:`HairColour`: the median colour, the spread
of its lightness, and its *ramp*: the median colour of the hair's shadows, mid-tones and
highlights (the hair in bins of its own lightness). :func:`recolour` moves the new hair's
lightness onto the reference's (location and scale: median and interquartile range), so that
every strand, highlight and shadow keeps its place and its contrast relative to the rest, and
gives each pixel the reference's chroma at the same rank of lightness (dark strands take the
reference's shadow hue, highlights its highlight hue), plus the source's own chroma variation
around its ramp. Dark to blond, blond to dark, grey to any colour and saturated dyes (red, pink,
blue) are the same operation; out-of-gamut colours lose chroma, not lightness.

Arrays: images (H, W, 3) uint8 RGB; masks (H, W) bool; the hair layer's foreground (S, S, 3)
float32 0-255 and alpha (S, S) float32 in [0, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .errors import HairTryOnError

BINS = 7  # lightness bins of a ramp: shadows .. highlights
QUANTILES = (0.01, 0.05, 0.15, 0.25, 0.5, 0.75, 0.85, 0.95, 0.99)  # of L*, matched source -> reference
MIN_HAIR_SHARE = 0.08  # measurable hair (after erosion) must cover this share of the face's area
SLOPE_LIMITS = (0.25, 2.5)  # how much the lightness map may compress or stretch (strands stay strands)
CHROMA_SCALE_LIMITS = (0.2, 1.5)  # ... and the chroma variation around the ramp
CHROMA_RESIDUAL = 1.5  # the source's own chroma variation, softly kept within this many reference spreads


class TooLittleHair(HairTryOnError):
    """A photo whose hair colour was asked for shows too little hair to measure (a buzz cut, a
    shaved head, headwear, no hair found)."""


@dataclass(frozen=True)
class HairColour:
    """The colour statistics of a head of hair, in CIELAB.

    ``median``: (3,) float32 the median L*, a*, b*. ``l_scale``: robust spread of L* (the
    interquartile range / 1.349, a standard deviation for normal data). ``l_quantiles``:
    (len(QUANTILES),) float32 the L* distribution at :data:`QUANTILES`. ``ramp``: (BINS, 3)
    float32 the median Lab of the hair in ``BINS`` equal-count bins of its lightness, darkest
    first. ``chroma_scale``: robust spread of (a*, b*) around the ramp. ``pixels``: how many
    pixels were measured.
    """

    median: np.ndarray
    l_scale: float
    l_quantiles: np.ndarray
    ramp: np.ndarray
    chroma_scale: float
    pixels: int

    @property
    def rgb(self) -> tuple:
        """The median colour as an sRGB (r, g, b) tuple of ints 0-255 (for display)."""
        return tuple(int(v) for v in _rgb(self.median[None].astype(np.float32))[0].round())

    def describe(self) -> str:
        """One line: 'L* 35 a* 8 b* 19 (#5a4232)'."""
        r, g, b = self.rgb
        L, a, b_ = self.median
        return f"L* {L:.0f} a* {a:.0f} b* {b_:.0f} (#{r:02x}{g:02x}{b:02x})"


# ------------------------------------------------------------------------------------ helpers
def _lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB 0-255 (any dtype) -> (N, 3) float32 CIELAB (OpenCV: sRGB, D65)."""
    a = np.clip(np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0, 0.0, 1.0)
    return cv2.cvtColor(a, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def _rgb_unclipped(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(lab, np.float32).reshape(-1, 1, 3), cv2.COLOR_LAB2RGB).reshape(-1, 3) * 255.0


def _rgb(lab: np.ndarray) -> np.ndarray:
    """(N, 3) float32 CIELAB -> (N, 3) float32 RGB 0-255. A colour outside the sRGB gamut keeps
    its lightness and hue and loses chroma until it fits (bisection on the chroma factor)."""
    lab = np.asarray(lab, np.float32)
    rgb = _rgb_unclipped(lab)
    out = (rgb < -0.5) | (rgb > 255.5)
    bad = out.any(axis=1)
    if bad.any():
        sub = lab[bad]
        lo = np.zeros(len(sub), np.float32)
        hi = np.ones(len(sub), np.float32)
        for _ in range(8):
            mid = (lo + hi) / 2
            trial = np.concatenate([sub[:, :1], sub[:, 1:] * mid[:, None]], axis=1)
            t = _rgb_unclipped(trial)
            ok = ((t >= -0.5) & (t <= 255.5)).all(axis=1)
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        rgb[bad] = _rgb_unclipped(np.concatenate([sub[:, :1], sub[:, 1:] * lo[:, None]], axis=1))
    return np.clip(rgb, 0.0, 255.0)


def _robust_scale(x: np.ndarray) -> float:
    q25, q75 = np.percentile(x, [25, 75])
    return float((q75 - q25) / 1.349)


def _ramp(lab: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(bins, 3) median Lab of ``lab`` ((N, 3)) in equal-count bins of its L*, darkest first."""
    order = np.argsort(lab[:, 0], kind="stable")
    return np.stack([np.median(lab[part], axis=0) for part in np.array_split(order, bins)]).astype(np.float32)


def _ramp_at(ramp: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The ramp's colour at each fractional lightness rank (0 darkest, 1 lightest): (N, 3)."""
    centres = (np.arange(len(ramp)) + 0.5) / len(ramp)
    return np.stack([np.interp(rank, centres, ramp[:, c]) for c in range(3)], axis=1)


def _stats(lab: np.ndarray) -> HairColour:
    """:class:`HairColour` of (N, 3) Lab pixels."""
    ramp = _ramp(lab)
    rank = _rank(lab[:, 0], lab[:, 0])
    residual = lab[:, 1:] - _ramp_at(ramp, rank)[:, 1:]
    chroma = float(np.median(np.linalg.norm(residual, axis=1)) * 1.4826) if len(lab) else 0.0
    return HairColour(np.median(lab, axis=0).astype(np.float32), max(_robust_scale(lab[:, 0]), 0.5),
                      np.percentile(lab[:, 0], np.array(QUANTILES) * 100).astype(np.float32), ramp,
                      max(chroma, 0.25), int(len(lab)))


def _rank(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Fractional rank in [0, 1] of each of ``values`` among ``reference`` (1-D), piecewise linear."""
    qs = np.linspace(0.0, 1.0, 65)
    levels = np.percentile(reference, qs * 100)
    levels = np.maximum.accumulate(levels + np.arange(len(levels)) * 1e-6)  # strictly rising
    return np.interp(values, levels, qs)


REFERENCE = "colour reference"  # the role of a colour photo in messages: "the colour reference photo red.jpg"


def photo_name(image, role: str) -> str:
    """How messages name a photo (:func:`errors.describe`): its role and, for a path or a loaded
    photo, its file name ("the colour reference photo red.jpg", "the target photo me.jpg")."""
    import os
    from pathlib import Path

    from .errors import describe

    name = Path(image).name if isinstance(image, (str, os.PathLike)) else getattr(image, "name", "") or ""
    return describe(name if isinstance(name, str) else "", role)


# ---------------------------------------------------------------------------------- measuring
def measure(image: np.ndarray, hair: np.ndarray, face: Optional[np.ndarray] = None, what: str = "the photo",
            erode_px: int = 2, min_share: float = MIN_HAIR_SHARE) -> HairColour:
    """The hair colour of a photo: :class:`HairColour` of ``image`` ((H, W, 3) uint8 RGB) over
    ``hair`` ((H, W) bool, e.g. the parser's hair class), eroded by ``erode_px`` so that no edge
    pixel mixed with the background or the skin counts. Clipped white (every channel at 250 or
    more: a highlight with no colour left) is left out; the statistics are medians and
    quantiles, so highlights and shadows do not move them.

    ``face`` ((H, W) bool): the face, whose area decides what "too little hair" is: fewer hair
    pixels than ``min_share`` of it (a buzz cut, a shaved head, no hair found) raises
    :class:`TooLittleHair` with one sentence naming ``what`` (e.g. "the colour reference
    photo red.jpg"). Without ``face``, fewer than 500 pixels do."""
    hair = np.asarray(hair, bool)
    if erode_px > 0:
        core = cv2.erode(hair.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))).astype(bool)
    else:
        core = hair
    pixels = np.asarray(image)[core]
    pixels = pixels[pixels.min(axis=1) < 250]  # clipped white: a highlight with no colour left
    need = max(500, int(min_share * face.sum())) if face is not None else 500
    if len(pixels) < need:
        share = len(pixels) / max(int(face.sum()), 1) if face is not None else 0.0
        if len(pixels) < 50:
            found = "no hair"
        elif face is None:
            found = f"only {len(pixels)} hair pixels"
        else:
            found = "almost no hair" if share < 0.01 else f"hair on only {share:.0%} of the face's area"
        raise TooLittleHair(f"Too little hair is visible in {what} to measure its colour ({found} found: a buzz "
                            "cut, a shaved head or headwear?); use a photo where the hair is clearly visible.")
    return _stats(_lab(pixels))


def own_hair(analysis) -> np.ndarray:
    """(S, S) bool: the parser's hair in a photo's work frame (``pipeline.FaceAnalysis``) that is
    this person's: the connected parts of it that come within 1/8 of the face's nominal frame
    of the face (other people's hair in a group photo, hair-coloured background further away,
    left out); all of it when no part does. Headwear: where the parser sees a hat on 15% or
    more of the hair, the hat's pixels are left out."""
    from .segmentation import HAIR

    hair = (analysis.semantic.labels == HAIR) & analysis.inside
    hat = analysis.semantic.parts.get("hat") if analysis.semantic.parts else None
    if hat is not None and hair.any() and (hat[hair] > 0.5).mean() >= 0.15:
        hair &= hat <= 0.5
    n, parts = cv2.connectedComponents(hair.astype(np.uint8), connectivity=8)
    if n <= 2:
        return hair
    reach = max(3, int(round(analysis.unit / 8)))
    near = cv2.dilate(analysis.face_region().astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))).astype(bool)
    keep = np.unique(parts[near & hair])
    keep = keep[keep > 0]
    return np.isin(parts, keep) if len(keep) else hair


def measure_analysis(analysis, what: str = "the photo") -> HairColour:
    """:func:`measure` on a photo's cached analysis (``pipeline.FaceAnalysis``): its work-frame
    crop, the person's own hair (:func:`own_hair`), eroded by 1/200 of the frame."""
    from .segmentation import FACE

    face = (analysis.semantic.labels == FACE) & analysis.inside
    return measure(analysis.crop, own_hair(analysis), face, what, erode_px=max(1, round(analysis.frame.size / 200)))


# -------------------------------------------------------------------------------- recolouring
def recolour(foreground: np.ndarray, alpha: np.ndarray, reference: HairColour, strength: float = 1.0) -> np.ndarray:
    """The hair layer's colours in the reference's hair colour: (S, S, 3) float32 0-255.

    ``foreground``: (S, S, 3) float32 0-255 the new hair's own colours; ``alpha``: (S, S)
    float32 its matte. Only pixels with alpha > 0 change (the rest are returned as they are).
    The hair's own statistics come from its pixels with alpha > 0.5 (the whole layer when it
    has none).

    Lightness: L* is split into a base (a Gaussian average over the hair, about S/400 px: the
    shading, the broad highlights and shadows) and the detail (the strands: L* minus the base).
    The strands are the source's own, added back unchanged, so their contrast stays what it
    was; the base is moved by a monotone piecewise-linear map (its slope limited to
    :data:`SLOPE_LIMITS`) chosen so that base and strands together have the reference's L*
    distribution (each of :data:`QUANTILES` on the reference's: location, scale, and the skew of
    dark hair's highlights all match, and the strands of dark shadows are not pushed below
    black); what still leaves (0, 100) is brought back by soft knees. Colour: (a*, b*) become the reference's
    ramp at the pixel's lightness rank (dark strands take the reference's shadow hue,
    highlights its highlight hue) plus the source's own variation around its ramp (scaled by
    the ratio of the two spreads, limited to :data:`CHROMA_SCALE_LIMITS`, its length softly
    kept under :data:`CHROMA_RESIDUAL` reference spreads). Finally the hair's
    median is put exactly on the reference's. ``strength`` in [0, 1] blends from the source's
    colour (0) to the reference's (1)."""
    fg = np.asarray(foreground, np.float32)
    a = np.asarray(alpha, np.float32)
    where = a > 0
    if not where.any():
        return fg.copy()
    L = cv2.cvtColor(np.clip(fg / 255.0, 0, 1), cv2.COLOR_RGB2LAB)[..., 0]
    sigma = max(3.0, a.shape[0] / 256)
    weight = cv2.GaussianBlur(a, (0, 0), sigma)
    base = cv2.GaussianBlur(L * a, (0, 0), sigma) / np.maximum(weight, 1e-4)
    base = np.where(weight > 1e-3, base, L)[where]
    lab = _lab(fg[where])
    detail = lab[:, 0] - base
    core = a[where] > 0.5
    if core.sum() < 50:
        core = np.ones(len(lab), bool)
    src = _stats(lab[core])
    # the base's map, chosen so that base + strands has the reference's distribution: a few
    # rounds of moving each knot by what its quantile still misses
    qs = np.array(QUANTILES) * 100
    base_q, want = np.percentile(base[core], qs), reference.l_quantiles.astype(np.float64)
    knots_y = want.copy()
    for _ in range(4):
        knots = lightness_map(base_q, knots_y)
        got = np.percentile(np.interp(base[core], *knots) + detail[core], qs)
        knots_y = knots_y + (want - got)
    new_l = np.interp(base, *lightness_map(base_q, knots_y)) + detail
    rank = _rank(lab[:, 0], lab[core, 0])
    residual = lab[:, 1:] - _ramp_at(src.ramp, rank)[:, 1:]
    k_c = float(np.clip(reference.chroma_scale / src.chroma_scale, *CHROMA_SCALE_LIMITS))
    residual = _soft_limit(residual * k_c, CHROMA_RESIDUAL * max(reference.chroma_scale, 2.0))
    new = np.concatenate([new_l[:, None], _ramp_at(reference.ramp, rank)[:, 1:] + residual], axis=1)
    new = new.astype(np.float32)
    # the median of the hair (alpha > 0.5) exactly on the reference's
    new += (reference.median - np.median(new[core], axis=0))[None]
    new[:, 0] = _soft_range(new[:, 0])
    if strength < 1.0:
        new = lab + float(np.clip(strength, 0.0, 1.0)) * (new - lab)
    out = fg.copy()
    out[where] = _rgb(new)
    return out


def lightness_map(src: np.ndarray, ref: np.ndarray, limits=SLOPE_LIMITS):
    """The knots (x, y) of the monotone piecewise-linear map of L* from the source quantiles
    ``src`` to the reference's ``ref`` (both (Q,), :data:`QUANTILES`): anchored at the medians,
    each segment's slope limited to ``limits``; (x, y) extended by 100 L* units at both ends
    with the end slopes."""
    x = np.maximum.accumulate(np.asarray(src, np.float64) + np.arange(len(src)) * 1e-3)
    r = np.asarray(ref, np.float64)
    mid = list(QUANTILES).index(0.5)
    y = np.empty_like(x)
    y[mid] = r[mid]
    slopes = np.clip(np.diff(r) / np.maximum(np.diff(x), 1e-3), *limits)
    for i in range(mid + 1, len(x)):
        y[i] = y[i - 1] + slopes[i - 1] * (x[i] - x[i - 1])
    for i in range(mid - 1, -1, -1):
        y[i] = y[i + 1] - slopes[i] * (x[i + 1] - x[i])
    x = np.concatenate([[x[0] - 100], x, [x[-1] + 100]])
    y = np.concatenate([[y[0] - 100 * slopes[0]], y, [y[-1] + 100 * slopes[-1]]])
    return x, y


def _soft_limit(v: np.ndarray, limit: float) -> np.ndarray:
    """(N, 2) vectors with their length softly kept under ``limit`` (tanh), direction kept: a
    two-tone source (pink ends on white) does not turn a brown reference green."""
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v * (limit * np.tanh(n / limit) / np.maximum(n, 1e-6))


def _soft_range(L: np.ndarray, lo: float = 3.0, hi: float = 97.0) -> np.ndarray:
    """L* kept inside (0, 100) by soft knees below ``lo`` and above ``hi`` (no flat clipping: a
    highlight pushed past white stays brighter than its neighbours)."""
    L = np.asarray(L, np.float32).copy()
    top = L > hi
    L[top] = hi + (100.0 - hi) * np.tanh((L[top] - hi) / (100.0 - hi))
    bottom = L < lo
    L[bottom] = lo - lo * np.tanh((lo - L[bottom]) / lo)
    return L


def recolour_layer(layer, reference: Optional[HairColour]):
    """A hair layer (anything with ``alpha`` and ``foreground``, e.g. ``HairLayer``) with its
    foreground in the ``reference`` colour (:func:`recolour`); the same layer when None."""
    if reference is None:
        return layer
    return dataclasses.replace(layer, foreground=recolour(layer.foreground, layer.alpha, reference))


# ---------------------------------------------------------------------------------- measures
def strand_energy(image: np.ndarray, mask: np.ndarray, sigma: float = 1.0) -> tuple:
    """The fine detail of the hair in ``mask`` ((H, W) bool) of ``image`` ((H, W, 3) uint8):
    (absolute, relative). ``absolute``: mean |Laplacian of Gaussian| (``sigma`` px) of L*, the
    strands' contrast; ``relative``: the same over the hair's robust L* spread (interquartile
    range / 1.349), which an affine change of lightness leaves alone, so that the strands of
    dark hair and of the blond they were recoloured to can be compared."""
    L = cv2.cvtColor(np.asarray(image, np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    log = np.abs(cv2.Laplacian(cv2.GaussianBlur(L, (0, 0), sigma), cv2.CV_32F))
    inner = cv2.erode(np.asarray(mask, np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if inner.sum() < 50:
        return float("nan"), float("nan")
    absolute = float(log[inner].mean())
    return absolute, absolute / max(_robust_scale(L[inner]), 0.5)


def figures(tool, base, coloured, reference) -> dict:
    """The figures of one recolouring, as the benchmark and the tests report them.

    ``base``/``coloured``: the ``TryOnResult`` of one (target, source) pair without and with a
    colour; ``reference``: the colour photo's ``FaceAnalysis`` (the target's for 'keep');
    ``tool``: the ``HairTryOn`` that made them (its parser looks at the results again). Each
    result's hair is what the parser finds in it where the new hair lies (matte > 0.5), inside
    the photo. Returns ``delta_e`` (CIEDE2000 between the median Lab of the coloured result's
    hair and of the reference's parsed hair, :func:`own_hair`), ``delta_e_before`` (the same without colour),
    ``iou``/``iou_base`` (the hair-shape IoU of :func:`evaluation.evaluate`, the result's
    parsed hair against the warped source hair, with and without colour, and
    ``iou_change`` their difference), ``iou_runs`` (IoU of the two results' hair),
    ``hf_ratio_abs`` (:func:`strand_energy`'s absolute figure, coloured over base: the strands'
    contrast kept) and ``hf_ratio`` (its figure relative to the L* spread)."""
    from .metrics import colour_difference, iou
    from .segmentation import HAIR

    def hair_of(result):
        inside = result.target.inside
        crop = result.target.frame.extract(result.image)
        parsed = (tool.parse_crop(crop).labels == HAIR) & inside
        shape = iou(parsed, (result.masks["source_hair"] > 0.5) & inside)  # evaluation.evaluate's hair_iou
        return crop, parsed & (result.masks["hair_alpha"] > 0.5), shape

    b_img, b_hair, i_base = hair_of(base)
    c_img, c_hair, i_col = hair_of(coloured)
    ref_hair = own_hair(reference)
    e_base, e_col = strand_energy(b_img, b_hair), strand_energy(c_img, c_hair)
    return {
        "delta_e": colour_difference(c_img, c_hair, reference.crop, ref_hair),
        "delta_e_before": colour_difference(b_img, b_hair, reference.crop, ref_hair),
        "iou": i_col, "iou_base": i_base, "iou_change": i_col - i_base,
        "iou_runs": iou(b_hair, c_hair),
        "hf_ratio": e_col[1] / e_base[1], "hf_ratio_abs": e_col[0] / e_base[0],
    }
