"""Stage 1 of the method (paper 3.1): semantic maps with the method's 5 classes.

Classes (ids): 0 background, 1 hair, 2 face, 3 ears, 4 neck+clothes. Face = skin, brows, eyes,
glasses, nose, mouth, lips; ears = ears and earrings; neck+clothes = neck, necklace, cloth;
a hat counts as hair.

Segmenters sit behind one small interface (:class:`Segmenter`): they take a face-centred crop
and return class probabilities. :func:`parse` finds the face, frames the crop, runs the
segmenter and maps the labels back to the whole photo.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol, Tuple, runtime_checkable

import cv2
import numpy as np

from .errors import HairTryOnError, NoFaceFound
from .framing import Frame, resize

CLASSES = ("background", "hair", "face", "ears", "neck_clothes")
BACKGROUND, HAIR, FACE, EARS, NECK = range(5)
# Colours of the rendering: hair red as in the paper's figures, face blue as in LOHO's masks.
PALETTE = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255), (255, 255, 0), (0, 255, 0)], np.uint8)

# CelebAMask-HQ part order (the dataset's label ids) -> 5 classes.
CELEBAMASK_PARTS = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
# The pretrained BiSeNet's output order (same parts, different order).
BISENET_PARTS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                 "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
PART_TO_CLASS: Dict[str, int] = {
    "background": BACKGROUND,
    "skin": FACE, "nose": FACE, "eye_g": FACE, "l_eye": FACE, "r_eye": FACE, "l_brow": FACE, "r_brow": FACE,
    "mouth": FACE, "u_lip": FACE, "l_lip": FACE,
    "l_ear": EARS, "r_ear": EARS, "ear_r": EARS,
    "hair": HAIR, "hat": HAIR,
    "neck": NECK, "neck_l": NECK, "cloth": NECK,
}


def part_lut(parts: Tuple[str, ...]) -> np.ndarray:
    """(256,) uint8 lookup table from a 19-part label order to the 5 classes (unknown ids -> 0)."""
    lut = np.zeros(256, np.uint8)
    for i, p in enumerate(parts):
        lut[i] = PART_TO_CLASS[p]
    return lut


CELEBAMASK_TO_5 = part_lut(CELEBAMASK_PARTS)
BISENET_TO_5 = part_lut(BISENET_PARTS)


@dataclass
class SemanticMap:
    """A semantic map of an image.

    ``labels``: (H, W) uint8 class ids (see :data:`CLASSES`).
    ``probs``: (5, H, W) float32 class probabilities (sum to 1 per pixel), or None.
    ``meta``: how it was made (segmenter, frame, notes).
    ``parts``: finer parts where the segmenter tells them apart, each (H, W) float32
    probability: ``hat`` (headwear, counted as hair in the 5 classes), ``neck_skin`` and
    ``cloth`` (the two halves of neck+clothes). Empty for segmenters that only know the 5 classes.
    """

    labels: np.ndarray
    probs: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)
    parts: Dict[str, np.ndarray] = field(default_factory=dict)

    def mask(self, *classes: int) -> np.ndarray:
        """(H, W) bool: pixels of any of ``classes``."""
        return np.isin(self.labels, classes)

    def prob(self, cls: int) -> np.ndarray:
        """(H, W) float32 probability of ``cls`` (the hard mask as 0/1 when no probs were kept)."""
        if self.probs is None:
            return (self.labels == cls).astype(np.float32)
        return self.probs[cls]

    def colorize(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB rendering of the labels with :data:`PALETTE`."""
        return PALETTE[self.labels]

    def overlay(self, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The rendering blended over ``image`` ((H, W, 3) uint8)."""
        return cv2.addWeighted(image, 1.0 - alpha, self.colorize(), alpha, 0.0)


@runtime_checkable
class Segmenter(Protocol):
    """A model that parses a face-centred crop into the 5 classes.

    ``input_size``: the side of the square crop it works best at (the crop is resized to it).
    ``predict(crop)``: (S, S, 3) uint8 RGB with S = input_size -> (5, S, S) float32 probabilities.
    A segmenter that tells finer parts apart may also offer ``predict_parts(crop)`` -> (the same
    probabilities, {part name: (S, S) float32}) with the parts of :attr:`SemanticMap.parts`.
    """

    name: str
    input_size: int

    def predict(self, crop: np.ndarray) -> np.ndarray: ...


def imagenet_normalise(crop: np.ndarray):
    """(S, S, 3) uint8 RGB -> (1, 3, S, S) float32 torch tensor, ImageNet mean/std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


class BiSeNetSegmenter:
    """The pretrained CelebAMask-HQ BiSeNet (19 parts), its parts summed into the 5 classes."""

    name = "bisenet"
    input_size = 512

    def __init__(self, weights_path: Optional[str] = None, device: str = "cpu"):
        import torch

        from . import weights
        from .models.bisenet import BiSeNet

        path = weights_path or weights.ensure("bisenet")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise HairTryOnError(f"cannot load face-parser weights {path}: {exc}") from None
        net = BiSeNet(19)
        net.load_state_dict(state, strict=True)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device, memory_format=torch.channels_last)
        groups = np.zeros((5, 19), np.float32)
        for i, part in enumerate(BISENET_PARTS):
            groups[PART_TO_CLASS[part], i] = 1.0
        self._groups = torch.from_numpy(groups)
        self._lock = threading.Lock()

    def predict(self, crop: np.ndarray) -> np.ndarray:
        return self.predict_parts(crop)[0]

    def predict_parts(self, crop: np.ndarray):
        """(5, S, S) class probabilities and the finer parts {hat, neck_skin, cloth}: (S, S) each."""
        import torch

        x = imagenet_normalise(crop).to(self.device, memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            logits = self.net(x)[0].float().cpu()
        p19 = torch.softmax(logits, dim=0)
        parts = {name: p19[BISENET_PARTS.index(part)].numpy()
                 for name, part in (("hat", "hat"), ("neck_skin", "neck"), ("cloth", "cloth"))}
        return torch.einsum("kc,chw->khw", self._groups, p19).numpy(), parts


def load_segmenter(spec: str = "bisenet", device: str = "cpu") -> Segmenter:
    """A segmenter by name: ``bisenet`` (default, pretrained) or ``unet:PATH`` (a checkpoint
    trained with ``hairtryon train-segmenter``). On the CPU the pretrained BiSeNet runs from its
    ONNX export in OpenCV's DNN module (no torch import, about 4x faster; see
    :mod:`hairtryon.bisenet_onnx`), else in torch."""
    spec = (spec or "bisenet").strip()
    if spec == "bisenet":
        if str(device) == "cpu":
            from . import bisenet_onnx

            dnn = bisenet_onnx.load()
            if dnn is not None:
                return dnn
        return BiSeNetSegmenter(device=device)
    if spec.startswith("unet:"):
        from .unet_segmenter import UNetSegmenter  # noqa: WPS433 (optional backend)

        return UNetSegmenter.from_checkpoint(spec[len("unet:"):], device=device)
    raise HairTryOnError(f"unknown segmenter '{spec}': use 'bisenet' or 'unet:PATH'.")


_SEGMENTERS: Dict[str, Segmenter] = {}
_SEG_LOCK = threading.Lock()


def get_segmenter(spec: str = "bisenet") -> Segmenter:
    """A process-wide cached segmenter (each model loaded once per process)."""
    with _SEG_LOCK:
        if spec not in _SEGMENTERS:
            _SEGMENTERS[spec] = load_segmenter(spec)
        return _SEGMENTERS[spec]


# Parsers see a slightly wider crop than the FFHQ framing: hair at the crop's edge is parsed
# badly (measured on ../shared/faces: hair IoU 0.926 at 1.0, 0.954 at 1.1 on maskgan).
PARSE_FRAME_SCALE = 1.1


def segment_frame(image: np.ndarray, frame: Frame, segmenter: Segmenter, parts: bool = False):
    """Class probabilities of the ``frame`` of ``image``: (5, frame.size, frame.size) float32.
    Parts of the frame outside the image are mirrored in for the segmenter. With ``parts``,
    returns (probabilities, {part: (frame.size, frame.size) float32}) (empty when the segmenter
    has no ``predict_parts``)."""
    crop = frame.with_size(segmenter.input_size).extract(image, border=cv2.BORDER_REFLECT_101)
    extra = {}
    if parts and hasattr(segmenter, "predict_parts"):
        probs, extra = segmenter.predict_parts(crop)
    else:
        probs = segmenter.predict(crop)
    if frame.size != segmenter.input_size:
        size = (frame.size, frame.size)
        probs = resize(probs.transpose(1, 2, 0), size, cv2.INTER_LINEAR).transpose(2, 0, 1)
        extra = {k: resize(v, size, cv2.INTER_LINEAR) for k, v in extra.items()}
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    return (probs, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in extra.items()}) if parts else probs


