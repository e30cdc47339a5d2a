"""The try-on pipeline: the method's stages composed, on photos of any size.

``HairTryOn`` holds the models and does the expensive per-photo work once
(:meth:`HairTryOn.analyze`: landmarks, work frame, semantic map), so that trying many
hairstyles on one target only pays for what changes. :func:`tryon` is the one-call version.

Everything runs in the target's *work frame* (a square face-centred crop with room for long
hair, see :mod:`hairtryon.framing`); the result is pasted back into the target photo at its own
resolution, so pixels far from the hair are the target's own, unchanged.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Optional

import cv2
import numpy as np
from tqdm.auto import tqdm

from . import alignment, compositing, inpainting
from .errors import HairTryOnError
from .framing import Frame
from .images import ImageLike, load_image
from .landmarks import Landmarker, Landmarks, default_landmarker
from .segmentation import FACE, HAIR, PALETTE, SemanticMap, Segmenter, get_segmenter, labels_from_probs, segment_frame

WORK_FRAME_SCALE = 1.3  # work frame = FFHQ-like head framing widened 1.3x: room for long hair
MAX_WORK_SIZE = 1536  # frames larger than this are worked at this size and upsampled on paste-back
REFINE_MODES = ("classic", "none")


@dataclass
class FaceAnalysis:
    """What is computed once per photo.

    ``image``: (H, W, 3) uint8 the whole photo. ``landmarks``: in photo coordinates.
    ``frame``: the work frame. ``crop``: (S, S, 3) uint8 the frame's pixels.
    ``semantic``: :class:`SemanticMap` of the crop, (S, S) labels and (5, S, S) probabilities.
    """

    image: np.ndarray
    landmarks: Landmarks
    frame: Frame
    crop: np.ndarray
    semantic: SemanticMap

    @property
    def points(self) -> np.ndarray:
        """(4, 2) the method's 4 points in frame coordinates."""
        return self.frame.to_frame_points(self.landmarks.points)

    @property
    def inside(self) -> np.ndarray:
        """(S, S) bool: frame pixels that lie inside the photo (the rest is padding)."""
        ones = np.ones(self.image.shape[:2], np.uint8)
        return self.frame.extract(ones, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0).astype(bool)

    def face_region(self) -> np.ndarray:
        """(S, S) bool: the face silhouette from the landmarks, raised a little at the top (the
        mesh stops below the hairline), united with the parsed face."""
        s = self.frame.size
        oval = self.frame.to_frame_points(self.landmarks.face_oval())
        eye_y = self.points[1:3, 1].mean()
        chin_y = self.points[3, 1]
        lift = 0.12 * (chin_y - eye_y)
        oval[:, 1] -= np.clip((eye_y - oval[:, 1]) / max(eye_y - oval[:, 1].min(), 1e-6), 0, 1) * lift
        mask = np.zeros((s, s), np.uint8)
        cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 1)
        return mask.astype(bool) | (self.semantic.labels == FACE)

    def forehead_column(self) -> np.ndarray:
        """(S, S) bool: the band above the eyes as wide as the face's upper half (slightly
        narrowed), where a new hairstyle's higher hairline uncovers forehead skin."""
        s = self.frame.size
        oval = self.frame.to_frame_points(self.landmarks.face_oval())
        eye_y = self.points[1:3, 1].mean()
        upper = oval[oval[:, 1] <= eye_y]
        x0, x1 = upper[:, 0].min(), upper[:, 0].max()
        shrink = 0.1 * (x1 - x0)
        mask = np.zeros((s, s), bool)
        mask[: max(0, int(eye_y)), max(0, int(x0 + shrink)): max(0, int(x1 - shrink))] = True
        return mask


