"""Stage 4 of the method for the source (paper 3.2.3, cropping): the source's hair as a layer.

The hair is cut out of the photo it was shot in, in the source's own work frame, before it is
moved onto the target's head: a trimap around the parser's hair edge (sure hair, sure not-hair,
an unknown band whose width follows the hair's scale), where pixels inside the hair that have the
colour of the source's background count as background (holes between curls, sky under a
curled-in bob); closed-form alpha matting (``pymatting``) solved at a reduced size and brought
back to full resolution by its own local linear model; the hair's colours with the background
unmixed out of them (``pymatting.estimate_foreground_ml``). Then the layer is warped into the
target's frame (:func:`warp_layer`) and given the target photo's grain and sharpness
(:func:`measure_grain`, :func:`match_grain`).

Arrays: images (S, S, 3) uint8 RGB; masks (S, S) bool; mattes (S, S) float32 in [0, 1];
colours (S, S, 3) float32 0-255. ``pymatting`` (and its numba kernels, about 0.8 s) is imported
on first use only.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from .framing import disk, smoothstep
from .mapping import joined

# ----------------------------------------------------------------------------------- the layer
@dataclass
class HairLayer:
    """The source's hair, cut out: ``alpha`` (S, S) float32 soft matte in [0, 1];
    ``foreground`` (S, S, 3) float32 0-255 the hair's own colours (the old background unmixed
    out of them), defined everywhere (beyond the hair it continues the hair's colours).
    ``mask``: (S, S) bool, alpha > 0.5."""

    alpha: np.ndarray
    foreground: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.alpha > 0.5

    def on_white(self) -> np.ndarray:
        """(S, S, 3) uint8: the hair over white, as the paper shows the cropped source."""
        a = self.alpha[..., None]
        return np.clip(self.foreground * a + 255.0 * (1 - a), 0, 255).astype(np.uint8)

    def over(self, image: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8: the layer composited over ``image`` ((S, S, 3) uint8)."""
        a = self.alpha[..., None]
        return np.clip(np.round(image.astype(np.float32) * (1 - a) + self.foreground * a), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ small helpers
def _lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB 0-255 (any dtype) -> (..., 3) float32 CIELAB (L 0-100)."""
    a = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(a, cv2.COLOR_RGB2LAB).reshape(np.shape(rgb))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB 0-255 -> (H, W) float32 luma (Rec. 601 weights), 0-255."""
    r = np.asarray(rgb, np.float32)
    return 0.299 * r[..., 0] + 0.587 * r[..., 1] + 0.114 * r[..., 2]


def _box(mask: np.ndarray, pad: int = 0):
    """(rows, cols) slices of the bounding box of ``mask`` grown by ``pad``, or None."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    h, w = mask.shape
    return (slice(max(0, ys.min() - pad), min(h, ys.max() + pad + 1)),
            slice(max(0, xs.min() - pad), min(w, xs.max() + pad + 1)))


def _replicate_outside(arr: np.ndarray, inside: Optional[np.ndarray]) -> np.ndarray:
    """``arr`` (S, S[, C]) with the frame pixels outside the photo (``inside`` False, a frame
    minus an axis-aligned photo box) replaced by the photo's own pixels mirrored at its border:
    hair the photo cuts off goes on with its own strands (the pipeline tapers it off a little way
    beyond). What lies beyond a photo's border is decided by geometry only, never by colour."""
    if inside is None or inside.all():
        return arr
    box = _box(inside)
    if box is None:
        return arr
    (r, c) = box
    h, w = inside.shape
    core = arr[r, c]
    pad = ((r.start, h - r.stop), (c.start, w - c.stop)) + ((0, 0),) * (arr.ndim - 2)
    return np.pad(core, pad, mode="symmetric")


# ------------------------------------------------------------------------------------ trimap
@dataclass
class ColourModel:
    """The colours of a photo's background that its hair does not have, and the hair's own.
    ``background``: (K, 3) float32 CIELAB centres; ``hair``: (M, 3); ``match``: how near
    (CIE76) a colour must be to a background centre to count as that background; ``spread``:
    how far (RGB, 0-255) the hair's own pixels lie from its nearest colour (90th percentile);
    ``bg_spread`` the same for the background's pixels and colours."""

    background: np.ndarray
    hair: np.ndarray
    match: float = 14.0
    spread: float = 12.0
    bg_spread: float = 8.0

    def likeness(self, lab: np.ndarray) -> np.ndarray:
        """(N, 3) CIELAB -> (N,) float32 in [0, 1]: 1 for a colour of the background (much
        nearer a background centre than any hair colour), 0 for a colour of the hair."""
        d_bg = _nearest(lab, self.background)
        d_hair = _nearest(lab, self.hair)
        closeness = np.clip((self.match - d_bg) / (0.5 * self.match), 0.0, 1.0)
        preference = np.clip((d_hair - d_bg) / np.maximum(d_hair + d_bg, 1e-3) * 3.0, 0.0, 1.0)
        return (closeness * preference).astype(np.float32)

    def unmix(self, rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each colour as hair, as background, or as a mix of one hair colour H and one background
        colour B of the model: I = alpha H + (1 - alpha) B + e, the pair that explains it best.
        A mix where that pair explains it much better than any hair colour alone (residual under
        0.6 of it), with a real share of background, H and B far apart; background where it is
        within the background's spread of a background colour and outside the hair's;
        hair (alpha 1) where it is within the hair's own spread (:attr:`spread`). ``rgb`` (N, 3) float32 0-255 -> (alpha (N,), hair colour plus residual (N, 3)
        float32 0-255, confidence (N,) in [0, 1])."""
        hs, bs = _lab_to_rgb(self.hair), _lab_to_rgb(self.background)
        x = rgb.astype(np.float32)
        tau = max(4.0, float(self.spread))
        r_pure = np.full(len(x), np.inf, np.float32)
        for h in hs:
            r_pure = np.minimum(r_pure, np.sqrt(((x - h) ** 2).sum(1)))
        tau_b = max(4.0, float(self.bg_spread))
        r_bg = np.full(len(x), np.inf, np.float32)
        for b in bs:
            r_bg = np.minimum(r_bg, np.sqrt(((x - b) ** 2).sum(1)))
        best = np.full(len(x), np.inf, np.float32)
        t_best = np.zeros(len(x), np.float32)
        pair = np.full(len(x), -1)  # the best pair's index, h * len(bs) + b
        for i, h in enumerate(hs):
            xh = x - h
            for j, b in enumerate(bs):
                d = b - h
                dd = float(d @ d)
                if dd < 1.0:
                    continue
                t = np.clip(xh @ d / dd, 0.0, 1.0)
                e = xh - t[:, None] * d
                r = np.sqrt((e * e).sum(1))
                better = r < best
                np.copyto(best, r, where=better)
                np.copyto(t_best, t, where=better)
                np.copyto(pair, i * len(bs) + j, where=better)
        # the hair colour of each pixel's best pair, plus what that pair leaves unexplained
        found = pair >= 0
        fg = x.copy()
        h, b = hs[pair[found] // len(bs)], bs[pair[found] % len(bs)]
        d = b - h
        fg[found] = h + ((x[found] - h) - t_best[found][:, None] * d)
        seps = np.array([[np.sqrt(float((bb - hh) @ (bb - hh))) for bb in bs] for hh in hs], np.float32)
        sep = np.zeros(len(x), np.float32)
        sep[found] = seps.ravel()[pair[found]]
        # a mix: explained much better by a hair and a background colour than by any hair colour
        # alone, with a real share of background, the two colours far apart
        better = np.clip((0.6 - best / np.maximum(r_pure, 1e-3)) / 0.3, 0.0, 1.0)
        off = np.clip((r_pure - 0.3 * tau) / (0.3 * tau), 0.0, 1.0)
        share = np.clip((t_best * sep - 10.0) / 10.0, 0.0, 1.0)
        mixed = better * off * share * np.clip((sep - 30.0) / 30.0, 0.0, 1.0)
        is_bg = np.clip((1.5 * tau_b - r_bg) / (0.5 * tau_b), 0.0, 1.0) * np.clip((r_pure - tau) / (0.5 * tau), 0.0, 1.0)
        is_hair = np.clip((tau - r_pure) / (0.5 * tau), 0.0, 1.0) * (1.0 - mixed)
        alpha = (1.0 - is_bg) * (1.0 - mixed * t_best)
        conf = np.maximum(np.maximum(is_hair, is_bg), mixed)
        fg = np.where((is_hair >= 1.0)[:, None], x, fg)
        return alpha.astype(np.float32), np.clip(fg, 0, 255).astype(np.float32), conf.astype(np.float32)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(N, 3) CIELAB -> (N, 3) float32 RGB 0-255."""
    return cv2.cvtColor(np.asarray(lab, np.float32).reshape(-1, 1, 3), cv2.COLOR_LAB2RGB).reshape(-1, 3) * 255.0


def _kmeans_lab(lab: np.ndarray, k: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) Lab samples -> (centres (k', 3), share of the samples (k',)) by k-means."""
    k = int(min(k, max(1, len(lab) // 50)))
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, lbl, centres = cv2.kmeans(lab.astype(np.float32), k, None, crit, 2, cv2.KMEANS_PP_CENTERS)
    share = np.bincount(lbl.ravel(), minlength=k) / max(1, len(lbl))
    return centres, share


def _nearest(lab: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, 3), (K, 3) -> (N,) distance to the nearest centre (CIE76)."""
    if len(centres) == 0:
        return np.full(len(lab), np.inf, np.float32)
    lab = lab.astype(np.float32)
    c = np.asarray(centres, np.float32)
    d2 = (lab * lab).sum(1)[:, None] - 2.0 * lab @ c.T + (c * c).sum(1)[None, :]
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def _distance(mask: np.ndarray) -> np.ndarray:
    """(S, S) float32: each pixel's distance (pixels) to the nearest pixel outside ``mask``."""
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)


def colour_model(image: np.ndarray, hair: np.ndarray, background: np.ndarray, scale_px: float,
                 match: float = 14.0, max_share: float = 0.03, seed: int = 0,
                 rim: Optional[float] = None) -> Optional[ColourModel]:
    """The :class:`ColourModel` of a photo's background next to its hair; None when none of its
    colours can be told from the hair's.

    The background within half a face (``scale_px``) of the parser's ``hair`` ((S, S) bool),
    beyond its ``rim`` (pixels; 6% of the face by default: the parser's edge leaves strands in
    its background), is clustered in CIELAB (6 clusters); a cluster counts only where the hair
    itself rarely has its colour (at most ``max_share`` of the hair pixels lie within 1.5
    ``match`` of it): so dark hair on a dark backdrop keeps its strands, blond highlights by a
    pale wall stay opaque, and the sky seen through a few curls still counts. The hair's own
    colours are the clusters of the hair pixels that are not near those background colours.
    ``image`` (S, S, 3) uint8, ``background`` (S, S) bool the parser's background class."""
    if hair.sum() < 100 or background.sum() < 100:
        return None
    rng = np.random.default_rng(seed)
    to_hair = _distance(~hair)
    rim = max(2.0, 0.06 * scale_px) if rim is None else rim
    near = (to_hair <= max(3.0, 0.5 * scale_px)) & (to_hair > rim)
    bg_px = np.flatnonzero((background & near).ravel())
    if bg_px.size < 100:
        return None
    flat = image.reshape(-1, 3)
    bg_lab = _lab(flat[rng.choice(bg_px, min(bg_px.size, 6000), replace=False)])
    bg_c, bg_share = _kmeans_lab(bg_lab, 6, seed)
    bg_c = bg_c[bg_share > 0.02]
    hair_px = np.flatnonzero(hair.ravel())
    hair_lab = _lab(flat[rng.choice(hair_px, min(hair_px.size, 6000), replace=False)])
    keep = [(np.linalg.norm(hair_lab - c, axis=1) < 1.5 * match).mean() <= max_share for c in bg_c]
    bg_c = bg_c[np.array(keep, bool)] if len(bg_c) else bg_c
    if len(bg_c) == 0:
        return None
    own = hair_lab[_nearest(hair_lab, bg_c) > match]
    if len(own) < 50:
        return None
    hair_c, _ = _kmeans_lab(own, 6, seed)
    # the hair's own spread around its colours (RGB): 90% of the hair's pixels lie within it
    own_rgb = _lab_to_rgb(own)
    hs = _lab_to_rgb(hair_c)
    r = np.min(np.sqrt(((own_rgb[:, None, :] - hs[None]) ** 2).sum(-1)), axis=1)
    bg_rgb, bs = _lab_to_rgb(bg_lab), _lab_to_rgb(bg_c)
    d_bg = np.min(np.sqrt(((bg_rgb[:, None, :] - bs[None]) ** 2).sum(-1)), axis=1)
    near_kept = _nearest(bg_lab, bg_c) < match  # the background pixels of the colours kept
    bg_spread = float(min(24.0, np.quantile(d_bg[near_kept], 0.9))) if near_kept.sum() > 20 else 8.0
    return ColourModel(bg_c.astype(np.float32), hair_c.astype(np.float32), match, float(np.quantile(r, 0.9)),
                       bg_spread)


@dataclass
class Trimap:
    """The matting problem in the source's frame: ``fg``/``bg`` (S, S) bool sure hair and sure
    not-hair; the rest is unknown. ``band``: the unknown band's half width in pixels.
    ``model``: the :class:`ColourModel` (None when the background's colours cannot be told
    from the hair's). Near the background, each pixel as a mix of a hair and a background
    colour of the model (:meth:`ColourModel.unmix`): ``mix_alpha`` (S, S) float32 its hair
    share, ``mix_fg`` (S, S, 3) float32 its hair colour, ``mix_conf`` (S, S) float32 in [0, 1]
    how far that explanation is trusted (0 where not computed); ``tinted`` (S, S) bool the
    pixels with any of the background in them."""

    fg: np.ndarray
    bg: np.ndarray
    band: float
    model: Optional[ColourModel] = None
    mix_alpha: Optional[np.ndarray] = None
    mix_fg: Optional[np.ndarray] = None
    mix_conf: Optional[np.ndarray] = None
    tinted: Optional[np.ndarray] = None

    @property
    def unknown(self) -> np.ndarray:
        return ~(self.fg | self.bg)

    def as_array(self) -> np.ndarray:
        """(S, S) float64: 1 sure hair, 0 sure not-hair, 0.5 unknown (pymatting's trimap)."""
        t = np.full(self.fg.shape, 0.5)
        t[self.fg] = 1.0
        t[self.bg] = 0.0
        return t


def make_trimap(image: np.ndarray, hair_prob: np.ndarray, scale_px: float,
                background: Optional[np.ndarray] = None, band: Optional[float] = None) -> Trimap:
    """The trimap around the parser's hair edge, in the photo's own frame.

    ``hair_prob`` (S, S) float32 the parser's hair probability; ``scale_px`` the face's size in
    this frame (forehead-to-chin distance, pixels); ``background`` (S, S) bool the parser's
    background class. ``band``: the unknown band's half width, by default 3% of the face size
    (at least 3 px): the parser's edge is good to a few of its 512-px input pixels, and loose
    strands reach further out on bigger heads.

    When ``background`` is given, the hair within 0.3 face sizes of it is unmixed against the
    background's own colours (:func:`colour_model`, :meth:`ColourModel.unmix`): a pixel that is
    partly background (strands over the sky, the background seen between curls or under a
    curled-in bob) is unknown, and sure background where it is almost all background."""
    hair = hair_prob > 0.5
    band = float(band if band is not None else max(3.0, 0.03 * scale_px))
    fg = _distance(hair) > band
    bg = _distance(~hair) > band
    out = Trimap(fg, bg, band)
    if background is None:
        out.bg &= ~out.fg
        return out
    model = colour_model(image, hair, background, scale_px)
    if model is None:
        out.bg &= ~out.fg
        return out
    zone = (_distance(~background) < max(4.0, 0.3 * scale_px)) & ~bg
    zp = np.flatnonzero(zone.ravel())
    a_mix, f_mix, conf = model.unmix(image.reshape(-1, 3)[zp].astype(np.float32))
    s = hair.shape
    mix_alpha = np.ones(s, np.float32)
    mix_fg = np.zeros(s + (3,), np.float32)
    mix_conf = np.zeros(s, np.float32)
    mix_alpha.ravel()[zp] = a_mix
    mix_fg.reshape(-1, 3)[zp] = f_mix
    mix_conf.ravel()[zp] = conf
    # pixels that have some of the background in them, however little: their colours are
    # cleaned of its tint (see solve_matte), even where the matte keeps them opaque
    tinted = cv2.dilate(((mix_conf > 0.3) & (mix_alpha < 0.95)).astype(np.uint8), disk(1)).astype(bool) & zone
    # one pixel's unmixing is noisy: single pixels are not trusted (median of 3x3), lines and
    # patches of mixed pixels are (the background between strands, a gap in the curls)
    mix_alpha = cv2.medianBlur(np.round(mix_alpha * 255).astype(np.uint8), 3).astype(np.float32) / 255.0
    mix_conf = cv2.medianBlur(np.round(mix_conf * 255).astype(np.uint8), 3).astype(np.float32) / 255.0
    partly = (mix_conf > 0.5) & (mix_alpha < 0.75)
    mostly = cv2.erode(((mix_conf > 0.5) & (mix_alpha < 0.15)).astype(np.uint8), disk(1)).astype(bool)
    fg &= ~cv2.dilate(partly.astype(np.uint8), disk(2)).astype(bool)
    bg |= mostly & hair
    return Trimap(fg, bg & ~fg, band, model, mix_alpha, mix_fg, mix_conf, tinted)


# ------------------------------------------------------------------------------------- alpha
def _guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float):
    """Colour guided filter (He et al.): per-pixel linear coefficients ``a`` (H, W, 3) and ``b``
    (H, W) with src ~ a . guide + b in each (2r+1)² window, averaged over the windows. ``guide``
    (H, W, 3) float32 in [0, 1], ``src`` (H, W) float32."""
    ksize = (2 * radius + 1, 2 * radius + 1)
    mean = lambda x: cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)
    mi = mean(guide)
    mp = mean(src)
    cov_ip = mean(guide * src[..., None]) - mi * mp[..., None]
    var = np.empty(guide.shape[:2] + (3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            v = mean(guide[..., i] * guide[..., j]) - mi[..., i] * mi[..., j]
            var[..., i, j] = var[..., j, i] = v
    var += eps * np.eye(3, dtype=np.float32)
    # the 3x3 systems solved in closed form (adjugate / determinant), all pixels at once
    v = var
    adj = np.empty_like(v)
    adj[..., 0, 0] = v[..., 1, 1] * v[..., 2, 2] - v[..., 1, 2] * v[..., 2, 1]
    adj[..., 0, 1] = v[..., 0, 2] * v[..., 2, 1] - v[..., 0, 1] * v[..., 2, 2]
    adj[..., 0, 2] = v[..., 0, 1] * v[..., 1, 2] - v[..., 0, 2] * v[..., 1, 1]
    adj[..., 1, 1] = v[..., 0, 0] * v[..., 2, 2] - v[..., 0, 2] * v[..., 2, 0]
    adj[..., 1, 2] = v[..., 0, 2] * v[..., 1, 0] - v[..., 0, 0] * v[..., 1, 2]
    adj[..., 2, 2] = v[..., 0, 0] * v[..., 1, 1] - v[..., 0, 1] * v[..., 1, 0]
    adj[..., 1, 0], adj[..., 2, 0], adj[..., 2, 1] = adj[..., 0, 1], adj[..., 0, 2], adj[..., 1, 2]
    det = (v[..., 0, :] * adj[..., :, 0]).sum(-1)
    a = np.einsum("...ij,...j->...i", adj, cov_ip) / det[..., None]
    b = mp - (a * mi).sum(-1)
    return mean(a), mean(b)


@contextmanager
def _numba_threads(n: int = 1):
    """pymatting's numba kernels on ``n`` threads: at the sizes solved here, its parallel loops
    spend far more on synchronising than on work (measured on 2 cores: the foreground estimate
    at 320 px takes 0.02 s on one thread, 0.36 s on two)."""
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, prev)))
    try:
        yield
    finally:
        numba.set_num_threads(prev)