def parser_frame(image: np.ndarray, size: int, landmarks=None) -> Tuple[Frame, Optional[str]]:
    """The crop a segmenter of input ``size`` sees of ``image`` ((H, W, 3) uint8 RGB): the
    (largest) face's ``head_frame(size, PARSE_FRAME_SCALE)`` from ``landmarks`` (detected when
    not given), or the whole image when no face is found (the note then says so)."""
    from .landmarks import detect_landmarks

    try:
        lm = landmarks if landmarks is not None else detect_landmarks(image)
        return lm.head_frame(size, PARSE_FRAME_SCALE), None
    except NoFaceFound:
        return Frame.whole(image.shape[:2], size), "no face found: the whole image was parsed"


def labels_from_probs(probs: np.ndarray) -> np.ndarray:
    """(5, H, W) probabilities -> (H, W) uint8 labels."""
    return np.argmax(probs, axis=0).astype(np.uint8)


def parse(image: np.ndarray, segmenter: Optional[Segmenter] = None, landmarks=None,
          frame: Optional[Frame] = None, keep_probs: bool = True) -> SemanticMap:
    """Parse a photo ((H, W, 3) uint8 RGB) into a :class:`SemanticMap` of the same size.

    The parser sees a face-centred crop framed like its training portraits (from ``landmarks``,
    detected when not given); pixels outside that crop are background. When no face is found,
    the whole image is parsed as one crop and ``meta['note']`` says so.
    """
    segmenter = segmenter or get_segmenter("bisenet")
    h, w = image.shape[:2]
    note = None
    if frame is None:
        frame, note = parser_frame(image, segmenter.input_size, landmarks)
    probs_f = segment_frame(image, frame.with_size(segmenter.input_size), segmenter)
    probs = np.zeros((5, h, w), np.float32)
    probs[BACKGROUND] = 1.0
    rows, cols, brows, bcols = frame.roi()
    box = frame.with_size(segmenter.input_size).to_image_box(probs_f.transpose(1, 2, 0))
    probs[:, rows, cols] = box[brows, bcols].transpose(2, 0, 1)
    labels = labels_from_probs(probs)
    meta = {"segmenter": segmenter.name, "frame": frame}
    if note:
        meta["note"] = note
    return SemanticMap(labels, probs if keep_probs else None, meta)