@dataclass
class TryOnResult:
    """The try-on of one source hairstyle on one target.

    ``image``: (H, W, 3) uint8, the target photo with the new hair, at the target's resolution.
    ``stages``: named (S, S, 3) uint8 pictures of every step in the work frame, in order.
    ``masks``: work-frame arrays: ``hair_alpha`` (S, S) float32 the new hair's matte,
    ``source_hair`` (S, S) float32 the warped source hair's own matte (before it is grown into
    gaps beside the face), ``mapping_mask`` (S, S) uint8 labels, ``removed``/``artifacts`` (S, S) bool, ``paste_alpha`` (S, S) float32.
    ``timings``: seconds per stage (and ``total``). ``meta``: alignment kind, fallbacks, frame.
    """

    image: np.ndarray
    stages: Dict[str, np.ndarray] = field(default_factory=dict)
    masks: Dict[str, np.ndarray] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    target: Optional[FaceAnalysis] = None
    source: Optional[FaceAnalysis] = None


class _Clock:
    def __init__(self, bar):
        self.timings: Dict[str, float] = {}
        self.bar = bar

    @contextmanager
    def __call__(self, name: str):
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        t = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t
        if self.bar is not None:
            self.bar.update(1)


def _feather(mask: np.ndarray, px: float) -> np.ndarray:
    """(S, S) bool -> float32: 1 inside, a soft ramp of about ``px`` pixels outside."""
    m = mask.astype(np.float32)
    if px <= 0:
        return m
    return np.maximum(m, np.clip(cv2.GaussianBlur(m, (0, 0), px) * 2.0, 0, 1))


