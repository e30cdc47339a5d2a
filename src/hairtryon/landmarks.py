"""Stage 2 of the method (paper 3.2.1): MediaPipe Face Mesh and the method's 4 points.

The 4 points, in pixel coordinates (x, y) of the original image, in this order:
``forehead`` (mesh 10, top of the forehead on the midline), ``left_eye`` and ``right_eye``
(centres of the eye contours; *left* is the eye on the image's left, i.e. the subject's right
eye), ``chin`` (mesh 152).

Faces are searched so that any face a person would call clearly visible is found: frontal or
turned (three-quarter views, near-profiles), small in a group photo or filling a 6000-pixel
photo, cut by the photo's border. MediaPipe's detectors see copies of at most
:data:`DETECT_SIDE` pixels (MediaPipe samples larger images without smoothing, and then misses
faces); MediaPipe's full-range face detector backs up Face Mesh's own short-range one, on the
whole photo (padded, for faces cut by the border) and on overlapping tiles (small faces); the
faces it finds are meshed on crops around them; a photo where nothing is found is tried again
turned by 90, 270 and 180 degrees. Faces narrower than :data:`MIN_FACE_PX` pixels are not
reported.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import types
from dataclasses import dataclass
from typing import List, Optional

import cv2
import numpy as np

from .errors import NoFaceFound
from .framing import Frame

FOREHEAD, CHIN = 10, 152
# Eye contours of the canonical mesh. Image-left eye = subject's right eye (mesh "RIGHT_EYE").
IMAGE_LEFT_EYE = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
IMAGE_RIGHT_EYE = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
MOUTH_CORNERS = (61, 291)
EYEBROWS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
POINT_NAMES = ("forehead", "left_eye", "right_eye", "chin")
# The two eyebrows' points, each with its mirror partner (the canonical mesh is symmetric):
# (subject's right brow = image-left, subject's left brow = image-right), along both brows' chains.
BROW_PAIRS = ((46, 276), (53, 283), (52, 282), (65, 295), (55, 285),
              (70, 300), (63, 293), (105, 334), (66, 296), (107, 336))
# Mirror pairs of the mesh (the point on the image's left of a frontal face first): their 3-D
# directions give the head's left-right axis, hence its yaw.
YAW_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (127, 356), (93, 323), (132, 361), (58, 288),
             (172, 397), (136, 365), (70, 300), (105, 334), (50, 280), (205, 425))

MIN_FACE_PX = 20  # faces narrower than this (mesh width, pixels) are not reported (MediaPipe finds 20 px faces)
DETECT_SIDE = 1024  # MediaPipe's detectors see copies at most this large (area-averaged)
# Crops a face found by the full-range detector is meshed on, tried in this order until one
# gives a mesh: (crop side / detection box side, largest crop resolution, border).
_MESH_CROPS = ((2.2, 512, "constant"), (2.0, 1024, "replicate"), (3.0, 1024, "constant"),
               (1.5, 512, "replicate"), (2.2, 256, "constant"), (4.0, 256, "replicate"))


class _Deferred(types.ModuleType):
    """Stands in for a module that MediaPipe imports at start-up but the landmarker never uses
    (``matplotlib.pyplot`` for its drawing helpers, ``sounddevice`` for audio tasks: 0.3 to
    0.6 s of every start); the real module is imported on first use of an attribute."""

    def __init__(self, name: str, **attrs):
        super().__init__(name)
        self.__dict__.update(attrs, _real=None)

    def __getattr__(self, attr):
        real = self.__dict__["_real"]
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _mediapipe():
    """``import mediapipe``, without importing matplotlib and sounddevice on the way (see
    :class:`_Deferred`); modules someone already imported are left as they are."""
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    stubs = {}
    if "matplotlib" not in sys.modules:
        stubs["matplotlib.pyplot"] = _Deferred("matplotlib.pyplot")
        stubs["matplotlib"] = _Deferred("matplotlib", pyplot=stubs["matplotlib.pyplot"])
    if "sounddevice" not in sys.modules:
        stubs["sounddevice"] = _Deferred("sounddevice")
    sys.modules.update(stubs)
    try:
        import mediapipe
    finally:  # later imports get the real modules; MediaPipe's references forward to them
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]
    return mediapipe


@functools.lru_cache(maxsize=1)
def face_oval_indices() -> np.ndarray:
    """Mesh indices of the face silhouette, walked in order around the face."""
    _mediapipe()
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    nxt = {}
    for a, b in FACEMESH_FACE_OVAL:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    order, prev, cur = [FOREHEAD], None, FOREHEAD
    while True:
        cand = [n for n in nxt[cur] if n != prev]
        prev, cur = cur, cand[0]
        if cur == FOREHEAD:
            return np.array(order)
        order.append(cur)


@functools.lru_cache(maxsize=1)
def feature_indices() -> dict:
    """Mesh indices of the face's features: {'left_eye', 'right_eye', 'left_brow', 'right_brow',
    'lips'} -> sorted index lists (MediaPipe's own connection sets)."""
    _mediapipe()
    from mediapipe.python.solutions import face_mesh_connections as fmc

    sets = {"left_eye": fmc.FACEMESH_LEFT_EYE, "right_eye": fmc.FACEMESH_RIGHT_EYE,
            "left_brow": fmc.FACEMESH_LEFT_EYEBROW, "right_brow": fmc.FACEMESH_RIGHT_EYEBROW,
            "lips": fmc.FACEMESH_LIPS}
    return {name: sorted({i for pair in part for i in pair}) for name, part in sets.items()}


@dataclass(frozen=True)
class Landmarks:
    """Face landmarks of one face in one image.

    ``mesh``: (468, 2) float32 pixel coordinates (x, y) of the Face Mesh points.
    ``image_hw``: (height, width) of the image they belong to.
    ``depth``: (468,) float32 Face Mesh's relative depth of each point, in the same pixel units
    (smaller is nearer the camera), or None.
    """

    mesh: np.ndarray
    image_hw: tuple
    depth: Optional[np.ndarray] = None

    @property
    def yaw_degrees(self) -> float:
        """Signed head yaw in degrees, from the mesh's 3-D points: 0 for a face looking into the
        camera, positive when the face is turned towards the image's right (the nose points
        right: the person looks to their own left), negative towards the image's left.

        It is the angle between the image plane and the head's left-right axis (the mean
        direction of 14 mirror pairs of mesh points, from the image-left point to its partner),
        so a tilted (rolled) head reads the same. Checked by eye on ``../shared/portraits``:
        within about 10 degrees up to 60 degrees; Face Mesh does not bend much further, so full
        profiles read about 55 to 75 degrees. NaN when the mesh has no depth."""
        if self.depth is None:
            return float("nan")
        pts = np.column_stack([self.mesh, self.depth]).astype(np.float64)
        a, b = np.array(YAW_PAIRS).T
        v = pts[b] - pts[a]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        axis = v.mean(axis=0)
        return float(np.degrees(np.arctan2(axis[2], np.hypot(axis[0], axis[1]))))

    @property
    def points(self) -> np.ndarray:
        """(4, 2) float32: forehead, left eye, right eye, chin (x, y)."""
        return np.stack([self.forehead, self.left_eye, self.right_eye, self.chin]).astype(np.float32)

    @property
    def forehead(self) -> np.ndarray:
        return self.mesh[FOREHEAD]

    @property
    def chin(self) -> np.ndarray:
        return self.mesh[CHIN]

    @property
    def left_eye(self) -> np.ndarray:
        return self.mesh[list(IMAGE_LEFT_EYE)].mean(axis=0)

    @property
    def right_eye(self) -> np.ndarray:
        return self.mesh[list(IMAGE_RIGHT_EYE)].mean(axis=0)

    @property
    def mouth(self) -> np.ndarray:
        return self.mesh[list(MOUTH_CORNERS)].mean(axis=0)

    @property
    def eyebrows(self) -> np.ndarray:
        """(20, 2) float32 points of both eyebrows."""
        return self.mesh[list(EYEBROWS)]

    @property
    def face_box(self) -> np.ndarray:
        """(x0, y0, x1, y1) float32 bounding box of the mesh."""
        return np.concatenate([self.mesh.min(axis=0), self.mesh.max(axis=0)]).astype(np.float32)

    @property
    def face_area(self) -> float:
        x0, y0, x1, y1 = self.face_box
        return float((x1 - x0) * (y1 - y0))

    def face_oval(self) -> np.ndarray:
        """(K, 2) float32 polygon of the face silhouette (forehead top to chin and back)."""
        return self.mesh[face_oval_indices()].astype(np.float32)

    def head_frame(self, size: int, scale: float = 1.0) -> Frame:
        """A square face-centred frame framed like FFHQ / CelebA-HQ portraits (what face parsers
        and face diffusion models are trained on); ``scale`` > 1 widens it (room for long hair)."""
        eye_avg = (self.left_eye + self.right_eye) / 2.0
        eye_to_eye = np.linalg.norm(self.right_eye - self.left_eye)
        eye_to_mouth_v = self.mouth - eye_avg
        eye_to_mouth = np.linalg.norm(eye_to_mouth_v)
        half = max(eye_to_eye * 2.0, eye_to_mouth * 1.8)
        center = eye_avg + eye_to_mouth_v * 0.1
        return Frame.around(center, 2.0 * half * scale, size, self.image_hw)

    def to_dict(self) -> dict:
        d = {name: [round(float(v), 2) for v in p] for name, p in zip(POINT_NAMES, self.points)}
        d["face_box"] = [round(float(v), 2) for v in self.face_box]
        if self.depth is not None:
            d["yaw_degrees"] = round(self.yaw_degrees, 1)
        d["image_size"] = [int(self.image_hw[1]), int(self.image_hw[0])]
        return d




@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence MediaPipe's C++ start-up chatter (it writes to file descriptor 2 directly)."""
    if os.environ.get("HAIRTRYON_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def _scaled_crop(image: np.ndarray, box, size: float, border: str = "constant"):
    """The square ``box`` (x0, y0, side) of ``image`` at ``size`` / side of its resolution, parts
    outside the image padded (constant black or edge replication). Only the part inside the
    image is resized (area averaging when shrinking), so a crop of a huge photo costs little.
    Returns (crop (n, n, 3) uint8, back): ``_to_image(points, back)`` takes crop points to the
    image's pixels."""
    h, w = image.shape[:2]
    x0, y0, side = (float(v) for v in box)
    scale = size / side
    n = max(1, int(round(side * scale)))
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(w, int(np.ceil(x0 + side))), min(h, int(np.ceil(y0 + side)))
    out = np.zeros((n, n, 3), np.uint8)
    cx0, cy0 = min(n, max(0, int(round((ix0 - x0) * scale)))), min(n, max(0, int(round((iy0 - y0) * scale))))
    cx1, cy1 = min(n, int(round((ix1 - x0) * scale))), min(n, int(round((iy1 - y0) * scale)))
    if ix1 <= ix0 or iy1 <= iy0 or cx1 <= cx0 or cy1 <= cy0:
        return out, (scale, scale, x0, y0)
    cw, ch = cx1 - cx0, cy1 - cy0
    part = image[iy0:iy1, ix0:ix1]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out[cy0:cy1, cx0:cx1] = cv2.resize(part, (cw, ch), interpolation=interp)
    if border == "replicate":
        out = cv2.copyMakeBorder(out[cy0:cy1, cx0:cx1], cy0, n - cy1, cx0, n - cx1, cv2.BORDER_REPLICATE)
    sx, sy = cw / (ix1 - ix0), ch / (iy1 - iy0)  # the real scales, after rounding
    return out, (sx, sy, ix0 - cx0 / sx, iy0 - cy0 / sy)


def _to_image(pts: np.ndarray, back) -> np.ndarray:
    """(N, 3) crop points (x, y, depth) -> image pixels (depth scaled like x)."""
    sx, sy, x0, y0 = back
    return np.column_stack([pts[:, 0] / sx + x0, pts[:, 1] / sy + y0, pts[:, 2] / sx]).astype(np.float32)


def _shrunk(image: np.ndarray, side: int):
    """``image`` area-averaged to at most ``side`` pixels on its longer side: (copy, x factor,
    y factor) where the factors take the copy's coordinates back to the image's."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image, 1.0, 1.0
    s = side / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), w / nw, h / nh


def _box_of(mesh: np.ndarray):
    """(x0, y0, x1, y1) of a (468, >=2) mesh."""
    return mesh[:, 0].min(), mesh[:, 1].min(), mesh[:, 0].max(), mesh[:, 1].max()


def _covers(mesh: np.ndarray, x: float, y: float) -> bool:
    x0, y0, x1, y1 = _box_of(mesh)
    return x0 <= x <= x1 and y0 <= y <= y1


class Landmarker:
    """MediaPipe Face Mesh in static-image mode, called on an image like a MediaPipe solution.

    ``landmarker(image)`` -> :class:`Landmarks` of the largest face (``face_index`` picks
    another, in order of decreasing size); :meth:`find` also returns every face found. Faces
    Face Mesh's own detector misses (turned, small, at the border, in a very large photo) are
    found by MediaPipe's full-range face detector and meshed on a crop around them; see the
    module's docstring. Thread-safe (calls are serialised).
    """

    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        mp = _mediapipe()

        with _quiet_native_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=max_faces, refine_landmarks=False,
                min_detection_confidence=min_confidence)
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence)
            # the first inference prints the rest of the chatter
            blank = np.zeros((64, 48, 3), np.uint8)  # non-square: triggers every one-time warning
            self._mesh.process(blank)
            self._detector.process(blank)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ MediaPipe calls
    def _mesh_faces(self, image: np.ndarray) -> List[np.ndarray]:
        """Face Mesh on ``image`` as it is: [(468, 3) float32 (x, y, depth) in its pixels]."""
        h, w = image.shape[:2]
        try:
            with _quiet_native_stderr():
                res = self._mesh.process(np.ascontiguousarray(image))
        except RuntimeError:  # MediaPipe refuses degenerate inputs
            return []
        return [np.array([(lm.x * w, lm.y * h, lm.z * w) for lm in face.landmark[:468]], np.float32)
                for face in res.multi_face_landmarks or []]

    def _detections(self, image: np.ndarray, pad: float = 0.0) -> List[tuple]:
        """The full-range detector on ``image`` (optionally padded with black by ``pad`` of its
        longer side, for faces cut by the border): [(centre x, centre y, box side)] in its pixels."""
        h, w = image.shape[:2]
        p = int(round(pad * max(h, w)))
        padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0) if p else image
        try:
            with _quiet_native_stderr():
                res = self._detector.process(np.ascontiguousarray(padded))
        except RuntimeError:
            return []
        ph, pw = padded.shape[:2]
        out = []
        for det in res.detections or []:
            bb = det.location_data.relative_bounding_box
            bw, bh = bb.width * pw, bb.height * ph
            out.append((bb.xmin * pw + bw / 2 - p, bb.ymin * ph + bh / 2 - p, max(bw, bh)))
        return out

    def _mesh_around(self, image: np.ndarray, cx: float, cy: float, side: float) -> Optional[np.ndarray]:
        """Face Mesh on crops around a detected face (centre, box side in image pixels), tried
        in the order of ``_MESH_CROPS``: the first mesh whose centre lies in the face's box, as
        (468, 3) float32 in image pixels, or None."""
        for k, res, border in _MESH_CROPS:
            crop_side = k * side
            size = min(max(crop_side, 192.0), float(res))
            crop, back = _scaled_crop(image, (cx - crop_side / 2, cy - crop_side / 2, crop_side), size, border)
            for pts in self._mesh_faces(crop):
                pts = _to_image(pts, back)
                mx, my = pts[:, 0].mean(), pts[:, 1].mean()
                if abs(mx - cx) < 0.6 * side and abs(my - cy) < 0.6 * side:
                    return pts
        return None

    # ---------------------------------------------------------------------- the search
    def _search(self, image: np.ndarray, thorough: bool) -> List[np.ndarray]:
        """Every face mesh found in ``image`` ((H, W, 3) uint8): [(468, 3) float32]."""
        h, w = image.shape[:2]
        small, fx, fy = _shrunk(image, DETECT_SIDE)
        back = np.array([fx, fy, fx], np.float32)
        found: List[np.ndarray] = []
        for pts in self._mesh_faces(small):
            pts = pts * back
            x0, y0, x1, y1 = _box_of(pts)
            if fx > 1.0 and (x1 - x0) / fx < 256:  # meshed small in the copy: again at full resolution
                sharper = self._mesh_around(image, (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0))
                pts = sharper if sharper is not None else pts
            found.append(pts)
        if found and not thorough:
            return found
        # MediaPipe's full-range detector: the whole photo (padded), then overlapping tiles
        windows = [None]
        tile = max(h, w) // 2
        if tile >= 2 * MIN_FACE_PX:
            step = max(tile // 2, 1)
            windows += [(x, y, tile) for y in range(0, max(h - tile, 0) + 1, step)
                        for x in range(0, max(w - tile, 0) + 1, step)]
        for win in windows:
            if win is None:
                dets = [(cx * fx, cy * fy, side * fx) for cx, cy, side in self._detections(small, pad=0.25)]
            else:
                crop, (sx, sy, x0, y0) = _scaled_crop(image, win, min(win[2], DETECT_SIDE))
                dets = [(x0 + cx / sx, y0 + cy / sy, side / sx) for cx, cy, side in self._detections(crop)]
            for cx, cy, side in dets:
                if side < MIN_FACE_PX or any(_covers(m, cx, cy) for m in found):
                    continue  # too small, or already meshed
                pts = self._mesh_around(image, cx, cy, side)
                if pts is not None:
                    found.append(pts)
            if found and not thorough:
                break
        return found

    def _search_turned(self, image: np.ndarray) -> List[np.ndarray]:
        """The search on a copy turned by 90, 270 and 180 degrees (a photo stored sideways
        without an EXIF orientation), at detection resolution; meshes in ``image``'s pixels."""
        h, w = image.shape[:2]
        small, fx, fy = _shrunk(image, DETECT_SIDE)
        sh, sw = small.shape[:2]
        for k in (1, 3, 2):  # np.rot90: counter-clockwise quarter turns
            found = self._search(np.ascontiguousarray(np.rot90(small, k)), thorough=False)
            if not found:
                continue
            out = []
            for pts in found:
                x, y = pts[:, 0], pts[:, 1]
                if k == 1:    # turned (x, y) = (y, sw - x)
                    ox, oy = sw - y, x
                elif k == 3:  # turned (x, y) = (sh - y, x)
                    ox, oy = y, sh - x
                else:         # turned (x, y) = (sw - x, sh - y)
                    ox, oy = sw - x, sh - y
                out.append(np.column_stack([ox * fx, oy * fy, pts[:, 2] * fx]).astype(np.float32))
            return out
        return []

    def detect_all(self, image: np.ndarray, thorough: bool = True) -> List[Landmarks]:
        """Every face found in ``image`` ((H, W, 3) uint8 RGB), largest first; faces narrower
        than :data:`MIN_FACE_PX` are left out.

        ``thorough`` also searches overlapping tiles for faces much smaller than the largest
        one; without it, the detector fallbacks run only when Face Mesh found no face."""
        h, w = image.shape[:2]
        if min(h, w) < MIN_FACE_PX:
            return []
        with self._lock:
            meshes = self._search(image, thorough) or self._search_turned(image)
        faces = [Landmarks(m[:, :2].copy(), (h, w), m[:, 2].copy()) for m in meshes]
        faces = [f for f in faces if f.face_box[2] - f.face_box[0] >= MIN_FACE_PX]
        return sorted(faces, key=lambda f: -f.face_area)

    def find(self, image: np.ndarray, face_index: int = 0, what: str = "the image"):
        """(the ``face_index``-th largest face, every face found, largest first). Raises
        :class:`NoFaceFound`, its message naming the photo as ``what`` ("the target photo me.jpg")."""
        h, w = image.shape[:2]
        if min(h, w) < MIN_FACE_PX:
            raise NoFaceFound(f"{what} is only {w}x{h} pixels: a face must be at least {MIN_FACE_PX} pixels "
                              "wide to be found.")
        faces = self.detect_all(image, thorough=True)
        if not faces:
            raise NoFaceFound(f"no face was found in {what}: use a photo where one face is clearly visible "
                              f"and at least {MIN_FACE_PX} pixels wide.")
        if not 0 <= face_index < len(faces):
            raise NoFaceFound(f"face {face_index} of {what} was asked for but only {len(faces)} face(s) were found "
                              f"(faces are numbered from 0, largest first).")
        return faces[face_index], faces

    def __call__(self, image: np.ndarray, face_index: int = 0, what: str = "the image") -> Landmarks:
        return self.find(image, face_index, what)[0]

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()


_DEFAULT: Optional[Landmarker] = None
_DEFAULT_LOCK = threading.Lock()


def default_landmarker() -> Landmarker:
    """A process-wide Landmarker, created on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Landmarker()
        return _DEFAULT


def detect_landmarks(image: np.ndarray, face_index: int = 0, what: str = "the image") -> Landmarks:
    """The 4 points (and full mesh) of the ``face_index``-th largest face in ``image``
    ((H, W, 3) uint8 RGB). Raises :class:`NoFaceFound` (its message names the photo as ``what``)."""
    return default_landmarker()(image, face_index, what=what)


# ------------------------------------------------------------------ body: shoulders and hands
@dataclass(frozen=True)
class Body:
    """What MediaPipe Pose and Hands see of a person, in photo pixels (x, y).

    ``shoulders``: (2, 2) float32, the shoulder on the image's left then on its right, or None
    when Pose found no person (or not both shoulders). ``hands``: list of (21, 2) float32 hand
    landmark sets, one per hand found (empty when none)."""

    shoulders: Optional[np.ndarray]
    hands: tuple


class BodyLandmarker:
    """MediaPipe Pose (shoulders) and Hands in static-image mode, called on an image like a
    MediaPipe solution: ``body_landmarker(image, box)`` -> :class:`Body`. ``box`` (x0, y0, x1,
    y1) in pixels limits the search to a region around one person (the work frame); it is
    processed at most ``max_side`` pixels wide. Thread-safe (calls are serialised)."""

    def __init__(self, max_side: int = 640, min_confidence: float = 0.5, min_hand_confidence: float = 0.7,
                 min_hand_score: float = 0.9, confirmed_hand_confidence: float = 0.5,
                 confirming_visibility: float = 0.8):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with _quiet_native_stderr():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                min_detection_confidence=min_confidence)
            # measured on ../shared/portraits: at 0.5 the palm detector also fires on ears and
            # on hair over a wooden railing; at 0.7 only on real hands
            self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                                   min_detection_confidence=min_hand_confidence)
            # a hand half turned away (holding a phone to the ear) is found only at 0.5; there
            # it is taken only where Pose is sure of a hand of the person too (measured on
            # ../shared/portraits: Pose's visibility 0.85-0.89 for the hand at the ear; 0.55-0.63
            # for a 'hand' on a wooden railing, which the palm detector also sees at 0.5)
            self._confirm = None  # made on first use: most photos never need the second look
        self._confirm_confidence = float(confirmed_hand_confidence)
        self.max_side = int(max_side)
        self.min_hand_score = float(min_hand_score)
        self.confirming_visibility = float(confirming_visibility)
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, box=None) -> Body:
        import cv2

        h, w = image.shape[:2]
        x0, y0, x1, y1 = (0, 0, w, h) if box is None else (max(0, int(box[0])), max(0, int(box[1])),
                                                           min(w, int(box[2])), min(h, int(box[3])))
        crop = image[y0:y1, x0:x1]
        f = min(1.0, self.max_side / max(crop.shape[:2]))
        if f < 1.0:
            crop = cv2.resize(crop, (max(1, int(crop.shape[1] * f)), max(1, int(crop.shape[0] * f))),
                              interpolation=cv2.INTER_AREA)
        ch, cw = crop.shape[:2]

        def to_photo(lms) -> np.ndarray:
            return np.array([(lm.x * cw / f + x0, lm.y * ch / f + y0) for lm in lms], np.float32)

        with self._lock, _quiet_native_stderr():
            pose = self._pose.process(np.ascontiguousarray(crop))
            hands = self._hands.process(np.ascontiguousarray(crop))
        shoulders = None
        if pose.pose_landmarks is not None:
            lms = pose.pose_landmarks.landmark
            pair = [lms[11], lms[12]]  # the person's left and right shoulder
            if all(p.visibility > 0.3 for p in pair) or all(0 <= p.x <= 1 and 0 <= p.y <= 1.3 for p in pair):
                pts = to_photo(pair)
                shoulders = pts[np.argsort(pts[:, 0])]

        def sure(result) -> tuple:
            return tuple(to_photo(hand.landmark) for hand, side in
                         zip(result.multi_hand_landmarks or [], result.multi_handedness or [])
                         if side.classification[0].score >= self.min_hand_score)

        found = sure(hands)
        if not found and pose.pose_landmarks is not None:
            # Pose's wrists, pinkies, index fingers and thumbs that it sees in the photo
            lms = pose.pose_landmarks.landmark
            posed = to_photo([lms[i] for i in range(15, 23) if lms[i].visibility > self.confirming_visibility
                              and 0 <= lms[i].x <= 1 and 0 <= lms[i].y <= 1])
            if len(posed):
                with self._lock, _quiet_native_stderr():
                    if self._confirm is None:
                        import mediapipe as mp

                        self._confirm = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                                                 min_detection_confidence=self._confirm_confidence)
                    again = self._confirm.process(np.ascontiguousarray(crop))
                found = tuple(h for h in sure(again) if _near_hand(posed, h))
        return Body(shoulders, found)

    def close(self) -> None:
        self._pose.close()
        self._hands.close()
        if self._confirm is not None:
            self._confirm.close()


def _near_hand(points: np.ndarray, hand: np.ndarray, reach: float = 0.5) -> bool:
    """Whether any of ``points`` ((N, 2) photo pixels: Pose's hand landmarks) lies within
    ``reach`` of the hand's size from the box of ``hand`` ((21, 2) photo pixels)."""
    lo, hi = hand.min(0), hand.max(0)
    margin = reach * float((hi - lo).max())
    return bool(np.any(np.all((points >= lo - margin) & (points <= hi + margin), axis=1)))


class PersonSegmenter:
    """MediaPipe Selfie Segmentation (its general model), called like a MediaPipe solution:
    ``person_segmenter(image)`` with ``image`` (H, W, 3) uint8 RGB returns (H, W) float32 in
    [0, 1], how surely each pixel shows a person (hair, face, body, clothes). The face parser
    was trained on face crops and often calls bare shoulders and arms background; this tells
    them apart from the scene. Thread-safe (calls are serialised)."""

    def __init__(self, model_selection: int = 0):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with _quiet_native_stderr():
            self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        with self._lock, _quiet_native_stderr():
            res = self._model.process(np.ascontiguousarray(image))
        mask = res.segmentation_mask
        if mask is None:
            return np.zeros(image.shape[:2], np.float32)
        return np.clip(mask.astype(np.float32), 0.0, 1.0)


_SHARED: dict = {}


def _shared(make):
    """One process-wide instance of ``make`` (a class), created on first use."""
    with _DEFAULT_LOCK:
        if make not in _SHARED:
            _SHARED[make] = make()
        return _SHARED[make]


def default_body_landmarker() -> BodyLandmarker:
    """A process-wide BodyLandmarker, created on first use."""
    return _shared(BodyLandmarker)


def default_person_segmenter() -> PersonSegmenter:
    """A process-wide :class:`PersonSegmenter`, created on first use."""
    return _shared(PersonSegmenter)
