"""The try-on pipeline: the method's stages composed, on photos of any size.

``HairTryOn`` holds the models and does the expensive per-photo work once
(:meth:`HairTryOn.analyze`: landmarks, work frame, semantic map), so that trying many
hairstyles on one target only pays for what changes. :func:`tryon` is the one-call version.

Everything runs in the target's *work frame* (a square face-centred crop with room for long
hair, see :mod:`hairtryon.framing`); the result is pasted back into the target photo at its own
resolution, so pixels far from the hair are the target's own, unchanged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, Optional

import cv2
import numpy as np
from PIL.Image import Image as PILImage
from tqdm.auto import tqdm

from . import alignment, checks, colour, compositing, inpainting, mapping, matting, rebuild, refinement, segmentation
from .errors import HairTryOnError, describe
from .framing import Frame, disk, grow, smoothstep
from .images import ImageLike, Photo, grey_rgb, load_photo
from .landmarks import Landmarker, Landmarks, default_landmarker, default_person_segmenter
from .mapping import feature_hulls, skull
from .segmentation import BACKGROUND, FACE, HAIR, NECK, PALETTE, SemanticMap, Segmenter, get_segmenter, hair_runs_off, labels_from_probs, segment_frame, segment_wide

FRINGE_ALPHA = 0.05  # the new hair's layer above this is its own (its soft edge included), never an artifact
WORK_FRAME_SCALE = 1.3  # work frame = FFHQ-like head framing widened 1.3x: room for long hair
WIDE_FRAME_SCALE = 2.0  # ... and 2x where the hair runs off that frame inside the photo
CUT_HAIR_REACH = 0.08  # hair a source photo cuts off goes on this far (of the nominal frame), thinning out
MAX_WORK_SIZE = 1536  # frames larger than this are worked at this size and upsampled on paste-back
REFINE_MODES = ("auto", "sdedit", "classic", "none")


class RefineFallbackWarning(UserWarning):
    """``refine='auto'`` could not have the diffusion model and kept the classic result."""


@dataclass(frozen=True)
class SDEditOptions:
    """How SDEdit refines (paper 3.3.2). ``sampler``: 'ddim' (fast, ``steps`` UNet calls) or
    'ddpm' (the paper's, one call per level, the whole edit ``repeats`` times). ``noise_level``:
    t0 in 1..1000 (300 leaves artifacts, 1000 drifts from the hairstyle). ``seed``: repeatable
    runs. ``edit_region``: 'tight' (keeps the target's background) or 'paper' (regenerates it)."""

    sampler: str = "ddim"
    noise_level: int = 500
    steps: int = 25
    repeats: int = 1
    seed: Optional[int] = None
    edit_region: str = "tight"

    def __post_init__(self):
        if self.sampler not in refinement.SAMPLERS:
            raise HairTryOnError(f"unknown sampler '{self.sampler}': use {' or '.join(refinement.SAMPLERS)}.")
        if not 1 <= int(self.noise_level) <= 1000:
            raise HairTryOnError(f"the noise level must be from 1 to 1000, got {self.noise_level}.")
        if int(self.steps) < 1 or int(self.repeats) < 1:
            raise HairTryOnError("steps and repeats must be at least 1.")
        if self.edit_region not in ("tight", "paper"):
            raise HairTryOnError(f"unknown edit region '{self.edit_region}': use tight or paper.")


@dataclass
class FaceAnalysis:
    """What is computed once per photo.

    ``image``: (H, W, 3) uint8 the whole photo. ``landmarks``: in photo coordinates.
    ``frame``: the work frame. ``crop``: (S, S, 3) uint8 the frame's pixels.
    ``semantic``: :class:`SemanticMap` of the crop, (S, S) labels and (5, S, S) probabilities.
    ``photo``: the loaded :class:`~hairtryon.images.Photo` (its alpha, greyness, name).
    ``faces_found``: how many faces the photo shows (``landmarks`` is one of them).
    ``others``: the other faces found in the photo (photo coordinates).
    ``person``: (S, S) float32 how surely each crop pixel shows a person (MediaPipe Selfie
    Segmentation): where the parser called this person's body background, ``semantic`` says
    neck+clothes (:func:`segmentation.body_from_person`).
    """

    image: np.ndarray
    landmarks: Landmarks
    frame: Frame
    crop: np.ndarray
    semantic: SemanticMap
    photo: Optional[Photo] = None
    faces_found: int = 1
    others: list = field(default_factory=list)
    person: Optional[np.ndarray] = None  # (S, S) float32: the person segmenter's mask of the crop

    @property
    def points(self) -> np.ndarray:
        """(4, 2) the method's 4 points in frame coordinates."""
        return self.frame.to_frame_points(self.landmarks.points)

    @property
    def eyes_y(self) -> float:
        """The eyes' row in the frame: the mean y of the two eye points of :attr:`points`."""
        return float(self.points[1:3, 1].mean())

    @cached_property
    def unit(self) -> float:
        """The side, in work-frame pixels, of the face's nominal work frame (FFHQ framing widened
        ``WORK_FRAME_SCALE`` times): what every width in the method is relative to, whichever
        frame the photo is worked in."""
        return float(self.frame.scale * self.landmarks.head_frame(1, WORK_FRAME_SCALE).side)

    @cached_property
    def inside(self) -> np.ndarray:
        """(S, S) bool: frame pixels that lie inside the photo (the rest is padding)."""
        return self.frame.inside()

    def face_region(self) -> np.ndarray:
        """(S, S) bool: the face silhouette from the landmarks, raised a little at the top (the
        mesh stops below the hairline), united with the parsed face."""
        s = self.frame.size
        oval = self.frame.to_frame_points(self.landmarks.face_oval())
        eye_y = self.eyes_y
        chin_y = self.points[3, 1]
        lift = 0.12 * (chin_y - eye_y)
        oval[:, 1] -= np.clip((eye_y - oval[:, 1]) / max(eye_y - oval[:, 1].min(), 1e-6), 0, 1) * lift
        mask = np.zeros((s, s), np.uint8)
        cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 1)
        return mask.astype(bool) | (self.semantic.labels == FACE)

    @cached_property
    def grain(self) -> "matting.Grain":
        """The photo's grain and sharpness in its work frame, both from its face (the skin is the
        flat region next to the hair that is in focus like it; backgrounds are often blurred or
        flattened by JPEG)."""
        return matting.measure_grain(self.crop, (self.semantic.labels == FACE) & self.inside)

    @cached_property
    def photo_grain(self) -> "matting.Grain":
        """:attr:`grain` at the photo's own resolution (the same where the frame is worked at it)."""
        f = self.frame
        if f.size == f.side:
            return self.grain
        rows, cols, brows, bcols = f.roi()
        labels = f.to_image_box(self.semantic.labels, cv2.INTER_NEAREST)[brows, bcols]
        return matting.measure_grain(self.image[rows, cols], labels == FACE, window=PHOTO_GRAIN_WINDOW)

    def forehead_column(self) -> np.ndarray:
        """(S, S) bool: the band above the eyes as wide as the face's upper half (slightly
        narrowed), where a new hairstyle's higher hairline uncovers forehead skin."""
        s = self.frame.size
        oval = self.frame.to_frame_points(self.landmarks.face_oval())
        eye_y = self.eyes_y
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
    gaps beside the face), ``mapping_mask`` (S, S) uint8 labels, ``removed``/``artifacts`` (S, S) bool, ``tinted`` (S, S)
    bool the pixels beside the old hair whose tone was made good (texture kept), ``paste_alpha`` (S, S) float32;
    with SDEdit, ``edit_keep`` (S, S) bool its kept pixels and ``edit_region`` (S, S) float32, 1 where it may change them.
    ``timings``: seconds per stage (and ``total``). ``meta``: alignment kind, fallbacks, frame,
    ``warp`` ((3, 3) float64, the source's work frame -> the target's, used by the evaluation);
    ``meta['warnings']``: the one-line messages a person should read (the CLI prints them, the
    web page shows them); ``meta['faces']``: faces found in the target and the source.
    ``alpha``: (H, W) uint8 the result's transparency when the target has an alpha channel (the
    target's own outside what changed; the new hair's from its matte), else None.
    :attr:`output` is the result in the target's own kind (grey, grey+alpha, RGBA or RGB).
    """

    image: np.ndarray
    masks: Dict[str, np.ndarray] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    target: Optional[FaceAnalysis] = None
    source: Optional[FaceAnalysis] = None
    _make_stages: Optional[Callable[[], Dict[str, np.ndarray]]] = field(default=None, repr=False)
    _stages: Optional[Dict[str, np.ndarray]] = field(default=None, repr=False)
    alpha: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def output(self) -> np.ndarray:
        """The result as the target photo was: (H, W) uint8 for a grey target, (H, W, 2) grey +
        alpha, (H, W, 4) RGBA for a target with transparency, else (H, W, 3) RGB (``image``).
        This is what the CLI writes."""
        photo = self.target.photo if self.target is not None else None
        return self.image if photo is None else photo.restore(self.image, self.alpha)

    @property
    def stages(self) -> Dict[str, np.ndarray]:
        """Named (S, S, 3) uint8 pictures of every step, in order (drawn on first use)."""
        if self._stages is None:
            self._stages = self._make_stages() if self._make_stages else {}
        return self._stages


PHOTO_GRAIN_WINDOW = 1536  # pixels on a side: the window a photo's own grain is measured in


MATTES_KEPT = 2  # source photos whose hair layer is kept with their analysis (see HairTryOn.source_hair)


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


def _measured(analysis: FaceAnalysis, what: str) -> "colour.HairColour":
    """:func:`colour.measure_analysis` of a photo, kept with its analysis (measured once)."""
    if "hair_colour" not in analysis.__dict__:
        analysis.__dict__["hair_colour"] = colour.measure_analysis(analysis, what)
    return analysis.__dict__["hair_colour"]


def _feather(mask: np.ndarray, px: float) -> np.ndarray:
    """(S, S) bool -> float32: 1 inside, a soft ramp of about ``px`` pixels outside."""
    m = mask.astype(np.float32)
    if px <= 0:
        return m
    return np.maximum(m, np.clip(cv2.GaussianBlur(m, (0, 0), px) * 2.0, 0, 1))


class HairTryOn:
    """The try-on tool: models loaded once, photos analysed once, hairstyles tried many times.

    >>> tool = HairTryOn()
    >>> result = tool(target_image, source_image)       # TryOnResult
    >>> result.image                                    # (H, W, 3) uint8

    ``segmenter``: 'bisenet' (default), 'unet:PATH', or a :class:`Segmenter`.
    ``work_size``: largest side the work frame is processed at (default 1536).
    ``diffusion_model``: hub id or local diffusers folder for SDEdit (default
    ``google/ddpm-ema-celebahq-256``), loaded on first use, on ``device`` in ``precision``.
    ``max_pixels``: photos with more pixels are refused before decoding (default
    :data:`hairtryon.images.MAX_PIXELS`; a server can lower it).
    """

    def __init__(self, segmenter="bisenet", landmarker: Optional[Landmarker] = None,
                 work_size: int = MAX_WORK_SIZE, cache_size: int = 8, diffusion_model: Optional[str] = None,
                 device: str = "auto", precision: str = "auto", max_pixels: Optional[int] = None):
        self.max_pixels = max_pixels
        self.segmenter: Segmenter = get_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
        self.landmarker = landmarker or default_landmarker()
        self.diffusion_model, self.device, self.precision = diffusion_model, device, precision
        self._diffusion_failure: Optional[str] = None
        self.work_size = int(work_size)
        self._cache: "OrderedDict[tuple, FaceAnalysis]" = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._matted: list = []  # the analyses that keep their hair layer (the last MATTES_KEPT)

    # ------------------------------------------------------------------ per-photo analysis
    def load(self, image: ImageLike, role: str = "") -> Photo:
        """A photo loaded for the try-on (:func:`~hairtryon.images.load_photo` with this tool's
        pixel limit); ``role`` ('target' or 'source') names it in messages."""
        return load_photo(image, role, self.max_pixels)

    def analyze(self, image: ImageLike, face_index: int = 0, role: str = "", wide: bool = False) -> FaceAnalysis:
        """Landmarks, work frame and semantic map of a photo (cached: a photo seen before costs
        nothing). ``role`` ('target' or 'source') names the photo in error messages. ``wide``:
        work in the wide frame even if the photo's own hair fits the nominal one (a target whose
        new hairstyle is bigger than its old one)."""
        photo = self.load(image, role)
        image = photo.rgb
        key = (hashlib.blake2b(memoryview(image), digest_size=16).hexdigest(), image.shape, face_index, wide)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                cached = self._cache[key]  # the same pixels; this photo's own alpha, greyness and name
                return cached if cached.photo is photo else dataclasses.replace(cached, photo=photo)
        lm, faces = self.landmarker.find(image, face_index, what=describe(photo.name, role))
        frame = lm.head_frame(self.work_size, WORK_FRAME_SCALE)
        frame = frame.with_size(min(frame.side, self.work_size))
        probs, parts = segment_frame(image, frame, self.segmenter, parts=True)
        if wide or hair_runs_off(labels_from_probs(probs), frame.inside()):  # long hair: a wider frame holds it
            wide = lm.head_frame(self.work_size, WIDE_FRAME_SCALE)
            # (worked at up to 4/3 the size: most of a wide frame is the hair around the head, and
            # shrinking it would soften that hair on the way back to the photo)
            wide = wide.with_size(min(wide.side, int(self.work_size * 4 / 3)))
            probs, parts = segment_wide(image, frame, wide, self.segmenter, probs, parts)
            frame = wide
        crop = frame.extract(image)
        semantic = SemanticMap(labels_from_probs(probs), probs, {"segmenter": self.segmenter.name}, parts)
        analysis = FaceAnalysis(image, lm, frame, crop, semantic, photo, len(faces),
                                [f for f in faces if f is not lm], default_person_segmenter()(crop))
        analysis.semantic = segmentation.body_from_person(semantic, analysis.person, analysis.points[3],
                                                          guard=analysis.unit / 60, image=crop)
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
    def diffusion(self, refine: str):
        """The diffusion model for a refine mode, loaded once per process: (model or None, why
        not). 'sdedit' raises :class:`WeightsError` when it cannot be had; 'auto' returns the reason."""
        if refine not in ("auto", "sdedit"):
            return None, None
        if self._diffusion_failure is not None and refine == "auto":  # tried before: don't probe again
            return None, self._diffusion_failure
        model, why = refinement.load_for_refine(refine, self.diffusion_model, self.device, self.precision)
        self._diffusion_failure = why
        return model, why

    def __call__(self, target: ImageLike, source: ImageLike, refine: str = "auto", target_face: int = 0,
                 source_face: int = 0, progress: bool = False, force: bool = False, color=None,
                 **sdedit_options) -> TryOnResult:
        """Put the hairstyle of ``source`` on the person in ``target`` (paths, PIL images or
        (H, W, 3) uint8 arrays).

        ``color``: the new hair's colour. None (default): the source's, as in the paper; 'keep':
        the target's own; a photo (path, PIL image or array): that photo's hair colour; or a
        :class:`colour.HairColour`. See :meth:`reference_colour`.

        ``refine``: 'auto' (default: SDEdit when the diffusion model can be had, else the classic
        result with a :class:`RefineFallbackWarning`), 'sdedit' (fails without the model),
        'classic' (fast-marching fill of the artifacts, paper 3.3.1) or 'none' (stop before it).
        A pair the method cannot do well (:mod:`hairtryon.checks`) raises
        :class:`checks.CannotDoWell`, or with ``force`` gives the result with warnings.
        ``sdedit_options``: the fields of :class:`SDEditOptions`.
        """
        if refine not in REFINE_MODES:
            raise HairTryOnError(f"unknown refine mode '{refine}': use one of {', '.join(REFINE_MODES)}.")
        options = SDEditOptions(**sdedit_options)
        t_start = time.perf_counter()
        target, source = self.load(target, "target"), self.load(source, "source")  # bad files fail first
        model, fallback = self.diffusion(refine)
        bar = tqdm(total=6 + 2 * (refine != "none") + (model is not None), desc="hairtryon", delay=1.0,
                   leave=False, disable=not progress)
        clock = _Clock(bar)
        try:
            tgt, src, mapping, final, artifacts, parsed, paste_alpha, found = self._classic(
                target, source, refine != "none", target_face, source_face, clock, force, color)
            classic, edit = final, None
            if model is not None:
                with clock("sdedit"):
                    edit = self.sdedit(tgt, mapping, final, paste_alpha, model, options, progress, artifacts)
                final, paste_alpha = edit.image, np.maximum(paste_alpha, edit.region)
            with clock("paste_back"):
                keep = None if edit is None else edit.keep
                image, alpha = _paste_result(tgt, mapping, final, paste_alpha, keep, artifacts, edit)
                # the new hair's sharpness and grain at the photo's own resolution (a frame
                # smaller than the photo upsampled it on the way back)
                image = matting.photo_finish(image, tgt.frame, mapping.layer.alpha, tgt.photo_grain,
                                             mapping.hair_upscale, in_place=True)
        finally:
            bar.close()
        meta = {"frame": tgt.frame, "warp": mapping.warp, "segmenter": self.segmenter.name,
                "alignment": mapping.alignment.kind,
                "refine": "sdedit" if model is not None else ("none" if refine == "none" else "classic")}
        if mapping.alignment.reason:
            meta["alignment_fallback"] = mapping.alignment.reason
        if mapping.colour is not None:
            meta["hair_colour"] = mapping.colour.describe()
        meta["warnings"] = []  # one-line messages for the person: the CLI prints them, the web page shows them
        meta["faces"] = {"target": tgt.faces_found, "source": src.faces_found}
        for role, photo, analysis, index in (("target", target, tgt, target_face), ("source", source, src, source_face)):
            meta["warnings"].extend(photo.notes)
            meta["warnings"].extend(_faces_note(describe(photo.name, role), role, analysis.faces_found, index))
        meta["warnings"] += [c.message for c in found.concerns]  # declines only when forced
        meta["concerns"] = [dict(code=c.code, photo=c.photo, message=c.message, declined=c.decline, value=c.value)
                            for c in found.concerns]
        if mapping.hair_upscale > matting.HAIR_UPSCALE_NOTE:
            meta["hair_upscale"] = round(mapping.hair_upscale, 2)
        if matting.upscale_warning(mapping.hair_upscale):
            meta["warnings"].append(matting.upscale_warning(mapping.hair_upscale))
        if fallback:
            meta["refine_fallback"] = fallback
            meta["warnings"].append(fallback)
            warnings.warn(fallback, RefineFallbackWarning, stacklevel=2)
        if model is not None:
            meta["sdedit"] = dict(model.info, sampler=options.sampler, noise_level=int(options.noise_level),
                                  steps=int(options.steps), repeats=int(options.repeats), seed=options.seed,
                                  edit_region=options.edit_region)
        masks = {"hair_alpha": mapping.layer.alpha, "source_hair": mapping.source_hair,
                 "mapping_mask": mapping.intended, "removed": mapping.removed, "artifacts": artifacts,
                 "tinted": mapping.tinted,
                 "paste_alpha": paste_alpha}
        if edit is not None:
            masks["edit_keep"] = edit.keep
            masks["edit_region"] = edit.region
        return TryOnResult(image, masks, dict(clock.timings, total=time.perf_counter() - t_start), meta, tgt, src,
                           lambda: _stage_pictures(tgt, src, mapping, parsed, artifacts, classic, image, edit),
                           alpha=alpha)

    def _classic(self, target, source, fast_marching: bool, target_face: int, source_face: int, clock: "_Clock",
                 force: bool = False, color=None):
        """Analysis, checks, mapping and (optionally) fast marching: everything before SDEdit."""
        with clock("analysis"):
            tgt = self.analyze(target, target_face, "target")
            src = self.analyze(source, source_face, "source")
            reference = self.reference_colour(color, tgt, target)
        with clock("checks"):
            found = self.check_photos(tgt, src)
            found.raise_if_declined(force)
        mapping = self.map_hair(tgt, src, clock, reference)
        if tgt.frame.side < tgt.landmarks.head_frame(1, WIDE_FRAME_SCALE).side and \
                hair_runs_off((mapping.layer.alpha > 0.5).astype(np.uint8) * HAIR, tgt.inside):
            # the new hairstyle is bigger than the target's frame: map it again in the wide one
            with clock("analysis"):
                tgt = self.analyze(target, target_face, "target", wide=True)
            mapping = self.map_hair(tgt, src, clock, reference)
        found.concerns += self.check_pair(tgt, src, mapping)
        found.raise_if_declined(force)
        final, artifacts, parsed = mapping.composite, np.zeros_like(mapping.removed), None
        if fast_marching:
            final, artifacts, parsed = self.fast_marching(tgt, mapping, clock)
        changed = mapping.removed | artifacts | mapping.tinted
        # the fills blend into their surroundings, but never into the target's face
        # (on the face only a pixel wider: what was taken as old hair is replaced all the way to
        # its edge once resampled to the photo's own pixels)
        face_edge = np.maximum(grow(changed, 1.0).astype(np.float32), 0.5 * grow(changed, 2.0))
        feather = np.where(tgt.semantic.labels == FACE, face_edge, _feather(changed, max(1.0, tgt.frame.size / 512)))
        mapping.changed_alpha, mapping.classic = feather, final
        paste_alpha = np.maximum(mapping.layer.alpha, feather)
        return tgt, src, mapping, final, artifacts, parsed, paste_alpha, found

    def sweep(self, target: ImageLike, source: ImageLike, levels, target_face: int = 0, source_face: int = 0,
              progress: bool = False, color=None, **sdedit_options):
        """SDEdit of one try-on at several noise levels (the paper's Figure 12). Needs the
        diffusion model. Returns (grid (H, W, 3) uint8 labelled: input, composite, one result per
        level; [(level, full-resolution result in the target's own kind, see TryOnResult.output)])."""
        from .visualize import labelled_grid

        levels = [int(v) for v in levels]
        for level in levels:
            SDEditOptions(noise_level=level, **sdedit_options)  # validate all before any work
        target, source = self.load(target, "target"), self.load(source, "source")
        model, _ = self.diffusion("sdedit")
        tgt, src, mapping, final, artifacts, _, paste_alpha, _ = self._classic(target, source, True, target_face,
                                                                               source_face, _Clock(None), color=color)
        tiles = [("input", tgt.crop), ("composite", final)]
        results = []
        for level in levels:
            edit = self.sdedit(tgt, mapping, final, paste_alpha, model,
                               SDEditOptions(noise_level=level, **sdedit_options), progress, artifacts)
            image, alpha = _paste_result(tgt, mapping, edit.image, np.maximum(paste_alpha, edit.region), edit.keep,
                                         artifacts, edit)
            results.append((level, tgt.photo.restore(image, alpha) if tgt.photo is not None else image))
            tiles.append((f"t0 = {level}", tgt.frame.extract(image)))
        return labelled_grid(tiles, cols=len(tiles), tile=256), results

    def sdedit(self, tgt: FaceAnalysis, mapping: "Mapping", image: np.ndarray, changed: np.ndarray, model,
               options: SDEditOptions, progress: bool = False,
               artifacts: Optional[np.ndarray] = None) -> "SDEditOutcome":
        """SDEdit (paper 3.3.2) of the work-frame ``image`` ((S, S, 3) uint8, the fast-marching
        result): a head crop framed like the model's training faces goes to the model at its
        resolution; only the edit region comes back, feathered inside it, at the frame's own
        resolution. ``changed`` ((S, S) float32 > 0 where the try-on changed pixels) and the new
        hair are regenerated with the seams around them; the target's face, ears, neck and
        clothes (eroded) are kept, bit for bit. At the frame's resolution the model gives the
        colours and shapes, the input its detail (:func:`refinement.restore_detail`): the new
        hair's strands and the target's own pixels are real; the old hair's rebuilt place (where
        no new hair lies) and the fast-marching fills (``artifacts``, (S, S) bool) are not, and
        take the grain of real pixels of their class."""
        s = tgt.frame.size
        head = tgt.landmarks.head_frame(model.sample_size, 1.0)
        f = tgt.frame
        crop = Frame(int(round((head.x0 - f.x0) * f.scale)), int(round((head.y0 - f.y0) * f.scale)),
                     max(8, int(round(head.side * f.scale))), 0, (s, s))
        crop = crop.with_size(crop.side)  # the head crop at the frame's own resolution
        regenerate = (changed > 0) | (mapping.layer.alpha > 0)
        labels = crop.extract(mapping.intended, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0)
        regen = crop.extract(regenerate.astype(np.uint8), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0).astype(bool)
        keep_crop = refinement.edit_mask(labels, regen, options.edit_region)
        rebuilt, donors = refinement.detail_masks(mapping.intended, mapping.removed, mapping.layer.alpha, artifacts,
                                                  tgt.inside)
        rebuilt = crop.extract(rebuilt, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0)
        donors = crop.extract(donors.astype(np.uint8), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, 0) > 0
        # the model refines the classic result as the photo shows it: the work frame blended into
        # the target by ``changed``, as paste_back does
        if mapping.changed_alpha is not None and artifacts is not None:
            content, weight = classic_layers(mapping, image, artifacts)
        else:
            content, weight = image, np.clip(changed, 0.0, 1.0)
        a = weight.astype(np.float32)[..., None]
        seen = np.clip(np.round(tgt.crop.astype(np.float32) * (1.0 - a) + content.astype(np.float32) * a), 0, 255)
        given = crop.extract(seen.astype(np.uint8), border=cv2.BORDER_REFLECT_101)
        refined = refinement.refine(given, keep_crop, model, rebuilt=rebuilt, labels=labels, donors=donors,
                                    sampler=options.sampler, t0=int(options.noise_level), steps=int(options.steps),
                                    repeats=int(options.repeats), seed=options.seed, progress=progress)
        rows, cols, brows, bcols = crop.roi()
        out = image.copy()  # outside the edit region, the classic frame (pasted by ``changed`` as before)
        edited = ~keep_crop[brows, bcols]
        out[rows, cols][edited] = refined[brows, bcols][edited]
        keep = np.zeros((s, s), bool)
        keep[rows, cols] = keep_crop[brows, bcols]
        region = np.zeros((s, s), np.float32)
        region[rows, cols] = ~keep_crop[brows, bcols]
        return SDEditOutcome(out, keep, region, refined, crop, given)

    def check_photos(self, tgt: FaceAnalysis, src: FaceAnalysis) -> "checks.Checks":
        """What each photo says about how well the method can do (:mod:`hairtryon.checks`)."""
        found = checks.Checks()
        for role, a in (("target", tgt), ("source", src)):
            frame = a.frame
            mesh = frame.to_frame_points(a.landmarks.mesh)
            hands = [frame.to_frame_points(h) for h in self._hands(a)] if role == "source" else []
            others = [frame.to_frame_points(o.mesh) for o in a.others] if role == "source" else []
            found.concerns += checks.photo_checks(role, a.semantic.prob(HAIR), a.semantic.parts.get("hat"),
                                                  a.landmarks.yaw_degrees,
                                                  a.inside, hands, others, float(np.ptp(mesh[:, 0])),
                                                  face_area=float(((a.semantic.labels == FACE) & a.inside).sum()))
        return found

    def check_pair(self, tgt: FaceAnalysis, src: FaceAnalysis, mapping: "Mapping") -> list:
        """What the mapping says: heads turned apart, the target's hands or other people where the
        try-on changes pixels, the new hairstyle cut off by either photo's edges, a neck and
        shoulders to invent, and too much of the scene to invent."""
        f = tgt.frame
        mesh = f.to_frame_points(tgt.landmarks.mesh)
        face_width = float(np.ptp(mesh[:, 0]))
        changed = (mapping.layer.alpha > 0.1) | mapping.removed
        hands = [f.to_frame_points(h) for h in self._hands(tgt)]
        others = [f.to_frame_points(o.mesh) for o in tgt.others]
        found = checks.pair_checks(tgt.landmarks.yaw_degrees, src.landmarks.yaw_degrees,
                                   changed & tgt.inside, hands, others, face_width)
        # the source photo's edges, where they cut its hair off, moved onto the target
        visible = {}
        src_hair = (src.semantic.labels == HAIR) & src.inside
        for side, line in checks.cut_lines(src_hair, src.inside).items():
            moved = alignment.warp_labels(line.astype(np.uint8), mapping.warp, (f.size, f.size)) > 0
            scale = float(np.sqrt(abs(np.linalg.det(mapping.warp[:2, :2]))))  # target px per source px
            visible[side] = float((moved & tgt.inside).sum()) / max(3.0 * scale, 1e-6)  # line length
        found += checks.cut_off_check(visible, face_width)
        found += checks.shown_check(mapping.source_hair, tgt.inside, tgt.eyes_y)
        regions = self.regions(tgt)
        invented = mapping.removed & regions.body & ~regions.neck & (mapping.layer.alpha < 0.5) & tgt.inside
        parts = tgt.semantic.parts
        cloth = (parts["cloth"] > parts["neck_skin"]) if "cloth" in parts else (tgt.semantic.labels == NECK)
        visible = cloth & (tgt.semantic.labels == NECK) & ~mapping.removed & tgt.inside
        face_area = float(((tgt.semantic.labels == FACE) | regions.face).sum())
        found += checks.body_check(invented, visible, face_area)
        found += checks.invent_check(mapping.removed & (mapping.layer.alpha < 0.5) & tgt.inside, face_area)
        # the head itself, under old hair beside the face, left bare and rebuilt as scene
        head = skull(f.to_frame_points(tgt.landmarks.face_oval()), tgt.points[1:3].mean(axis=0),
                    tgt.points[3], f.size)
        bare = head & mapping.removed & (mapping.layer.alpha < 0.5) & tgt.inside & ~regions.face & \
            (mapping.intended == BACKGROUND)
        found += checks.head_check(bare, face_area, float(tgt.points[0, 0]))
        # eyes and brows the old hair hid and the new hair would show
        hulls = feature_hulls(mesh, f.size)
        shares = checks.hidden_features(hulls, tgt.semantic.labels == HAIR, mapping.layer.alpha > 0.5)
        return found + checks.features_check(shares)

    def _hands(self, analysis: FaceAnalysis) -> list:
        """The hands in a photo that look like hands (see :func:`checks.plausible_hands`)."""
        box = analysis.landmarks.face_box
        face = analysis.semantic.labels == FACE
        skin = None
        if face.sum() > 50:
            lab = cv2.cvtColor(analysis.crop, cv2.COLOR_RGB2LAB).astype(np.float32)[face]
            skin = np.median(lab, axis=0) * [100 / 255, 1, 1] - [0, 128, 128]
        return checks.plausible_hands(self.body(analysis).hands, float(box[3] - box[1]), analysis.image, skin)

    def source_hair(self, analysis: FaceAnalysis) -> "compositing.HairLayer":
        """A source photo's hair as a layer in its own work frame (:func:`matting.pull_hair`),
        matted once for the last :data:`MATTES_KEPT` source photos (a source tried on the next
        target too, or on a target mapped again in its wide frame, costs nothing more; older
        analyses in the cache let their layer go: about 30 MB each)."""
        layer = analysis.__dict__.get("hair_layer")
        if layer is None:
            layer = matting.pull_hair(analysis.crop, analysis.semantic.prob(HAIR), matting.face_size(analysis.points),
                                      background=analysis.semantic.labels == BACKGROUND, inside=analysis.inside)
            with self._lock:
                analysis.__dict__["hair_layer"] = layer
                self._matted.append(analysis)
                while len(self._matted) > MATTES_KEPT:
                    self._matted.pop(0).__dict__.pop("hair_layer", None)
        return layer

    def body(self, analysis: FaceAnalysis):
        """Shoulders and hands of a photo's person (:class:`landmarks.Body`), found once."""
        if "body" not in analysis.__dict__:
            from .landmarks import default_body_landmarker

            f = analysis.frame
            analysis.__dict__["body"] = default_body_landmarker()(analysis.image, (f.x0, f.y0, f.x0 + f.side, f.y0 + f.side))
        return analysis.__dict__["body"]

    def regions(self, tgt: FaceAnalysis) -> "mapping.TargetRegions":
        """The target's old hair, face outline and body outline in its frame, found once."""
        if "regions" not in tgt.__dict__:
            from .landmarks import face_oval_indices

            body = self.body(tgt)
            shoulders = None if body.shoulders is None else tgt.frame.to_frame_points(body.shoulders)
            tgt.__dict__["regions"] = mapping.target_regions(
                tgt.crop, tgt.semantic.labels, tgt.semantic.prob(HAIR), tgt.frame.to_frame_points(tgt.landmarks.mesh),
                face_oval_indices(), shoulders, tgt.inside, tgt.unit)
        return tgt.__dict__["regions"]

    def reference_colour(self, color, tgt: FaceAnalysis, target: ImageLike = None) -> Optional["colour.HairColour"]:
        """The hair colour ``color`` asks for (see :meth:`__call__`), measured once per photo:
        None for the source's own; 'keep': the target's (``tgt``); a photo: its hair, parsed like
        any input (it needs a face and visible hair, not a usable hairstyle). Too little hair
        raises :class:`colour.TooLittleHair` naming the photo."""
        if color is None or isinstance(color, colour.HairColour):
            return color
        if isinstance(color, str) and color == "keep":
            return _measured(tgt, describe(tgt.photo.name if tgt.photo else "", "target"))
        if not isinstance(color, (str, os.PathLike, np.ndarray, PILImage, Photo)):
            raise HairTryOnError(f"color must be None, 'keep' or a photo (a path, PIL image or array), not "
                                 f"{type(color).__name__}.")
        ref = self.analyze(color, 0, colour.REFERENCE)  # no face: the message names the photo
        return _measured(ref, describe(ref.photo.name if ref.photo else "", colour.REFERENCE))

    def catalog(self, target: ImageLike, styles, color=None, progress: bool = False, out_dir=None,
                keep_images: bool = True, **options) -> "catalog.Catalog":
        """Every hairstyle of ``styles`` (a folder, or a list of paths, PIL images or arrays) on
        one ``target``: a :class:`catalog.Catalog` (its ``gallery()`` is the labelled grid). The
        target is analysed once; a style that fails (unreadable, no face, declined) is kept
        with its reason and the rest go on. ``color`` applies to every style. Files are written
        only with ``out_dir`` (each result at full resolution). ``options``: those of
        :meth:`__call__`."""
        from . import catalog

        return catalog.run(self, target, styles, color=color, progress=progress, out_dir=out_dir,
                           keep_images=keep_images, **options)

    def map_hair(self, tgt: FaceAnalysis, src: FaceAnalysis, clock: Optional[_Clock] = None,
                 colour_ref: Optional["colour.HairColour"] = None) -> "Mapping":
        """Face and hair mapping (paper 3.2): transform, cropping, replacing, in the target's frame.
        ``colour_ref``: the new hair's colour (None: the source's own)."""
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
            # hair that the source photo cuts off goes on beyond its border with its own strands
            # (mirrored there by the matting) and thins out a little way on, like hair tips,
            # instead of ending in a straight line; where the target photo ends too it goes on
            src_photo = alignment.warp_labels(src.inside.astype(np.uint8), warp, (s, s)) > 0
            beyond = cv2.distanceTransform((~src_photo).astype(np.uint8), cv2.DIST_L2, 3)
            reach = max(2.0, CUT_HAIR_REACH * tgt.unit)
            fade = np.where(inside, 1.0 - smoothstep(beyond / reach), 1.0).astype(np.float32)

        with clock("matting"):  # 3.2.3: the source's hair as a layer, matted in the photo it was shot in
            with ThreadPoolExecutor(max_workers=1) as pool:  # meanwhile, the target's old hair is found
                pending = pool.submit(self.source_hair, src)
                regions = self.regions(tgt)
                layer = pending.result()
            layer = matting.warp_layer(layer, warp, (s, s))
            upscale = matting.warp_scale(warp, src.points.mean(axis=0))  # source frame px -> target frame px
            layer = matting.match_grain(layer, tgt.grain, src.grain, upscale)
            layer.alpha *= fade
            hair_upscale = upscale * f.side / f.size  # source frame px -> target photo px

        with clock("cropping"):  # 3.2.3
            source_hair = layer.alpha.copy()
            removed = regions.removed
            # skin under the new hairstyle: the target's face, and the source's forehead up to its
            # hairline where the old hair covered it
            face = regions.face | ((warped_labels == FACE) & tgt.forehead_column() & removed)
            u = tgt.unit
            chin_y = tgt.points[3, 1]
            gaps = mapping.side_gaps(layer.mask, face, removed, width=int(u / 10), below=chin_y,
                                     mass=u / 40, min_area=(u / 40) ** 2) & inside
            # hair that lay against the source's cheek lies against this one (no sliver of wall)
            gaps |= mapping.hair_against_face(layer.alpha, face, (tgt.semantic.labels == BACKGROUND) & ~removed,
                                              warped_labels == FACE, width=int(u / 20),
                                              above=tgt.eyes_y, below=chin_y,
                                              mass=u / 40, min_area=(u / 40) ** 2,
                                              rim_px=max(1.5, u / 300), image=tgt.crop,
                                              foreground=layer.foreground) & inside
            # (the face's outline, wider than the parsed face at a temple, is no skin where the
            # target shows its own background there)
            shown = face & ~((tgt.semantic.labels == BACKGROUND) & ~removed)
            gaps |= mapping.enclosed_by_hair(shown, layer.alpha, above=tgt.eyes_y,
                                             rim_px=max(2.0, u / 100)) & inside
            fg, alpha = rebuild.grow_hair(layer.foreground, layer.alpha, gaps, unit=u)
            # long hair that went behind the source's shoulders goes behind the target's clothes
            # (its own, seen: not what the rebuild will invent under the old hair)
            parts = tgt.semantic.parts
            clothes = (tgt.semantic.labels == NECK) & ~removed & inside
            if "cloth" in parts:
                clothes &= parts["cloth"] > parts["neck_skin"]
            alpha = mapping.hair_behind_body(alpha, (warped_labels == NECK) & src_photo, clothes,
                                             regions.neck, below=chin_y, touch=u / 50, margin=u / 25,
                                             source_photo=src_photo | ~inside)  # (no cut seen past the target photo)
            layer = compositing.HairLayer(alpha, fg)
            skin = mapping.skin_under_hairline(face, layer.alpha, removed, band_px=u / 40,
                                               above=tgt.eyes_y)
            under = mapping.under_hair(tgt.semantic.labels, removed, skin, regions.body & ~face)
            intended = mapping.mapping_mask(under, layer.mask)

        with clock("replacing"):  # 3.2.4, with the old hair's place rebuilt from the target itself
            hidden = cv2.erode((layer.alpha > 0.99).astype(np.uint8), disk(max(2, u / 200))).astype(bool)
            hairless = self._rebuild(tgt, tgt.crop, removed & ~hidden & inside, under)
            composite = compositing.replace_hair(hairless, layer)
            plain = None
            if colour_ref is not None:  # --color: the same strands in another colour; the re-parse sees the source's
                plain, layer = composite, colour.recolour_layer(layer, colour_ref)
                composite = compositing.replace_hair(hairless, layer)
        return Mapping(align, warp, warped, warped_labels, layer, source_hair, removed, under, intended, hairless,
                       composite, hair_upscale=hair_upscale, colour=colour_ref, plain=plain, tinted=regions.tinted)

    def _rebuild(self, tgt: FaceAnalysis, image: np.ndarray, hole: np.ndarray, under: np.ndarray,
                 shade_done: bool = False, avoid: Optional[np.ndarray] = None) -> np.ndarray:
        """:func:`rebuild.rebuild` of ``hole`` in the target's frame, from its own pixels.
        ``shade_done``: ``image`` already has the old hair's shade and halo made good (the
        mapping image): they are not made good again. ``avoid``: (S, S) bool pixels of ``image``
        that are no source (the new hair over the target's pixels)."""
        s = tgt.frame.size
        regions = self.regions(tgt)
        features = mapping.features_mask(tgt.frame.to_frame_points(tgt.landmarks.mesh), s, grow=max(2, tgt.unit / 100))
        parts = tgt.semantic.parts
        cloth = (parts["cloth"] > parts["neck_skin"]) if "cloth" in parts else None
        known = ~regions.removed & tgt.inside
        if avoid is not None:
            known &= ~avoid
        return rebuild.rebuild(image, hole, under, known, features, regions.neck, cloth, regions.mirror,
                               unit=tgt.unit, mesh=tgt.frame.to_frame_points(tgt.landmarks.mesh),
                               body_mirror=regions.body_mirror, tinted=None if shade_done else regions.tinted).image

    def fast_marching(self, tgt: FaceAnalysis, mapping: "Mapping", clock: Optional[_Clock] = None):
        """Paper 3.3.1: parse the mapping image again; where it disagrees with the mapping mask
        lie the artifacts, filled by fast marching. Returns (filled (S, S, 3) uint8, artifacts
        (S, S) bool, the re-parse :class:`SemanticMap`)."""
        clock = clock or _Clock(None)
        with clock("reparse"):
            parsed = self.parse_crop(mapping.composite if mapping.plain is None else mapping.plain)
            if tgt.person is not None:  # the target's own body, as its analysis saw it (not the old hair's place)
                person = np.where(mapping.removed, 0.0, tgt.person).astype(np.float32)
                parsed = segmentation.body_from_person(parsed, person, tgt.points[3], guard=tgt.unit / 60)
        with clock("fast_marching"):
            u = tgt.unit
            # the target's face stays its own; the new hair's fringe is no artifact (a fill there
            # would cut its soft edge off in a smear of hair and background), nor a fill's source
            fringe = mapping.layer.alpha > FRINGE_ALPHA
            keep = ~tgt.inside | (tgt.semantic.labels == FACE) | fringe
            # nor are the target's own pixels that the replacing left as they were and its own
            # parse saw as no hair: a re-parse that calls them hair now sees the new hair beside
            # them (dark background beside dark hair), and a fill could only make them worse
            own = ~mapping.removed & (tgt.semantic.labels != HAIR)
            if mapping.tinted is not None:
                own &= ~mapping.tinted
            keep |= own
            artifacts = inpainting.find_artifacts(parsed.labels, mapping.intended, min_width=max(3, int(u / 100)),
                                                  keep=keep)
            known = ~artifacts & tgt.inside & ~fringe
            # an artifact that looks like the scene around it, not like either hair, is the
            # re-parse's mistake: left as the rebuild made it (judged on the image the re-parse
            # saw: with --color, the hair in the source's own colour, so that the artifacts do
            # not depend on the colour asked for)
            seen = mapping.composite if mapping.plain is None else mapping.plain
            colours = inpainting.hair_colours(seen, mapping.layer.alpha, tgt.crop,
                                              (tgt.semantic.labels == HAIR) & tgt.inside)
            artifacts &= ~inpainting.hairless_artifacts(seen, artifacts, mapping.intended, known, colours,
                                                        reach=u / 30)
            known = ~artifacts & tgt.inside & ~fringe

            def rebuild_large(image, hole):
                return self._rebuild(tgt, image, hole, mapping.under, shade_done=True, avoid=fringe)

            final = inpainting.fast_marching(mapping.composite, artifacts, mapping.intended, known=known,
                                             large=(u / 25) ** 2, rebuild_large=rebuild_large)
        return final, artifacts, parsed


@dataclass
class SDEditOutcome:
    """SDEdit's part of a try-on, in the target's work frame. ``image``: (S, S, 3) uint8 the
    refined frame; ``keep``: (S, S) bool the kept pixels (exactly the input's); ``region``:
    (S, S) float32, 1 where SDEdit may change pixels; ``refined``: the head crop as the model
    left it (at the frame's resolution); ``crop``: that head crop's box in the frame; ``given``:
    the head crop SDEdit was given (the classic result as the photo shows it), same size."""

    image: np.ndarray
    keep: np.ndarray
    region: np.ndarray
    refined: np.ndarray
    crop: Frame
    given: Optional[np.ndarray] = None


@dataclass
class Mapping:
    """The target's work frame after face and hair mapping (paper 3.2). Images (S, S, 3) uint8,
    masks (S, S) bool, labels (S, S) uint8.

    ``alignment``: the transform in photo coordinates; ``warp``: (3, 3) source frame -> target
    frame. ``warped``/``warped_labels``: the source and its labels on the target's head.
    ``layer``: the new hair (matte and colours); ``source_hair``: the warped source hair's own
    matte (float32) before the layer was grown into gaps beside the face. ``removed``: where the
    target's old hair was. ``under``: what lies under the old hair (labels without the new hair).
    ``intended``: the mapping mask. ``hairless``: the target with the old
    hair's place rebuilt. ``composite``: the mapping image, the new hair over ``hairless``.
    ``hair_upscale``: how many target photo pixels one pixel of the source's frame became.
    ``colour``: the colour the new hair was given (None: the source's own); ``plain``: then the
    mapping image in the source's own colour, which the re-parse looks at (the artifacts do not
    depend on the colour: a parser takes pale pink hair for skin). ``tinted``: the pixels beside
    the old hair whose tone was made good (its shade on the face, its tint in the background),
    their texture kept.
    """

    alignment: "alignment.Alignment"
    warp: np.ndarray
    warped: np.ndarray
    warped_labels: np.ndarray
    layer: matting.HairLayer
    source_hair: np.ndarray
    removed: np.ndarray
    under: np.ndarray
    intended: np.ndarray
    hairless: np.ndarray
    composite: np.ndarray
    hair_upscale: float = 1.0
    changed_alpha: Optional[np.ndarray] = None  # (S, S) float32: where the try-on rebuilt, feathered
    classic: Optional[np.ndarray] = None  # (S, S, 3) uint8: the fast-marching result (before SDEdit)
    colour: Optional["colour.HairColour"] = None
    plain: Optional[np.ndarray] = None
    tinted: Optional[np.ndarray] = None


def _stage_pictures(tgt: FaceAnalysis, src: FaceAnalysis, mapping: Mapping, parsed: Optional[SemanticMap],
                    artifacts: np.ndarray, final: np.ndarray, image: np.ndarray,
                    edit: Optional[SDEditOutcome] = None) -> Dict[str, np.ndarray]:
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
    if edit is not None:
        # white = kept, black = regenerated (the paper's convention); outside the head crop the
        # model sees, grey
        mask = np.full((s, s, 3), 200, np.uint8)
        c = edit.crop
        rows, cols, brows, bcols = c.roi()
        mask[rows, cols] = np.where(edit.keep[rows, cols, None], 255, 0).astype(np.uint8)
        cv2.rectangle(mask, (c.x0, c.y0), (c.x0 + c.side - 1, c.y0 + c.side - 1), (0, 160, 255), max(1, s // 256))
        stages["SDEdit mask"] = mask
        stages["SDEdit"] = shown(edit.image)
    stages["result"] = shown(tgt.frame.extract(image))
    return stages


def paste_back(image: np.ndarray, frame: Frame, content: np.ndarray, alpha: np.ndarray,
               keep: Optional[np.ndarray] = None, strip: int = 512) -> np.ndarray:
    """Blend work-frame ``content`` ((S, S, 3) uint8, or (S, S) for a one-channel ``image``)
    into the photo ``image`` ((H, W, 3) or (H, W) uint8) with ``alpha`` ((S, S) float32), both
    resampled (bilinear) to the photo's pixels. Where alpha is 0, and wherever ``keep``
    ((S, S) bool, resampled nearest) is True, the photo's pixels are returned unchanged.
    Returns a new image like ``image``.

    Only the photo's rows and columns under ``alpha > 0`` are resampled, in bands of ``strip``
    rows, so a 12000x12000 photo costs one copy of itself and a few bands."""
    out = image.copy()
    rows, cols, _, _ = frame.roi()
    sel = alpha > 0
    if keep is not None:
        sel &= ~keep
    ys, xs = np.nonzero(sel.any(axis=1))[0], np.nonzero(sel.any(axis=0))[0]
    if not len(ys):
        return out
    inv = 1.0 / frame.scale  # photo pixels per frame pixel; frame pixel f -> photo (f + 0.5) * inv - 0.5 + x0
    iy0 = max(rows.start, int(np.floor(frame.y0 + (ys[0] - 1) * inv)))
    iy1 = min(rows.stop, int(np.ceil(frame.y0 + (ys[-1] + 2) * inv)) + 1)
    ix0 = max(cols.start, int(np.floor(frame.x0 + (xs[0] - 1) * inv)))
    ix1 = min(cols.stop, int(np.ceil(frame.x0 + (xs[-1] + 2) * inv)) + 1)
    if iy1 <= iy0 or ix1 <= ix0:
        return out
    to_frame = frame.matrix()
    alpha = np.ascontiguousarray(alpha, np.float32)
    linear = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # ``keep`` is sampled as cv2.resize(INTER_NEAREST) samples it (what Frame.to_image_box gives)
    nearest_step = 1.0 / (frame.side / frame.size)
    keep_cols = None
    if keep is not None:
        keep_cols = np.minimum(np.floor((np.arange(ix0, ix1) - frame.x0) * nearest_step).astype(np.int64),
                               frame.size - 1)
    for y0 in range(iy0, iy1, strip):
        y1 = min(y0 + strip, iy1)
        m = (to_frame @ np.array([[1.0, 0.0, ix0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]]))[:2]  # band pixel -> frame
        size = (ix1 - ix0, y1 - y0)
        a = cv2.warpAffine(alpha, m, size, flags=linear, borderMode=cv2.BORDER_REPLICATE)
        if keep is not None:
            keep_rows = np.minimum(np.floor((np.arange(y0, y1) - frame.y0) * nearest_step).astype(np.int64),
                                   frame.size - 1)
            a[keep[keep_rows[:, None], keep_cols[None, :]]] = 0
        if not (a > 0).any():
            continue
        c = cv2.warpAffine(content, m, size, flags=linear, borderMode=cv2.BORDER_REPLICATE)
        region = out[y0:y1, ix0:ix1]
        # (1 - a) * photo + a * content, rounded; exactly the photo's pixel where a == 0
        np.clip(a, 0.0, 1.0, out=a)
        region[...] = cv2.blendLinear(np.ascontiguousarray(region), c, 1.0 - a, a)
    return out


def classic_layers(mapping: "Mapping", final: np.ndarray, rebuilt: np.ndarray):
    """The classic result as one layer over the target: (content (S, S, 3) uint8, weight (S, S)
    float32). What was rebuilt (the mapping's hairless target, the artifacts filled by fast
    marching: ``rebuilt`` (S, S) bool, taken from ``final``) goes in by the changed region's
    feathered weight c, the new hair over it by its matte a, so that every pixel gets the hair at
    its matte's weight once: weight 1 - (1 - c)(1 - a), content (c (1 - a) rebuilt + a hair) /
    weight. Where the weight is 0 the content is ``final``'s own pixels (resampling blends
    neighbours: a black there would darken the seam)."""
    layer = mapping.layer
    c, a = mapping.changed_alpha.astype(np.float32)[..., None], layer.alpha.astype(np.float32)[..., None]
    background = np.where(rebuilt[..., None], final, mapping.hairless).astype(np.float32)
    p = c + a - c * a
    content = (c * (1 - a) * background + a * layer.foreground) / np.maximum(p, 1e-6)
    content = np.where(p > 1e-3, content, final)
    return np.clip(np.round(content), 0, 255).astype(np.uint8), p[..., 0]


def _paste_result(tgt: FaceAnalysis, mapping: "Mapping", final: np.ndarray, paste_alpha: np.ndarray,
                  keep: Optional[np.ndarray], rebuilt: np.ndarray, edit: Optional["SDEditOutcome"] = None):
    """The try-on's work frame pasted back into the target photo, in the photo's own kind:
    a grey target gets the new content in grey; a target with transparency gets its alpha
    pasted back too (the new hair's alpha is its matte; where the old hair's place was rebuilt
    the alpha is rebuilt from the alpha around it). The classic result goes in as
    :func:`classic_layers` says; SDEdit's regenerated region (``edit``) replaces it there, its
    kept pixels (``keep``) stay the photo's own. ``rebuilt``: (S, S) bool artifacts filled by
    fast marching. Returns (image (H, W, 3) uint8, alpha (H, W) uint8 or None)."""
    photo = tgt.photo
    if mapping.changed_alpha is not None:
        content, p = classic_layers(mapping, final if edit is None else mapping.classic, rebuilt)
        if edit is not None:
            region = edit.region.astype(np.float32)
            content = np.where(region[..., None] > 0, edit.image, content)
            p = np.maximum(p, region)
        if photo is not None and photo.grey:
            content = grey_rgb(content)
        image = paste_back(tgt.image, tgt.frame, content, p, keep=keep)
    else:
        if photo is not None and photo.grey:
            final = grey_rgb(final)
        image = paste_back(tgt.image, tgt.frame, final, paste_alpha, keep=keep)
    if photo is None or photo.alpha is None:
        return image, None
    base = tgt.frame.extract(photo.alpha)
    holes = (mapping.removed | rebuilt).astype(np.uint8)
    if holes.any():
        base = cv2.inpaint(base, holes, 3, cv2.INPAINT_TELEA)
    hair = mapping.layer.alpha.astype(np.float32)
    content = np.clip(np.round(255.0 * hair + (1.0 - hair) * base.astype(np.float32)), 0, 255).astype(np.uint8)
    return image, paste_back(photo.alpha, tgt.frame, content, paste_alpha, keep=keep)


def _faces_note(what: str, role: str, found: int, index: int) -> list:
    """The warning for a photo with several faces: how many, which was used, how to choose."""
    if found <= 1:
        return []
    used = "face 0 (the largest)" if index == 0 else f"face {index}"
    return [f"{what} shows {found} faces; {used} was used: choose another with --{role}-face N "
            f"(0 to {found - 1}, largest first)."]


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
