"""Stage 2 of the method (paper 3.2.1): MediaPipe Face Mesh and the method's 4 points.

The 4 points, in pixel coordinates (x, y) of the original image, in this order:
``forehead`` (mesh 10, top of the forehead on the midline), ``left_eye`` and ``right_eye``
(centres of the eye contours; *left* is the eye on the image's left, i.e. the subject's right
eye), ``chin`` (mesh 152).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import List, Optional

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


def _ordered_face_oval() -> np.ndarray:
    """Mesh indices of the face silhouette, walked in order around the face."""
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


@dataclass(frozen=True)
class Landmarks:
    """Face landmarks of one face in one image.

    ``mesh``: (468, 2) float32 pixel coordinates (x, y) of the Face Mesh points.
    ``image_hw``: (height, width) of the image they belong to.
    """

    mesh: np.ndarray
    image_hw: tuple

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
        return self.mesh[_FACE_OVAL].astype(np.float32)

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
        d["image_size"] = [int(self.image_hw[1]), int(self.image_hw[0])]
        return d


_FACE_OVAL = _ordered_face_oval()


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


class Landmarker:
    """MediaPipe Face Mesh in static-image mode, called on an image like a MediaPipe solution.

    ``landmarker(image)`` -> :class:`Landmarks` of the largest face (``face_index`` picks
    another, in order of decreasing size). Faces too small for Face Mesh's own detector are
    found by MediaPipe's full-range face detector and meshed on an enlarged crop.
    Thread-safe (calls are serialised).
    """

    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import mediapipe as mp

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

    def _mesh_faces(self, image: np.ndarray) -> List[np.ndarray]:
        h, w = image.shape[:2]
        with _quiet_native_stderr():
            res = self._mesh.process(np.ascontiguousarray(image))
        out = []
        for face in res.multi_face_landmarks or []:
            pts = np.array([(lm.x * w, lm.y * h) for lm in face.landmark[:468]], np.float32)
            out.append(pts)
        return out

    def detect_all(self, image: np.ndarray, thorough: bool = True) -> List[Landmarks]:
        """Every face found in ``image`` ((H, W, 3) uint8 RGB), largest first.

        ``thorough`` also searches overlapping tiles for faces much smaller than the largest
        one (about 0.1 s more); without it, small faces are searched only when no face at all
        was found."""
        h, w = image.shape[:2]
        with self._lock:
            meshes = self._mesh_faces(image)
            meshes += self._mesh_detected_faces(image, meshes, thorough)
        faces = [Landmarks(m, (h, w)) for m in meshes]
        return sorted(faces, key=lambda f: -f.face_area)

    def _mesh_detected_faces(self, image: np.ndarray, known: List[np.ndarray], thorough: bool) -> List[np.ndarray]:
        """Faces Face Mesh's own short-range detector missed: MediaPipe's full-range detector on
        the whole image, then (if ``thorough`` or no face at all was found) on overlapping tiles,
        for faces a few percent of the photo wide. Each is meshed on an enlarged crop around it."""
        h, w = image.shape[:2]
        out: List[np.ndarray] = []
        tile = max(h, w) // 2
        windows = [(0, 0, w, h)] + [(x, y, min(x + tile, w), min(y + tile, h))
                                    for y in range(0, max(h - tile, 0) + 1, max(tile // 2, 1))
                                    for x in range(0, max(w - tile, 0) + 1, max(tile // 2, 1))]
        for (wx0, wy0, wx1, wy1) in windows:
            with _quiet_native_stderr():
                res = self._detector.process(np.ascontiguousarray(image[wy0:wy1, wx0:wx1]))
            for det in res.detections or []:
                bb = det.location_data.relative_bounding_box
                bw, bh = bb.width * (wx1 - wx0), bb.height * (wy1 - wy0)
                cx, cy = wx0 + bb.xmin * (wx1 - wx0) + bw / 2, wy0 + bb.ymin * (wy1 - wy0) + bh / 2
                if any(m[:, 0].min() <= cx <= m[:, 0].max() and m[:, 1].min() <= cy <= m[:, 1].max()
                       for m in known + out):
                    continue  # already meshed
                side = 2.2 * max(bw, bh)
                frame = Frame.around((cx, cy), side, int(min(max(side, 192), 1024)), (h, w))
                inv = np.linalg.inv(frame.matrix())
                for pts in self._mesh_faces(frame.extract(image))[:1]:
                    out.append((pts @ inv[:2, :2].T + inv[:2, 2]).astype(np.float32))
            if (out or known) and not thorough:
                break
        return out

    def __call__(self, image: np.ndarray, face_index: int = 0) -> Landmarks:
        return self.find(image, face_index)[0]

    def find(self, image: np.ndarray, face_index: int = 0):
        """(the ``face_index``-th largest face's :class:`Landmarks`, every face found, largest
        first). Raises :class:`NoFaceFound`."""
        faces = self.detect_all(image, thorough=face_index > 0)
        if not faces:
            raise NoFaceFound("no face was found in the image; use a photo where one face is clearly visible.")
        if not 0 <= face_index < len(faces):
            raise NoFaceFound(f"face {face_index} was asked for but only {len(faces)} face(s) were found "
                              f"(faces are numbered from 0, largest first).")
        return faces[face_index], faces

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


def detect_landmarks(image: np.ndarray, face_index: int = 0) -> Landmarks:
    """The 4 points (and full mesh) of the ``face_index``-th largest face in ``image``
    ((H, W, 3) uint8 RGB). Raises :class:`NoFaceFound`."""
    return default_landmarker()(image, face_index)


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
                 min_hand_score: float = 0.9):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        with _quiet_native_stderr():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                min_detection_confidence=min_confidence)
            # measured on ../shared/portraits: at 0.5 the palm detector also fires on ears and
            # on hair over a wooden railing; at 0.7 only on real hands
            self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                                   min_detection_confidence=min_hand_confidence)
        self.max_side = int(max_side)
        self.min_hand_score = float(min_hand_score)
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
        found = tuple(to_photo(hand.landmark) for hand, side in
                      zip(hands.multi_hand_landmarks or [], hands.multi_handedness or [])
                      if side.classification[0].score >= self.min_hand_score)
        return Body(shoulders, found)

    def close(self) -> None:
        self._pose.close()
        self._hands.close()


_BODY: Optional[BodyLandmarker] = None


def default_body_landmarker() -> BodyLandmarker:
    """A process-wide BodyLandmarker, created on first use."""
    global _BODY
    with _DEFAULT_LOCK:
        if _BODY is None:
            _BODY = BodyLandmarker()
        return _BODY