PRIOR_WEIGHT = 0.5  # how strongly a pixel's own colour unmixing pulls the matte (vs its neighbours)


def _closed_form(image: np.ndarray, trimap: np.ndarray, prior: Optional[np.ndarray] = None,
                 weight: Optional[np.ndarray] = None) -> np.ndarray:
    """Closed-form matting (Levin et al. 2008) with a per-pixel data term, as in robust matting
    (Wang and Cohen 2007): minimise a' L a over the unknown pixels, L the matting Laplacian of
    ``image`` ((h, w, 3) float64 in [0, 1]), the known pixels of ``trimap`` ((h, w): 1, 0,
    0.5 unknown) fixed, plus sum weight (a - prior)^2 (``prior``/``weight`` (h, w), may be
    None). pymatting's Laplacian, incomplete-Cholesky preconditioner and conjugate gradients.
    Returns (h, w) float32 in [0, 1]."""
    import scipy.sparse
    from pymatting import cf_laplacian, cg, ichol
    from pymatting.util.util import trimap_split

    h, w = trimap.shape
    is_fg, is_bg, is_known, is_unknown = trimap_split(trimap)
    x = trimap.astype(np.float64).ravel().copy()
    if not is_unknown.any():
        return x.reshape(h, w).astype(np.float32)
    lap = cf_laplacian(image, epsilon=1e-5, is_known=is_known.reshape(h, w))
    rows = lap[is_unknown, :]
    a = rows[:, is_unknown]
    b = -rows[:, is_known].dot(is_fg[is_known].astype(np.float64))
    if prior is not None and weight is not None:
        wu = weight.ravel()[is_unknown].astype(np.float64)
        a = a + scipy.sparse.diags(wu)
        b = b + wu * prior.ravel()[is_unknown]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x[is_unknown] = cg(a, b, M=ichol(a.tocsc()), maxiter=300)
    return np.clip(x, 0.0, 1.0).reshape(h, w).astype(np.float32)