def _mask_rgb(mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    out = np.zeros(mask.shape + (3,), np.uint8)
    out[mask] = colour
    return out


class HairTryOn:
    """The try-on tool: models loaded once, photos analysed once, hairstyles tried many times.

    >>> tool = HairTryOn()
    >>> result = tool(target_image, source_image)       # TryOnResult
    >>> result.image                                    # (H, W, 3) uint8

    ``segmenter``: 'bisenet' (default), 'unet:PATH', or a :class:`Segmenter`.
    ``work_size``: largest side the work frame is processed at (default 1536).
    """

    def __init__(self, segmenter="bisenet", landmarker: Optional[Landmarker] = None,
                 work_size: int = MAX_WORK_SIZE, cache_size: int = 8):
        self.segmenter: Segmenter = get_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
        self.landmarker = landmarker or default_landmarker()
        self.work_size = int(work_size)
        self._cache: "OrderedDict[tuple, FaceAnalysis]" = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ per-photo analysis
    def analyze(self, image: ImageLike, face_index: int = 0) -> FaceAnalysis:
        """Landmarks, work frame and semantic map of a photo (cached: a photo seen before costs
        nothing)."""
        image = load_image(image)
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest(), image.shape, face_index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        lm = self.landmarker(image, face_index)
        frame = lm.head_frame(self.work_size, WORK_FRAME_SCALE)
        frame = frame.with_size(min(frame.side, self.work_size))
        crop = frame.extract(image)
        probs = segment_frame(image, frame, self.segmenter)
        analysis = FaceAnalysis(image, lm, frame, crop, SemanticMap(labels_from_probs(probs), probs,
                                                                    {"segmenter": self.segmenter.name}))
        with self._lock:
            self._cache[key] = analysis
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return analysis

    def parse_crop(self, crop: np.ndarray) -> SemanticMap:
        """Semantic map of a work-frame crop ((S, S, 3) uint8), already face-centred."""
        s = crop.shape[0]
        probs = segment_frame(crop, Frame(0, 0, s, s, crop.shape[:2]), self.segmenter)
        return SemanticMap(labels_from_probs(probs), probs)

    # ------------------------------------------------------------------------- the method
    def __call__(self, target: ImageLike, source: ImageLike, refine: str = "classic",
                 target_face: int = 0, source_face: int = 0, progress: bool = False) -> TryOnResult:
        """Put the hairstyle of ``source`` on the person in ``target`` (paths, PIL images or
        (H, W, 3) uint8 arrays). ``refine``: 'classic' (fast-marching fill of the artifacts) or
        'none' (stop before it)."""
        if refine not in REFINE_MODES:
            raise HairTryOnError(f"unknown refine mode '{refine}': use one of {', '.join(REFINE_MODES)}.")
        t_start = time.perf_counter()
        n_steps = 7 if refine == "classic" else 5
        bar = tqdm(total=n_steps, desc="hairtryon", delay=1.0, leave=False, disable=not progress)
        clock = _Clock(bar)
        try:
            with clock("analysis"):
                tgt = self.analyze(target, target_face)
                src = self.analyze(source, source_face)
            result = self._swap(tgt, src, refine, clock)
        finally:
            bar.close()
        result.timings = dict(clock.timings, total=time.perf_counter() - t_start)
        return result

    def _swap(self, tgt: FaceAnalysis, src: FaceAnalysis, refine: str, clock: _Clock) -> TryOnResult:
        s = tgt.frame.size
        stages: Dict[str, np.ndarray] = {}
        meta: dict = {"frame": tgt.frame, "segmenter": self.segmenter.name, "refine": refine}

        with clock("alignment"):  # 3.2.2: source points onto target points, into the target frame
            region = (tgt.frame.x0, tgt.frame.y0, tgt.frame.x0 + tgt.frame.side, tgt.frame.y0 + tgt.frame.side)
            align = alignment.estimate_alignment(src.landmarks.points, tgt.landmarks.points, region)
            m = tgt.frame.matrix() @ align.matrix @ np.linalg.inv(src.frame.matrix())
            warped = alignment.warp_image(src.crop, m, (s, s))
            src_labels = np.where(src.inside, src.semantic.labels, 0).astype(np.uint8)
            warped_labels = alignment.warp_labels(src_labels, m, (s, s))
            # hair that the source photo cuts off fades out instead of ending in a straight line
            edge = cv2.distanceTransform(np.pad(src.inside, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
            fade = np.clip(edge / max(2.0, 0.05 * src.frame.size), 0, 1).astype(np.float32)
            warped_fade = alignment.warp_mask(fade, m, (s, s))
            warped_hair = warped_labels == HAIR
            warped_face = warped_labels == FACE
            meta["alignment"] = align.kind
            if align.reason:
                meta["alignment_fallback"] = align.reason

        with clock("cropping"):  # 3.2.3
            layer = compositing.crop_source_hair(warped, warped_hair)
            layer.alpha *= warped_fade
            removed = compositing.remove_hair(tgt.crop, tgt.semantic.labels, tgt.semantic.prob(HAIR),
                                              closing_px=max(2, s // 100), margin_px=max(2, s // 120),
                                              face_margin_px=max(1, s // 300))
            source_hair = layer.alpha.copy()
            # skin under the new hairstyle: the target's face, and the source's forehead up to its
            # hairline (above the target's eyes), where the old hair covered it
            face = tgt.face_region() | (warped_face & tgt.forehead_column())
            # thin slivers between the face and the new hair are skin, not background
            face = cv2.dilate(face.astype(np.uint8), compositing._disk(s / 100)).astype(bool)
            gaps = compositing.side_gaps(layer.mask, face, removed, width=s // 8,
                                         below=tgt.frame.to_frame_points(tgt.landmarks.mouth[None])[0, 1])
            layer = compositing.extend_hair(layer, gaps)
            intended = compositing.mapping_mask(tgt.semantic.labels, removed, layer.mask, face)
            inside = tgt.inside

        with clock("replacing"):  # 3.2.4, with the old hair's place rebuilt from the target itself
            base = inpainting.fill(tgt.crop, removed, intended, known=~removed & inside, method="smooth")
            # a forehead uncovered by the new hairline takes the source's own forehead skin, its
            # colours matched to the target's skin around it (Poisson blending)
            # above both faces' eyebrows only: the source's brows or glasses must not come along;
            # below that line the donor is the forehead above it, mirrored
            brows = np.vstack([tgt.frame.to_frame_points(tgt.landmarks.eyebrows),
                               alignment.Alignment(tgt.frame.matrix() @ align.matrix, align.kind).apply(src.landmarks.eyebrows)])
            cut = int(max(1, brows[:, 1].min() - s / 50))
            rows = np.arange(s)
            rows = np.where(rows <= cut, rows, np.clip(2 * cut - rows, 0, s - 1))
            donor_skin = inpainting.skin_pixels(warped, warped_labels, strictness=1.0, edge=1 / 80)
            donor, donor_face = warped[rows], donor_skin[rows]
            base = inpainting.clone_skin(base, donor, removed & (intended == FACE) & donor_face & inside)
            composite = compositing.replace_hair(base, layer)

        changed = removed.copy()
        final = composite
        artifacts = np.zeros_like(removed)
        if refine == "classic":
            with clock("reparse"):  # 3.3.1 (1): segment the mapping image again
                parsed = self.parse_crop(composite)
            with clock("fast_marching"):  # 3.3.1 (2)-(3): artifacts, filled by fast marching
                artifacts = inpainting.find_artifacts(parsed.labels, intended, min_width=max(3, s // 100))
                artifacts &= inside & (tgt.semantic.labels != FACE)  # the target's face stays its own
                final = inpainting.fast_marching(composite, artifacts, intended, known=~artifacts & inside)
                changed |= artifacts
            stages_parsed = parsed.colorize()

        with clock("paste_back"):
            # the fills blend into their surroundings, but never into the target's face
            feather = np.where(tgt.semantic.labels == FACE, changed, _feather(changed, max(1.0, s / 512)))
            paste_alpha = np.maximum(layer.alpha, feather)
            image = paste_back(tgt.image, tgt.frame, final, paste_alpha)

        def shown(img: np.ndarray, where: np.ndarray = inside) -> np.ndarray:
            """A stage as shown: frame pixels outside the photo in plain grey."""
            img = img.copy()
            img[~where] = 200
            return img

        stages["target"] = shown(tgt.crop)
        stages["source"] = shown(src.crop, src.inside)
        stages["target map"] = shown(tgt.semantic.colorize())
        stages["source map"] = shown(src.semantic.colorize(), src.inside)
        stages["warped source"] = shown(warped, alignment.warp_labels(src.inside.astype(np.uint8), m, (s, s)) > 0)
        stages["source hair"] = layer.on_white()
        hairless = tgt.crop.copy()
        hairless[removed] = 255
        stages["hairless target"] = shown(hairless)
        stages["old hair filled"] = shown(base)
        stages["mapping image"] = shown(composite)
        stages["mapping mask"] = shown(PALETTE[intended])
        if refine == "classic":
            stages["re-parsed"] = shown(stages_parsed)
            overlay = composite.copy()
            overlay[artifacts] = (255, 0, 255)
            stages["artifacts"] = shown(overlay)
            stages["fast marching"] = shown(final)
        stages["result"] = shown(tgt.frame.extract(image))
        masks = {"hair_alpha": layer.alpha, "source_hair": source_hair, "mapping_mask": intended, "removed": removed,
                 "artifacts": artifacts, "paste_alpha": paste_alpha}
        return TryOnResult(image, stages, masks, {}, meta, tgt, src)


def paste_back(image: np.ndarray, frame: Frame, content: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend work-frame ``content`` ((S, S, 3) uint8) into the photo ``image`` ((H, W, 3) uint8)
    with ``alpha`` ((S, S) float32), both upsampled to the frame's own pixels. Where alpha is 0
    the photo's pixels are returned unchanged. Returns a new (H, W, 3) uint8 image."""
    out = image.copy()
    rows, cols, brows, bcols = frame.roi()
    a = frame.to_image_box(alpha.astype(np.float32))[brows, bcols]
    c = frame.to_image_box(content)[brows, bcols].astype(np.float32)
    sel = a > 0
    if sel.any():
        region = out[rows, cols]
        blend = region.astype(np.float32) * (1.0 - a[..., None]) + c * a[..., None]
        region[sel] = np.clip(np.round(blend[sel]), 0, 255).astype(np.uint8)
    return out


_DEFAULT_TOOLS: Dict[str, HairTryOn] = {}
_TOOLS_LOCK = threading.Lock()


def get_tool(segmenter: str = "bisenet") -> HairTryOn:
    """A process-wide :class:`HairTryOn` per segmenter (models load once per process)."""
    with _TOOLS_LOCK:
        if segmenter not in _DEFAULT_TOOLS:
            _DEFAULT_TOOLS[segmenter] = HairTryOn(segmenter)
        return _DEFAULT_TOOLS[segmenter]


def tryon(target: ImageLike, source: ImageLike, segmenter: str = "bisenet", **options) -> TryOnResult:
    """Put the hairstyle of ``source`` on the person in ``target``; see :class:`HairTryOn`."""
    return get_tool(segmenter)(target, source, **options)