def body_from_person(semantic: SemanticMap, person: np.ndarray, chin, guard: float,
                     threshold: float = 0.7, image: Optional[np.ndarray] = None) -> SemanticMap:
    """The parser's background that is this person's body, as neck+clothes.

    Pixels the parser calls background (``semantic``, (S, S)) and the person segmenter a
    person (``person`` (S, S) float32 > ``threshold``), below the ``chin`` ((x, y), the row
    where the body begins), farther than ``guard`` pixels from the parser's hair (the scene
    seen between strands), in the person region that holds the chin (not other people's bodies),
    become NECK; their background and neck probabilities are swapped so the probabilities
    agree with the labels. With ``image`` ((S, S, 3) uint8, the crop) and the parser's
    ``neck_skin``/``cloth`` parts, those pixels are bare skin where their colour is within
    :data:`SKIN_LIKE` (Lab distance) of the face's median skin, else clothes. Returns a new
    :class:`SemanticMap` (the same one when nothing changes)."""
    labels = semantic.labels
    s_h, s_w = labels.shape
    sure = (person > threshold).astype(np.uint8)
    cx, cy = int(np.clip(round(chin[0]), 0, s_w - 1)), int(np.clip(round(chin[1]), 0, s_h - 1))
    n, comp = cv2.connectedComponents(sure, connectivity=8)
    ids = np.unique(comp[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3])
    ids = ids[ids > 0]
    if n <= 1 or not len(ids):
        return semantic
    own = np.isin(comp, ids)
    hair = (labels == HAIR).astype(np.uint8)
    near_hair = cv2.dilate(hair, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(guard) + 1,) * 2)) > 0
    rows = np.arange(s_h)[:, None] > cy
    body = own & rows & (labels == BACKGROUND) & ~near_hair
    if not body.any():
        return semantic
    new_labels = labels.copy()
    new_labels[body] = NECK
    probs = semantic.probs
    if probs is not None:
        probs = probs.copy()
        bg, nk = probs[BACKGROUND][body], probs[NECK][body]
        probs[BACKGROUND][body], probs[NECK][body] = nk, bg
    parts = semantic.parts
    face = labels == FACE
    if image is not None and "neck_skin" in parts and "cloth" in parts and face.sum() > 100:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        skin = np.median(lab[face], axis=0)
        like = np.linalg.norm(lab[body] - skin, axis=-1) < SKIN_LIKE * 255.0 / 100.0  # OpenCV's L is 0..255
        parts = dict(parts)
        neck_skin, cloth = parts["neck_skin"].copy(), parts["cloth"].copy()
        neck_skin[body], cloth[body] = like.astype(np.float32), (~like).astype(np.float32)
        parts["neck_skin"], parts["cloth"] = neck_skin, cloth
    meta = dict(semantic.meta, body_from_person=int(body.sum()))
    return SemanticMap(new_labels, probs, meta, parts)