def solve_matte(image: np.ndarray, trimap: Trimap, solve_px: int = 320) -> HairLayer:
    """Alpha and the hair's own colours over the trimap's unknown band, as a :class:`HairLayer`.

    1. Closed-form matting (Levin et al. 2008, ``pymatting.estimate_alpha_cf``) on the band's
       bounding box reduced so its longer side is at most ``solve_px``.
    2. Foreground and background colours at that size (``pymatting.estimate_foreground_ml``,
       Germer et al. 2020): smooth fields of the hair's own colour and of what lies behind it.
    3. Back at full resolution, alpha in the band is the compositing equation solved per pixel,
       I = alpha F + (1 - alpha) B, with those F and B (projection on the line from B to F),
       where F and B differ enough to tell; elsewhere the coarse matte carried up by its own
       local linear colour model (alpha = a . I + b, as the fast guided filter does). So strands
       finer than the solve's pixels keep their edges and their transparency.
    Colours: the photo's own pixels where the hair is sure; in the band the compositing
    equation solved for F with the estimated B where alpha is large enough for it to be stable,
    the estimated F where it is small: no colour of the background travels with the hair.
    ``image`` (S, S, 3) uint8."""
    from pymatting import estimate_foreground_ml

    alpha = trimap.fg.astype(np.float32)
    foreground = image.astype(np.float32)
    unknown = trimap.unknown
    box = _box(unknown, pad=int(2 * trimap.band) + 4)
    if box is None:
        return HairLayer(alpha, foreground)
    r, c = box
    img = image[r, c].astype(np.float32)
    h, w = img.shape[:2]
    k = min(1.0, solve_px / max(h, w))
    sh, sw = max(8, int(round(h * k))), max(8, int(round(w * k)))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA) / 255.0 if k < 1.0 else img / 255.0
    # a pixel of the small trimap is sure hair only where all of it was; sure background where
    # most of it was (so the background seen through a few curls keeps its seeds)
    fg_s = cv2.resize(trimap.fg[r, c].astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.999
    bg_s = cv2.resize(trimap.bg[r, c].astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.5
    tri_s = np.full((sh, sw), 0.5)
    tri_s[bg_s] = 0.0
    tri_s[fg_s] = 1.0
    small64 = np.clip(small.astype(np.float64), 0.0, 1.0)
    prior = weight = None
    if trimap.mix_alpha is not None:
        shrink = (lambda x: cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)) if k < 1.0 else (lambda x: x)
        prior, weight = shrink(trimap.mix_alpha[r, c]), PRIOR_WEIGHT * shrink(trimap.mix_conf[r, c])
    with _numba_threads(1):
        a_s = _closed_form(small64, tri_s, prior, weight)
        f_s, b_s = estimate_foreground_ml(small64, a_s.astype(np.float64), n_big_iterations=2, return_background=True)
    up = (lambda x: cv2.resize(x.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)) if k < 1.0 \
        else (lambda x: x.astype(np.float32))
    f_up = np.clip(up(f_s) * 255.0, 0, 255)
    b_up = np.clip(up(b_s) * 255.0, 0, 255)
    if k < 1.0:
        ca, cb = _guided_coefficients(small.astype(np.float32), a_s, 1, 1e-4)
        a_coarse = np.clip((up(ca) * (img / 255.0)).sum(-1) + up(cb), 0.0, 1.0)
    else:
        a_coarse = a_s
    # the compositing equation per pixel, trusted as far as hair and background colours differ
    d = f_up - b_up
    dd = (d * d).sum(-1)
    a_line = np.clip(((img - b_up) * d).sum(-1) / np.maximum(dd, 1e-3), 0.0, 1.0)
    trust = np.clip((np.sqrt(dd) - 20.0) / 40.0, 0.0, 1.0)
    a_full = trust * a_line + (1.0 - trust) * a_coarse
    a_box = alpha[r, c]
    unk = unknown[r, c]
    a_box[unk] = a_full[unk]
    # colours: the compositing equation solved for F with the estimated background, where the
    # hair covers enough of the pixel for that to be stable; the smooth estimate elsewhere
    solved = np.clip((img - (1.0 - a_box[..., None]) * b_up) / np.maximum(a_box, 0.3)[..., None], 0, 255)
    w = smoothstep((a_box - 0.3) / 0.4)[..., None]
    f_box = np.where(unk[..., None], w * solved + (1.0 - w) * f_up, img)
    tinted = trimap.tinted[r, c] if trimap.tinted is not None else np.zeros_like(unk)
    where = (unk | tinted) & (a_box > 0)
    clean = trimap.fg[r, c] & ~tinted  # the hair's own colours, with nothing of the background in them
    behind = trimap.bg[r, c]  # the colour behind, from the background itself (B estimates fade inside the hair)
    back = _local_mean(img, behind, 4.0 * trimap.band) if behind.any() else b_up
    f_box = _without_background_chroma(f_box, where, _local_mean(img, clean if clean.any() else trimap.fg[r, c],
                                                                 2.0 * trimap.band), back)
    if trimap.model is not None:
        f_box = _no_background_colour(f_box, where, trimap.model, trimap.fg[r, c], 2.0 * trimap.band)
    a_box[a_box < 0.02] = 0.0
    foreground[r, c] = f_box
    return HairLayer(alpha, foreground)


def _local_mean(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``image`` (H, W, C) float32 over the pixels where ``weight`` (H, W)
    bool is set, at a reduced resolution (it is smooth at ``sigma`` anyway); the global mean
    of those pixels where none is near. (H, W, C) float32."""
    h, w = weight.shape
    k = max(1, int(sigma // 3))
    sh, sw = max(1, h // k), max(1, w // k)
    wt = cv2.resize(weight.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    num = cv2.resize(image * weight[..., None], (sw, sh), interpolation=cv2.INTER_AREA)
    wt = cv2.GaussianBlur(wt, (0, 0), max(0.5, sigma / k))
    num = cv2.GaussianBlur(num, (0, 0), max(0.5, sigma / k))
    fallback = image[weight].mean(0) if weight.any() else image.reshape(-1, image.shape[-1]).mean(0)
    avg = np.where(wt[..., None] > 1e-3, num / np.maximum(wt[..., None], 1e-6), fallback).astype(np.float32)
    return cv2.resize(avg, (w, h), interpolation=cv2.INTER_LINEAR)


def _without_background_chroma(fg: np.ndarray, where: np.ndarray, hair: np.ndarray, back: np.ndarray,
                               min_chroma: float = 8.0) -> np.ndarray:
    """``fg`` (H, W, 3) float32 0-255 with, at the pixels of ``where`` ((H, W) bool), the part of
    their chroma (CIELAB a*, b*) that leans from the local hair colour ``hair`` towards the
    colour behind ``back`` (both (H, W, 3) float32) taken away; lightness is left alone (hair
    highlights stay). A green or blue cast of the old background in the hair's edge colours is
    what this removes; where hair and background have about the same chroma (within
    ``min_chroma``) nothing is done."""
    idx = np.flatnonzero(where.ravel())
    if idx.size == 0:
        return fg
    f = _lab(fg.reshape(-1, 3)[idx])
    h = _lab(hair.reshape(-1, 3)[idx])
    b = _lab(back.reshape(-1, 3)[idx])
    d = b[:, 1:] - h[:, 1:]
    dd = (d * d).sum(1)
    ok = dd > min_chroma ** 2
    t = np.clip(((f[:, 1:] - h[:, 1:]) * d).sum(1) / np.maximum(dd, 1e-6), 0.0, 1.0) * ok
    f[:, 1:] -= t[:, None] * d
    rgb = cv2.cvtColor(f.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_LAB2RGB).reshape(-1, 3) * 255.0
    out = fg.reshape(-1, 3).copy()
    out[idx] = np.clip(rgb, 0, 255)
    return out.reshape(fg.shape)


def _no_background_colour(fg: np.ndarray, where: np.ndarray, model: ColourModel, hair: np.ndarray,
                          sigma: float) -> np.ndarray:
    """``fg`` (H, W, 3) float32 0-255 with the pixels of ``where`` ((H, W) bool) whose colour is
    the background's (:meth:`ColourModel.likeness`) drawn to the local colour of the sure
    ``hair`` ((H, W) bool) around them: the last guard that no colour of the source's
    background travels with the hair."""
    idx = np.flatnonzero(where.ravel())
    if idx.size == 0:
        return fg
    like = model.likeness(_lab(fg.reshape(-1, 3)[idx]))
    hit = like > 0.0
    if not hit.any():
        return fg
    local = _local_mean(fg, hair, sigma)
    out = fg.reshape(-1, 3).copy()
    sel = idx[hit]
    out[sel] += like[hit, None] * (local.reshape(-1, 3)[sel] - out[sel])
    return out.reshape(fg.shape)


def despill(layer: HairLayer, image: np.ndarray, background: np.ndarray, scale_px: float,
            min_chroma: float = 15.0, spread: float = 2.0) -> HairLayer:
    """The hair layer with the cast of a strongly coloured background taken out of its colours
    (spill suppression, as in keying): a green lawn or a blue sky seen through curls, or
    reflected on their tips, colours them where the matte keeps them.

    The hair's own colours vary mostly along one direction of chroma (CIELAB a*, b*: grey to
    golden blond, say); the cast comes from the background's side. Only the chroma component
    across the hair's own direction of variation that leans towards the background is limited,
    to what the sure hair (alpha > 0.95) itself shows there (its median and ``spread`` robust
    deviations); lightness and the variation along the hair's own direction stay, so
    highlights, grey streaks and an ombré stay too. Nothing is done where the background near
    the hair (``background`` (S, S) bool, within 0.3 face sizes ``scale_px`` of it) is nearly
    neutral or close to the hair's colour (its chroma or its distance from the hair's under
    ``min_chroma``: a white wall casts no colour), or lies along the hair's own variation.
    ``image`` (S, S, 3) uint8 the photo the layer was pulled from. Returns a new layer."""
    alpha = layer.alpha
    core = alpha > 0.95
    hair = alpha > 0.02
    if core.sum() < 200 or background is None:
        return layer
    near = background & (_distance(~hair) < max(4.0, 0.3 * scale_px))
    if near.sum() < 200:
        return layer
    own = _lab(layer.foreground[core][::3])[:, 1:]
    mid = np.median(own, axis=0)
    behind = np.median(_lab(image[near][::3])[:, 1:], axis=0)
    towards = behind - mid
    if np.linalg.norm(behind) < min_chroma or np.linalg.norm(towards) < min_chroma:
        return layer
    across = np.linalg.eigh(np.cov((own - mid).T))[1][:, 0]  # the direction the hair varies least along
    if towards @ across < 0:
        across = -across
    if towards @ across < 0.5 * np.linalg.norm(towards):  # the background lies along the hair's own colours
        return layer
    t_own = (own - mid) @ across
    centre = np.median(t_own)
    limit = centre + spread * (1.4826 * np.median(np.abs(t_own - centre)) + 0.5)
    lab = _lab(layer.foreground[hair])
    excess = np.clip((lab[:, 1:] - mid) @ across - limit, 0.0, None)
    if not excess.any():
        return layer
    cast = excess > 0
    lab[cast, 1:] -= excess[cast, None] * across
    values = layer.foreground[hair]
    values[cast] = np.clip(_lab_to_rgb(lab[cast]), 0, 255)
    fg = layer.foreground.copy()
    fg[hair] = values
    return HairLayer(alpha, fg)


def pull_hair(image: np.ndarray, hair_prob: np.ndarray, scale_px: float, background: Optional[np.ndarray] = None,
              inside: Optional[np.ndarray] = None, band: Optional[float] = None, solve_px: int = 320) -> HairLayer:
    """Cropping of the source (3.2.3): its hair as a :class:`HairLayer` in its own work frame.

    ``image`` (S, S, 3) uint8 the source's work-frame crop; ``hair_prob`` (S, S) float32 the
    parser's hair probability; ``scale_px`` the face's size in this frame (forehead-to-chin,
    pixels): the unknown band and the reach of the background-colour test follow it;
    ``background`` (S, S) bool the parser's background class (pixels inside the hair with its
    colour become background: the target's background shows through them); ``inside`` (S, S)
    bool the frame pixels inside the photo (beyond, the hair is continued by geometry, never
    by colour: where it is cut off is the pipeline's ``fade``). ``band``/``solve_px``: see
    :func:`make_trimap`, :func:`solve_matte`. With ``background``, the cast of a coloured one is
    taken out of the hair's colours (:func:`despill`)."""
    img = _replicate_outside(image, inside)
    prob = _replicate_outside(hair_prob.astype(np.float32), inside)
    bgm = None if background is None else _replicate_outside(background & (inside if inside is not None else True), inside)
    trimap = make_trimap(img, prob, scale_px, bgm, band)
    layer = solve_matte(img, trimap, solve_px)
    layer = layer if bgm is None else despill(layer, img, bgm, scale_px)
    return only_continued(layer, inside)


def only_continued(layer: HairLayer, inside: Optional[np.ndarray], floor: float = 0.05) -> HairLayer:
    """``layer`` without the mirror images of hair that does not reach the photo's border.

    Beyond the border (``inside`` (S, S) bool False) the photo is mirrored (:func:`_replicate_outside`):
    hair that the border cuts goes on there, joined to itself, but a lock that ends short of
    the border, or the dark background beside it, comes back as a detached copy out in the
    scene (a grey stroke beside the head, a second tuft above it). A part of the matte
    (``alpha`` > ``floor``, 8-connected) beyond the border is kept only where it joins the matte
    inside the photo."""
    if inside is None or inside.all():
        return layer
    some = layer.alpha > floor
    keep = inside | joined(some, some & inside)
    if keep.all():
        return layer
    return HairLayer(np.where(keep, layer.alpha, 0.0).astype(np.float32), layer.foreground)


# ------------------------------------------------------------------------------------ warping
def warp_layer(layer: HairLayer, matrix: np.ndarray, out_hw: Tuple[int, int]) -> HairLayer:
    """The layer moved by ``matrix`` ((3, 3) homography, layer frame -> output frame) into an
    output of ``out_hw`` = (height, width).

    Colours are warped premultiplied by alpha, alpha with them (bicubic, the same weights for
    both), then divided back: each output pixel's colour is the alpha-weighted average of the
    hair colours it samples, so no dark or bright rim appears where the matte falls to zero
    (bicubic overshoot is clipped: alpha to [0, 1], colours to 0-255). Where the warped alpha is
    below 0.01 it is 0 and the colours are the hair's median. Where the layer is shrunk it is
    low-passed first (no aliasing). Only the box the hair lands in is warped."""
    h, w = out_hw
    alpha = np.zeros((h, w), np.float32)
    src_box = _box(layer.alpha > 0, pad=3)
    if src_box is None:
        return HairLayer(alpha, np.zeros((h, w, 3), np.float32))
    # beyond the box the hair lands in, the colours are the hair's median (alpha is 0 there)
    core = layer.alpha > 0.9
    fg = np.empty((h, w, 3), np.float32)
    fg[:] = np.median(layer.foreground[core][::7], axis=0) if core.any() else 128.0
    (r, c) = src_box
    corners = np.array([[c.start, r.start], [c.stop, r.start], [c.start, r.stop], [c.stop, r.stop]], np.float64)
    m = np.asarray(matrix, np.float64)
    dst = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), m).reshape(-1, 2)
    if not np.all(np.isfinite(dst)):
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        x0, y0 = np.clip(np.floor(dst.min(0)).astype(int) - 2, 0, [w, h])
        x1, y1 = np.clip(np.ceil(dst.max(0)).astype(int) + 3, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return HairLayer(alpha, fg)
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ m
    bw, bh = int(x1 - x0), int(y1 - y0)
    a = layer.alpha.astype(np.float32)
    pre = np.concatenate([layer.foreground * a[..., None], a[..., None]], axis=2)
    # shrinking: low-pass first (what area averaging does), or strands alias into jaggies
    scale = warp_scale(m, ((c.start + c.stop) / 2.0, (r.start + r.stop) / 2.0))
    if scale < 0.95:
        pre = cv2.GaussianBlur(pre, (0, 0), 0.5 * np.sqrt(1.0 / scale ** 2 - 1.0))
    warped = cv2.warpPerspective(pre, shift, (bw, bh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    wa = np.clip(warped[..., 3], 0.0, 1.0)
    unpre = np.clip(warped[..., :3] / np.maximum(wa, 1e-6)[..., None], 0.0, 255.0)
    wa[wa < 0.01] = 0.0
    alpha[y0:y1, x0:x1] = wa
    fg[y0:y1, x0:x1] = np.where((wa > 0)[..., None], unpre, fg[y0:y1, x0:x1])
    return HairLayer(alpha, fg)


def warp_scale(matrix: np.ndarray, at_xy) -> float:
    """sqrt|det J| of the homography ``matrix`` (3, 3) at the point ``at_xy`` (x, y): how many
    output pixels one input pixel becomes there (linear)."""
    x, y = float(at_xy[0]), float(at_xy[1])
    m = np.asarray(matrix, np.float64)
    wv = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    return float(np.sqrt(abs(np.linalg.det(m)) / abs(wv) ** 3))


# ------------------------------------------------------------------------ grain and sharpness
def edge_blur(gray: np.ndarray, mask: np.ndarray, reblur: float = 1.5, min_contrast: float = 4.0) -> float:
    """The photo's blur at its edges, as the sigma (pixels) of a Gaussian lens blur; NaN when
    ``mask`` holds no usable edge. Contrast-independent (a ratio of two gradients of one edge).

    Re-blur estimator (Hu & de Haan 2006): at a step edge of any contrast blurred by sigma,
    the gradient maximum falls by R = sqrt(sigma^2 + s^2) / sigma when the photo is blurred
    again by s = ``reblur``, so sigma = s / sqrt(R^2 - 1). Measured at the pixels of ``mask``
    ((H, W) bool) where the gradient is a local maximum across the edge and stronger than
    ``min_contrast`` grey levels per pixel and than the noise; the median over them.
    ``gray`` (H, W) float32 0-255."""
    box = _box(mask, pad=int(3 * reblur) + 3)
    if box is None:
        return float("nan")
    g = gray[box].astype(np.float32)
    m = mask[box]

    def grad(x):
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        return np.hypot(gx, gy), gx, gy

    g0 = cv2.GaussianBlur(g, (0, 0), 0.5)  # the pixel grid's own aliasing, the same for every photo
    m0, gx, gy = grad(g0)
    m1, _, _ = grad(cv2.GaussianBlur(g0, (0, 0), reblur))
    # local maximum across the edge: compare with the two neighbours along the gradient
    ang = np.arctan2(gy, gx)
    dx = np.rint(np.cos(ang)).astype(np.int32)
    dy = np.rint(np.sin(ang)).astype(np.int32)
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w]
    y1, x1 = np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)
    y2, x2 = np.clip(yy - dy, 0, h - 1), np.clip(xx - dx, 0, w - 1)
    peak = (m0 >= m0[y1, x1]) & (m0 >= m0[y2, x2])
    sel = m & peak & (m0 > min_contrast)
    if sel.sum() < 30:
        return float("nan")
    # the strongest edges only (the top third): weak gradients are texture and noise
    thr = np.quantile(m0[sel], 0.66)
    sel &= m0 >= thr
    r = m0[sel] / np.maximum(m1[sel], 1e-6)
    r = r[r > 1.0 + 1e-3]
    if r.size < 10:
        return float("nan")
    sig = reblur / np.sqrt(r * r - 1.0)
    return float(np.median(sig))


def _fine(gray: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The two finest octaves of ``gray`` (H, W) float32: (gray - blur 1, blur 1 - blur 2)."""
    g1 = cv2.GaussianBlur(gray, (0, 0), 1.0)
    return gray - g1, g1 - cv2.GaussianBlur(g1, (0, 0), np.sqrt(3.0))


def grain_level(gray: np.ndarray, mask: np.ndarray, block: int = 8, quantile: float = 0.1) -> Tuple[float, float]:
    """The photo's grain: (level, size). NaN, NaN when ``mask`` holds too few whole blocks.

    ``level``: the standard deviation (grey levels, 0-255) of the luma's finest octave (the
    photo minus its Gaussian blur of sigma 1) in the flatter ``block``² blocks lying inside
    ``mask`` ((H, W) bool): the ``quantile`` of the blocks, so the flattest parts count (noise,
    film or sensor grain, JPEG texture), not edges or strands. ``size``: the next octave's
    standard deviation over the finest one's in those blocks (about 0.3 for pixel-fine white
    noise, more for coarser grain). ``gray`` (H, W) float32 0-255."""
    box = _box(mask, pad=4)
    if box is None:
        return float("nan"), float("nan")
    g = gray[box].astype(np.float32)
    m = mask[box]
    fine, mid = _fine(g)
    h, w = g.shape
    hb, wb = h // block, w // block
    if hb == 0 or wb == 0:
        return float("nan"), float("nan")

    def blocks(x):
        return x[: hb * block, : wb * block].reshape(hb, block, wb, block).transpose(0, 2, 1, 3).reshape(hb, wb, -1)

    full = blocks(m).all(-1)
    if full.sum() < 8:
        return float("nan"), float("nan")
    f_std = blocks(fine)[full].std(-1)
    m_std = blocks(mid)[full].std(-1)
    q = f_std <= np.quantile(f_std, quantile)
    level = float(np.quantile(f_std, quantile))
    size = float(np.median(m_std[q] / np.maximum(f_std[q], 1e-6)))
    return level, size


_GRAIN_TABLE = None


def _grain_table():
    """(blur sigmas, their noise's (:func:`grain_level` per unit std, size)) for white Gaussian
    noise blurred by each sigma: how to make grain of a given level and size (measured once)."""
    global _GRAIN_TABLE
    if _GRAIN_TABLE is None:
        rng = np.random.default_rng(1)
        sigmas = np.array([0.0, 0.4, 0.55, 0.7, 0.85, 1.0, 1.25, 1.5], np.float32)
        white = rng.standard_normal((256, 256)).astype(np.float32)
        everywhere = np.ones(white.shape, bool)
        rows = []
        for sg in sigmas:
            n = cv2.GaussianBlur(white, (0, 0), float(sg)) if sg > 0 else white
            rows.append(grain_level(n / n.std(), everywhere))  # the estimator's own reading of unit noise
        _GRAIN_TABLE = (sigmas, np.array(rows, np.float32))
    return _GRAIN_TABLE


def make_grain(shape: Tuple[int, int], level: float, size: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 zero-mean grain whose :func:`grain_level` is ``level`` and ``size``
    (white Gaussian noise blurred to the size, then scaled)."""
    sigmas, table = _grain_table()
    size = float(np.clip(size if np.isfinite(size) else table[0, 1], table[0, 1], table[-1, 1]))
    sg = float(np.interp(size, table[:, 1], sigmas))
    per_unit = float(np.interp(size, table[:, 1], table[:, 0]))
    n = rng.standard_normal(shape, dtype=np.float32)
    if sg > 0:
        n = cv2.GaussianBlur(n, (0, 0), sg)
        n /= max(float(n.std()), 1e-6)
    return n * (level / max(per_unit, 1e-6))


@dataclass(frozen=True)
class Grain:
    """A photo's grain and sharpness near the head, independent of the scene's contrast.
    ``noise``: its grain level, grey levels 0-255 (:func:`grain_level`); ``size``: the grain's
    size (:func:`grain_level`); ``blur``: the sigma in pixels of the Gaussian blur its face's
    edges show (:func:`edge_blur`; about 0.5 for a photo sharp to the pixel, more when soft or
    out of focus). NaN where they could not be measured."""

    noise: float
    blur: float
    size: float = float("nan")


def measure_grain(image: np.ndarray, mask: np.ndarray, flat: Optional[np.ndarray] = None,
                  window: Optional[int] = None) -> Grain:
    """The :class:`Grain` of a photo: sharpness (edge blur) from the pixels of ``mask`` ((H, W)
    bool: its face), grain from the flatter blocks of ``flat`` ((H, W) bool: its own skin,
    background and clothes near the head; ``mask`` when not given). ``image`` (H, W, 3) uint8.
    ``window``: measured in the ``window``² pixels around the mask's median point only (grain and
    blur are local statistics: a huge photo's face measures the same there, at a fraction of
    the memory); ``flat`` is not windowed, so give none with it."""
    ys, xs = np.nonzero(mask) if window else ((), ())
    if window and len(ys) and max(mask.shape) > window and flat is None:
        half = window // 2
        y0 = int(np.clip(int(np.median(ys)) - half, 0, max(0, mask.shape[0] - window)))
        x0 = int(np.clip(int(np.median(xs)) - half, 0, max(0, mask.shape[1] - window)))
        image, mask = image[y0:y0 + window, x0:x0 + window], mask[y0:y0 + window, x0:x0 + window]
    gray = _luma(image)
    face = cv2.erode(mask.astype(np.uint8), disk(2)).astype(bool)
    level, size = grain_level(gray, mask if flat is None else flat)
    return Grain(level, edge_blur(gray, face), size)


def _unsharp(x: np.ndarray, sigma: float, amount: float, envelope: float) -> np.ndarray:
    """``x`` (H, W[, C]) float32 plus ``amount`` times its detail above a Gaussian of
    ``sigma``, kept within the 3x3 neighbourhood's range widened by ``envelope`` (so no halo
    brighter or darker than the pixels around appears)."""
    detail = x - cv2.GaussianBlur(x, (0, 0), sigma)
    out = x + amount * detail
    k = np.ones((3, 3), np.uint8)
    lo = cv2.erode(x, k) - envelope
    hi = cv2.dilate(x, k) + envelope
    return np.clip(out, lo, hi)


MAX_SHARPEN = 2.5  # the most detail amplification (unsharp amount) allowed: beyond, halos, not hair
SHARPEN_ENVELOPE = 6.0  # grey levels an unsharp mask may overshoot the 3x3 neighbourhood's range


def grain_filter(target: Grain, source: Grain, upscale: float) -> Tuple[str, float, float]:
    """What :func:`match_grain` does to the sharpness: ('sharpen', radius, amount),
    ('soften', sigma, 0) or ('none', 0, 0).

    The source's face blur, scaled by ``upscale`` (source frame pixels -> target frame pixels),
    is what the warped hair shows in the target's frame; the target's face blur is what it
    should show. A Gaussian blur of sigma_d is undone to first order by an unsharp mask of
    radius r and amount sigma_d^2 / r^2 (both act through the image's Laplacian); r is kept
    to 0.8-1.2 px (the finest detail is what enlarging lost), the amount capped at
    :data:`MAX_SHARPEN`, less past a 2x enlargement (sharpening more brings out the
    interpolation, not hair)."""
    if not (np.isfinite(target.blur) and np.isfinite(source.blur)):
        return ("none", 0.0, 0.0)
    have = upscale * source.blur
    want = target.blur
    d2 = have * have - want * want
    if d2 > 0.05:
        r = float(np.clip(np.sqrt(d2), 0.8, 1.2))
        # past twice the size there is no finer detail left to bring out, only interpolation
        cap = MAX_SHARPEN * min(1.0, 2.0 / max(upscale, 1e-6))
        return ("sharpen", r, float(min(cap, d2 / (r * r))))
    if d2 < -0.05:
        return ("soften", float(np.sqrt(-d2)), 0.0)
    return ("none", 0.0, 0.0)


def add_grain(fg: np.ndarray, where: np.ndarray, target: Grain, rng: np.random.Generator,
              weight: Optional[np.ndarray] = None) -> np.ndarray:
    """``fg`` (H, W, 3) float32 0-255 with grain added so the grain of its pixels in ``where``
    ((H, W) bool, the hair's opaque part) reaches the target's level and size; only what is
    missing is added (a grainier hair is left as it is). The grain is the same on the three
    channels (luma): zero-mean, it leaves the hair's colour where it was. ``weight`` (H, W)
    float32 scales it per pixel (e.g. the matte). Returns a new array."""
    if not (np.isfinite(target.noise) and target.noise > 0) or where.sum() < 256:
        return fg
    have, _ = grain_level(_luma(fg), where)
    have = have if np.isfinite(have) else 0.0
    missing = float(np.sqrt(max(0.0, target.noise ** 2 - have ** 2)))
    if missing < 0.05:
        return fg
    n = make_grain(fg.shape[:2], missing, target.size, rng)
    if weight is not None:
        n = n * weight
    return np.clip(fg + n[..., None], 0, 255)


def match_grain(layer: HairLayer, target: Grain, source: Grain, upscale: float,
                rng: Optional[np.random.Generator] = None) -> HairLayer:
    """The warped hair layer with the target photo's sharpness and grain at the target's scale.

    ``layer``: in the target's frame; ``target``/``source``: the two photos' :class:`Grain`
    (each in its own frame's pixels); ``upscale``: how many target-frame pixels one source-frame
    pixel became (see :func:`warp_scale`). Where the source is softer at this scale (it was
    upscaled, or shot softer) the hair's luma detail is sharpened (unsharp mask, halo-clamped,
    at most :data:`MAX_SHARPEN`: edges regain their acutance, no strand is invented); where the
    target is softer (an out-of-focus face) colours and matte are blurred to match. Then grain
    of the target's level and size is added where the hair's own falls short (luma only: the
    hair's colour stays). ``rng``: the grain's random generator (seed 0 by default: repeatable)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    kind, r, amount = grain_filter(target, source, upscale)
    alpha = layer.alpha.astype(np.float32)
    fg = layer.foreground.astype(np.float32)
    box = _box(alpha > 0, pad=8)
    if box is None:
        return layer
    a, f = alpha[box].copy(), fg[box].copy()
    if kind == "sharpen":
        y = _luma(f)
        y2 = _unsharp(y, r, amount, envelope=SHARPEN_ENVELOPE)
        f = f + (y2 - y)[..., None]  # the matte stays as warped: a sharpened matte cuts the hair out
    elif kind == "soften":
        pre = cv2.GaussianBlur(f * a[..., None], (0, 0), r)
        a_b = cv2.GaussianBlur(a, (0, 0), r)
        f_b = cv2.GaussianBlur(f, (0, 0), r)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(a_b[..., None] > 0.02, pre / np.maximum(a_b[..., None], 1e-6), f_b)
        a = a_b
    f = add_grain(f, a > 0.95, target, rng)
    out_a, out_f = alpha.copy(), fg.copy()
    out_a[box] = a
    out_f[box] = np.clip(f, 0, 255)
    out_a[out_a < 0.01] = 0.0
    return HairLayer(out_a.astype(np.float32), out_f.astype(np.float32))


def photo_finish(image: np.ndarray, frame, alpha: np.ndarray, target: Grain, upscale: float = 1.0,
                 rng: Optional[np.random.Generator] = None, in_place: bool = False) -> np.ndarray:
    """The delivered photo ((H, W, 3) uint8) with the new hair's sharpness and grain made good at
    the photo's own resolution, where the work frame (``frame``, a
    :class:`~hairtryon.framing.Frame`) was smaller than the photo: the hair was upsampled on its
    way back, softening its edges and its grain. The luma of the hair is sharpened for that
    upsampling (unsharp mask of radius 0.6 times the factor, amount 1, less past a 2x
    enlargement of the source's hair, ``upscale``: as in :func:`grain_filter`; halo-clamped),
    then its grain is topped up to the photo's own (:func:`add_grain`). ``alpha`` (S, S) float32
    the new hair's matte in the frame; ``target`` the photo's :class:`Grain` at its own resolution.
    Returns a new array (the input when nothing is to be done), or ``image`` itself changed
    when ``in_place`` (no second photo-sized array)."""
    rows, cols, brows, bcols = frame.roi()
    k = frame.side / frame.size
    if (rows.stop - rows.start) * (cols.stop - cols.start) > FINISH_IN_STRIPS:
        return _photo_finish_strips(image, frame, alpha, target, upscale, rng, in_place)
    a = frame.to_image_box(alpha.astype(np.float32))[brows, bcols]
    if not (a > 0).any():
        return image
    box = _box(a > 0, pad=4)
    region = image[rows, cols][box].astype(np.float32)
    ab = np.clip(a[box], 0.0, 1.0)
    out = region
    if k > 1.05:
        y = _luma(region)
        y2 = _unsharp(y, 0.6 * k, min(1.0, 2.0 / max(upscale, 1e-6)), envelope=SHARPEN_ENVELOPE)
        out = np.clip(region + ((y2 - y) * ab)[..., None], 0, 255)
    out = add_grain(out, ab > 0.95, target, rng if rng is not None else np.random.default_rng(1), weight=ab)
    if out is region:
        return image
    del region, ab
    result = image if in_place else image.copy()
    view = result[rows, cols]
    view[box] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return result


FINISH_IN_STRIPS = 4096 * 4096  # photo pixels past which photo_finish works in strips
FINISH_STRIP_ROWS = 1024
FINISH_WINDOW = 1536  # the side of the window the hair's own grain is measured in, in strips


def _photo_finish_strips(image: np.ndarray, frame, alpha: np.ndarray, target: Grain, upscale: float,
                         rng: Optional[np.random.Generator], in_place: bool) -> np.ndarray:
    """:func:`photo_finish` for a very large photo, a band of rows at a time (a 12000² photo's
    hair box as float32 would be gigabytes): the matte at full resolution as uint8, the unsharp
    mask per band with a halo of rows around it (each band written once the next one has read
    its halo), the hair's own grain measured in the :data:`FINISH_WINDOW`² window holding the
    most opaque hair, and the missing grain added band by band."""
    rng = rng if rng is not None else np.random.default_rng(1)
    rows, cols, brows, bcols = frame.roi()
    a8 = frame.to_image_box(np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8))[brows, bcols]
    box = _box(a8 > 0, pad=4)
    if box is None:
        return image
    result = image if in_place else image.copy()
    view = result[rows, cols]
    r0, r1, cs = box[0].start, box[0].stop, box[1]
    k = frame.side / frame.size
    sharpen = k > 1.05
    sigma, amount = 0.6 * k, min(1.0, 2.0 / max(upscale, 1e-6))
    halo = int(np.ceil(4.0 * sigma)) + 2 if sharpen else 0

    def finished(y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 of the box sharpened (float32, box columns), from the rows around them."""
        ya, yb = max(0, y0 - halo), min(view.shape[0], y1 + halo)
        reg = view[ya:yb, cs].astype(np.float32)
        if sharpen:
            ab = a8[ya:yb, cs].astype(np.float32) / 255.0
            yl = _luma(reg)
            y2 = _unsharp(yl, sigma, amount, envelope=SHARPEN_ENVELOPE)
            reg = np.clip(reg + ((y2 - yl) * ab)[..., None], 0, 255)
        return reg[y0 - ya:y0 - ya + (y1 - y0)]

    # the hair's own grain once sharpened, where the most opaque hair is
    missing = 0.0
    if np.isfinite(target.noise) and target.noise > 0:
        opaque = (a8[r0:r1, cs] > 242).astype(np.float32)
        f = 16
        small = cv2.resize(opaque, (max(1, opaque.shape[1] // f), max(1, opaque.shape[0] // f)),
                           interpolation=cv2.INTER_AREA)
        w = max(1, FINISH_WINDOW // f)
        counts = cv2.boxFilter(small, -1, (w, w), normalize=False, borderType=cv2.BORDER_CONSTANT)
        cy, cx = np.unravel_index(int(np.argmax(counts)), counts.shape)
        wy0 = int(np.clip(cy * f - FINISH_WINDOW // 2, 0, max(0, opaque.shape[0] - FINISH_WINDOW)))
        wx0 = int(np.clip(cx * f - FINISH_WINDOW // 2, 0, max(0, opaque.shape[1] - FINISH_WINDOW)))
        wy1, wx1 = min(opaque.shape[0], wy0 + FINISH_WINDOW), min(opaque.shape[1], wx0 + FINISH_WINDOW)
        win = finished(r0 + wy0, r0 + wy1)[:, wx0:wx1]
        where = opaque[wy0:wy1, wx0:wx1] > 0
        if where.sum() >= 256:
            have, _ = grain_level(_luma(win), where)
            have = have if np.isfinite(have) else 0.0
            missing = float(np.sqrt(max(0.0, target.noise ** 2 - have ** 2)))
        del win, opaque, small, counts
    pending = None
    for y0 in range(r0, r1, FINISH_STRIP_ROWS):
        y1 = min(r1, y0 + FINISH_STRIP_ROWS)
        band = finished(y0, y1)
        if missing >= 0.05:
            band = np.clip(band + (make_grain(band.shape[:2], missing, target.size, rng)
                                   * (a8[y0:y1, cs].astype(np.float32) / 255.0))[..., None], 0, 255)
        if pending is not None:  # written now that this band has read its halo
            view[pending[0]:pending[1], cs] = pending[2]
        pending = (y0, y1, np.clip(np.round(band), 0, 255).astype(np.uint8))
    if pending is not None:
        view[pending[0]:pending[1], cs] = pending[2]
    return result


HAIR_UPSCALE_NOTE = 1.5  # above: the factor goes into the result's metadata
HAIR_UPSCALE_WARN = 3.0  # above: the person is told the hair will look soft


def face_size(points: np.ndarray) -> float:
    """The face's size in pixels from the method's 4 points ((4, 2) forehead, left eye, right
    eye, chin): the forehead-to-chin distance."""
    p = np.asarray(points, np.float64)
    return float(np.linalg.norm(p[0] - p[3]))


def upscale_warning(upscale: float) -> Optional[str]:
    """The one line for the person when the source's hair is enlarged more than
    :data:`HAIR_UPSCALE_WARN` times to fit the target (None otherwise)."""
    if not upscale > HAIR_UPSCALE_WARN:
        return None
    return (f"the hairstyle photo is too small for this photo: its hair is enlarged {upscale:.1f} times "
            "and will look soft (use a larger or closer photo of the hairstyle).")
