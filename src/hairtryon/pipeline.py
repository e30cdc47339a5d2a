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
from typing import Callable, Dict, Optional

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
    ``stages``: named (S, S, 3) uint8 pictures of every step in the work frame, in order
    (drawn when first asked for).
    ``masks``: work-frame arrays: ``hair_alpha`` (S, S) float32 the new hair's matte,
    ``source_hair`` (S, S) float32 the warped source hair's own matte (before it is grown into
    gaps beside the face), ``mapping_mask`` (S, S) uint8 labels, ``removed``/``artifacts`` (S, S) bool, ``paste_alpha`` (S, S) float32.
    ``timings``: seconds per stage (and ``total``). ``meta``: alignment kind, fallbacks, frame.
    """

    image: np.ndarray
    masks: Dict[str, np.ndarray] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    target: Optional[FaceAnalysis] = None
    source: Optional[FaceAnalysis] = None
    _make_stages: Optional[Callable[[], Dict[str, np.ndarray]]] = field(default=None, repr=False)
    _stages: Optional[Dict[str, np.ndarray]] = field(default=None, repr=False)

    @property
    def stages(self) -> Dict[str, np.ndarray]:
        """Named (S, S, 3) uint8 pictures of every step, in order (drawn on first use)."""
        if self._stages is None:
            self._stages = self._make_stages() if self._make_stages else {}
        return self._stages


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
        bar = tqdm(total=7 if refine == "classic" else 5, desc="hairtryon", delay=1.0, leave=False,
                   disable=not progress)
        clock = _Clock(bar)
        try:
            with clock("analysis"):
                tgt = self.analyze(target, target_face)
                src = self.analyze(source, source_face)
            mapping = self.map_hair(tgt, src, clock)
            final, artifacts, parsed = mapping.composite, np.zeros_like(mapping.removed), None
            if refine == "classic":
                final, artifacts, parsed = self.fast_marching(tgt, mapping, clock)
            with clock("paste_back"):
                changed = mapping.removed | artifacts
                # the fills blend into their surroundings, but never into the target's face
                feather = np.where(tgt.semantic.labels == FACE, changed, _feather(changed, max(1.0, tgt.frame.size / 512)))
                paste_alpha = np.maximum(mapping.layer.alpha, feather)
                image = paste_back(tgt.image, tgt.frame, final, paste_alpha)
        finally:
            bar.close()
        meta = {"frame": tgt.frame, "segmenter": self.segmenter.name, "refine": refine,
                "alignment": mapping.alignment.kind}
        if mapping.alignment.reason:
            meta["alignment_fallback"] = mapping.alignment.reason
        masks = {"hair_alpha": mapping.layer.alpha, "source_hair": mapping.source_hair,
                 "mapping_mask": mapping.intended, "removed": mapping.removed, "artifacts": artifacts,
                 "paste_alpha": paste_alpha}
        return TryOnResult(image, masks, dict(clock.timings, total=time.perf_counter() - t_start), meta, tgt, src,
                           lambda: _stage_pictures(tgt, src, mapping, parsed, artifacts, final, image))

    def map_hair(self, tgt: FaceAnalysis, src: FaceAnalysis, clock: Optional[_Clock] = None) -> "Mapping":
        """Face and hair mapping (paper 3.2): transform, cropping, replacing, in the target's frame."""
        clock = clock or _Clock(None)
        s = tgt.frame.size
        inside = tgt.inside
        with clock("alignment"):  # 3.2.2: source points onto target points, into the target frame
            f = tgt.frame
            align = alignment.estimate_alignment(src.landmarks.points, tgt.landmarks.points,
                                                 (f.x0, f.y0, f.x0 + f.side, f.y0 + f.side))
            warp = f.matrix() @ align.matrix @ np.linalg.inv(src.frame.matrix())
            warped = alignment.warp_image(src.crop, warp, (s, s))
            warped_labels = alignment.warp_labels(np.where(src.inside, src.semantic.labels, 0).astype(np.uint8), warp, (s, s))
            # hair that the source photo cuts off fades out instead of ending in a straight line
            edge = cv2.distanceTransform(np.pad(src.inside, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
            fade = alignment.warp_mask(np.clip(edge / max(2.0, 0.05 * src.frame.size), 0, 1), warp, (s, s))

        with clock("cropping"):  # 3.2.3
            layer = compositing.crop_source_hair(warped, warped_labels == HAIR)
            layer.alpha *= fade
            source_hair = layer.alpha.copy()
            removed = compositing.remove_hair(tgt.crop, tgt.semantic.labels, tgt.semantic.prob(HAIR),
                                              closing_px=max(2, s // 100), margin_px=max(2, s // 120),
                                              face_margin_px=max(1, s // 300))
            # skin under the new hairstyle: the target's face, and the source's forehead up to its
            # hairline where the old hair covered it; thin slivers by the new hair are skin too
            face = tgt.face_region() | ((warped_labels == FACE) & tgt.forehead_column())
            face = cv2.dilate(face.astype(np.uint8), compositing._disk(s / 100)).astype(bool)
            mouth_y = f.to_frame_points(tgt.landmarks.mouth[None])[0, 1]
            gaps = compositing.side_gaps(layer.mask, face, removed, width=s // 8, below=mouth_y)
            layer = compositing.extend_hair(layer, gaps)
            intended = compositing.mapping_mask(tgt.semantic.labels, removed, layer.mask, face)

        with clock("replacing"):  # 3.2.4, with the old hair's place rebuilt from the target itself
            hairless = inpainting.fill(tgt.crop, removed, intended, known=~removed & inside, method="smooth")
            # a forehead uncovered by the new hairline takes the source's own forehead skin, its
            # colours matched to the target's skin around it, from above both faces' eyebrows only
            # (the source's brows or glasses must not come along)
            brows = np.vstack([f.to_frame_points(tgt.landmarks.eyebrows),
                               alignment.Alignment(f.matrix() @ align.matrix, align.kind).apply(src.landmarks.eyebrows)])
            donor, usable = inpainting.mirror_below(
                warped, inpainting.skin_pixels(warped, warped_labels, strictness=1.0, edge=1 / 80),
                int(max(1, brows[:, 1].min() - s / 50)))
            hairless = inpainting.clone_skin(hairless, donor, removed & (intended == FACE) & usable & inside)
            composite = compositing.replace_hair(hairless, layer)
        return Mapping(align, warp, warped, warped_labels, layer, source_hair, removed, intended, hairless, composite)

    def fast_marching(self, tgt: FaceAnalysis, mapping: "Mapping", clock: Optional[_Clock] = None):
        """Paper 3.3.1: parse the mapping image again; where it disagrees with the mapping mask
        lie the artifacts, filled by fast marching. Returns (filled (S, S, 3) uint8, artifacts
        (S, S) bool, the re-parse :class:`SemanticMap`)."""
        clock = clock or _Clock(None)
        s = tgt.frame.size
        with clock("reparse"):
            parsed = self.parse_crop(mapping.composite)
        with clock("fast_marching"):
            artifacts = inpainting.find_artifacts(parsed.labels, mapping.intended, min_width=max(3, s // 100))
            artifacts &= tgt.inside & (tgt.semantic.labels != FACE)  # the target's face stays its own
            final = inpainting.fast_marching(mapping.composite, artifacts, mapping.intended,
                                             known=~artifacts & tgt.inside)
        return final, artifacts, parsed


@dataclass
class Mapping:
    """The target's work frame after face and hair mapping (paper 3.2). Images (S, S, 3) uint8,
    masks (S, S) bool, labels (S, S) uint8.

    ``alignment``: the transform in photo coordinates; ``warp``: (3, 3) source frame -> target
    frame. ``warped``/``warped_labels``: the source and its labels on the target's head.
    ``layer``: the new hair (matte and colours); ``source_hair``: the warped source hair's own
    matte (float32) before the layer was grown into gaps beside the face. ``removed``: where the
    target's old hair was. ``intended``: the mapping mask. ``hairless``: the target with the old
    hair's place rebuilt. ``composite``: the mapping image, the new hair over ``hairless``.
    """

    alignment: "alignment.Alignment"
    warp: np.ndarray
    warped: np.ndarray
    warped_labels: np.ndarray
    layer: compositing.HairLayer
    source_hair: np.ndarray
    removed: np.ndarray
    intended: np.ndarray
    hairless: np.ndarray
    composite: np.ndarray


def _stage_pictures(tgt: FaceAnalysis, src: FaceAnalysis, mapping: Mapping, parsed: Optional[SemanticMap],
                    artifacts: np.ndarray, final: np.ndarray, image: np.ndarray) -> Dict[str, np.ndarray]:
    """Every step as a picture in the work frame, in the order of the paper's overview figure;
    frame pixels outside a photo are shown plain grey."""
    s = tgt.frame.size
    inside = tgt.inside

    def shown(img: np.ndarray, where: np.ndarray = inside) -> np.ndarray:
        img = img.copy()
        img[~where] = 200
        return img

    hairless = tgt.crop.copy()
    hairless[mapping.removed] = 255
    src_inside = alignment.warp_labels(src.inside.astype(np.uint8), mapping.warp, (s, s)) > 0
    stages = {
        "target": shown(tgt.crop),
        "source": shown(src.crop, src.inside),
        "target map": shown(tgt.semantic.colorize()),
        "source map": shown(src.semantic.colorize(), src.inside),
        "warped source": shown(mapping.warped, src_inside),
        "source hair": mapping.layer.on_white(),
        "hairless target": shown(hairless),
        "old hair filled": shown(mapping.hairless),
        "mapping image": shown(mapping.composite),
        "mapping mask": shown(PALETTE[mapping.intended]),
    }
    if parsed is not None:
        overlay = mapping.composite.copy()
        overlay[artifacts] = (255, 0, 255)
        stages["re-parsed"] = shown(parsed.colorize())
        stages["artifacts"] = shown(overlay)
        stages["fast marching"] = shown(final)
    stages["result"] = shown(tgt.frame.extract(image))
    return stages


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