SKIN_LIKE = 18.0  # Lab distance to the face's skin within which a body pixel counts as bare skin


def hair_runs_off(labels: np.ndarray, inside: np.ndarray, margin: int = 2) -> bool:
    """Whether the hair in ``labels`` ((S, S) uint8) reaches the frame's own border where the
    photo goes on beyond it (``inside`` (S, S) bool: frame pixels inside the photo)."""
    hair = labels == HAIR
    edge = np.zeros_like(hair)
    edge[:margin, :] = edge[-margin:, :] = True
    edge[:, :margin] = edge[:, -margin:] = True
    return bool((hair & edge & inside).sum() > 4 * labels.shape[0] / 100)


def segment_wide(image: np.ndarray, small: Frame, wide: Frame, segmenter: Segmenter, small_probs: np.ndarray,
                 small_parts: Dict[str, np.ndarray]):
    """Class probabilities and parts on the ``wide`` frame, for hair that runs off the ``small``
    one: the segmenter parses the wide frame, and inside the small frame (where the face is big
    enough to be parsed best) its own parse ``small_probs`` ((5, s, s)) and ``small_parts`` are
    kept, blended over a band at its border. Returns ((5, W, W) float32, {part: (W, W)})."""
    probs, parts = segment_frame(image, wide, segmenter, parts=True)
    scale = wide.scale
    x0 = int(round((small.x0 - wide.x0) * scale))
    y0 = int(round((small.y0 - wide.y0) * scale))
    side = int(round(small.side * scale))
    w = wide.size
    # the small frame's box in the wide frame, clipped
    bx0, by0, bx1, by1 = max(0, x0), max(0, y0), min(w, x0 + side), min(w, y0 + side)
    if bx1 <= bx0 or by1 <= by0:
        return probs, parts
    ramp = np.minimum.outer(np.minimum(np.arange(side), np.arange(side)[::-1]),
                            np.minimum(np.arange(side), np.arange(side)[::-1])).astype(np.float32)
    weight = np.clip(ramp / max(2.0, 0.08 * side), 0, 1)
    rows, cols = slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0)
    wgt = weight[rows, cols]

    def paste(big: np.ndarray, little: np.ndarray) -> None:
        up = resize(little, (side, side), cv2.INTER_LINEAR)[rows, cols]
        region = big[by0:by1, bx0:bx1]
        region[...] = wgt * up + (1 - wgt) * region

    for k in range(probs.shape[0]):
        paste(probs[k], small_probs[k])
    for name in parts:
        if name in small_parts:
            paste(parts[name], small_parts[name])
    return probs, parts
