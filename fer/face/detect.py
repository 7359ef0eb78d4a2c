"""Face detection: the only OpenCV detector wrapper. Image in, list of Face out (an empty list is a valid answer).

Backends:
- "yunet": cv2.FaceDetectorYN with the YuNet 2023mar ONNX model (boxes, 5 landmarks, scores).
- "haar":  OpenCV's Haar cascades (frontalface_default + eye). Haar gives no confidence, so score is 1.0.
           Landmarks come from the eye cascade: when exactly one eye is found in each upper half of the box,
           the eyes are filled in and nose / mouth corners are estimated from the eye line with the mean
           YuNet face geometry (HAAR_NOSE_MOUTH below); otherwise landmarks is None (align falls back to the box).
- "auto":  the same as "yunet" (kept so that old scripts still run; YuNet ships inside the package now).

The YuNet file is the copy shipped in fer/face/yunet/ (sha256-checked), unless --yunet-model / FER_YUNET_MODEL names
another (fer.face.model_file). Haar is used only when asked for by name.

Input may be BGR uint8, gray (H, W) or (H, W, 1), BGRA (alpha is dropped), uint16 (scaled to 8 bit),
or float in [0, 1]. Images with a side under MIN_SIDE pixels give []. Larger images than max_side on their long
side are detected on a downscaled copy (the copy is made before any dtype/colour conversion, so memory stays
bounded by max_side) and boxes/landmarks are mapped back to the input's pixels.

Boxes are clipped to the image; landmarks are not (a cut-off face can have points outside the image).
A FaceDetector is not thread-safe (it keeps the OpenCV detector and its input size between calls).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer.face.model_file import yunet_model_path

MIN_SIDE = 20  # pixels; YuNet's smallest face is ~10 px, nothing useful fits in a smaller frame
BACKENDS = ("yunet", "haar", "auto")  # auto = yunet, see the module docstring

# Haar settings: scaleFactor 1.1 / minNeighbors 5 are OpenCV's tutorial defaults; a 24 px minimum face keeps the
# small face of camera.png (about 60 px) and rejects most texture hits.
HAAR_FACE = "haarcascade_frontalface_default.xml"
HAAR_EYE = "haarcascade_eye.xml"
HAAR_MIN_FACE = 24
# Nose tip and mouth corners in eye-line coordinates: origin at the eye midpoint, unit = inter-eye distance,
# u along the line from the image-left eye to the image-right eye, v perpendicular (down the face).
# From the mean YuNet landmarks on pasted FER2013 faces (benchmarks/pasted_faces.py), the same geometry as
# fer.face.align.TEMPLATE, so a Haar face with eyes aligns exactly as an eyes-only fit would.
HAAR_NOSE_MOUTH = np.array([[0.0, 0.581], [-0.416, 1.051], [0.416, 1.051]], dtype=np.float32)


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels, clipped to the image
    landmarks: np.ndarray | None  # (5, 2) float32: right eye, left eye, nose tip, right mouth corner, left mouth corner
    score: float  # YuNet confidence in [0, 1]; 1.0 for Haar (it has none)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); gray, 16-bit and alpha files are converted.

    Raises FileNotFoundError for a missing file and ValueError naming the file when OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # np.fromfile + imdecode instead of imread: handles non-ASCII paths and lets us say "empty" precisely.
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"cannot read image {path}: the file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError(f"cannot read image {path}: not a decodable image (corrupt or unsupported format)")
    return to_bgr_uint8(image, name=str(path))


def check_image(image, name: str = "image") -> np.ndarray:
    """Reject what cannot be an image; returns the array. ValueError names shape and dtype."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}")
    desc = f"shape {image.shape}, dtype {image.dtype}"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {desc}")
    if image.size == 0:
        raise ValueError(f"{name}: empty image, {desc}")
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f"{name}: expected dtype uint8, uint16, float32 or float64, got {desc}")
    return image


def to_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any accepted image (see check_image) -> BGR uint8 (H, W, 3). uint16 is divided by 257, float taken as [0, 1]."""
    image = check_image(image, name)
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)  # 65535 -> 255, rounds and saturates
    elif image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise ValueError(f"{name}: float image with NaN or inf values, shape {image.shape}")
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(f"{name}: float images must be in [0, 1], got range [{image.min()}, {image.max()}], "
                             f"shape {image.shape}; pass uint8 for 0..255 data")
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose long side is <= max_side (INTER_AREA), and the factor applied; the input itself if small enough."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 2 and image.ndim == 3:  # cv2 drops a trailing channel axis of 1
        small = small[:, :, None]
    return small, scale


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    if x1 <= x0 or y1 <= y0:
        return None
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def landmarks_from_eyes(eye_a: np.ndarray, eye_b: np.ndarray) -> np.ndarray:
    """(5, 2) float32 landmarks in YuNet order from two eye centres; nose and mouth from HAAR_NOSE_MOUTH."""
    right_eye, left_eye = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)  # subject's right = image left
    mid = (right_eye + left_eye) / 2
    u = left_eye - right_eye  # (2,) along the eye line, length = eye distance
    v = np.array([-u[1], u[0]])  # u rotated +90 degrees: points down the face in image coordinates
    rest = mid + HAAR_NOSE_MOUTH[:, :1] * u + HAAR_NOSE_MOUTH[:, 1:] * v  # (3, 2)
    return np.vstack([right_eye, left_eye, rest]).astype(np.float32)


class FaceDetector:
    """detect(image) -> list[Face], largest first. See the module docstring for backends and accepted input.

    score_threshold and nms_threshold apply to YuNet only (Haar has no scores; its minNeighbors=5 does the pruning).
    max_side: images with a longer side are detected on a downscaled copy.
    """

    def __init__(self, backend: str = "yunet", model_path=None, score_threshold: float = 0.8,
                 nms_threshold: float = 0.3, max_side: int = 640):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= nms_threshold <= 1.0:
            raise ValueError(f"score_threshold and nms_threshold must be in [0, 1], got {score_threshold}, {nms_threshold}")
        if max_side < MIN_SIDE:
            raise ValueError(f"max_side must be >= {MIN_SIDE}, got {max_side}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = int(max_side)
        self.backend = "haar" if backend == "haar" else "yunet"
        self.model_path = yunet_model_path(model_path) if self.backend == "yunet" else None
        self._yunet = None
        self._yunet_size = None
        self._face_cascade = self._eye_cascade = None
        if self.backend == "yunet":
            self._yunet = cv2.FaceDetectorYN.create(str(self.model_path), "", (320, 320),
                                                    score_threshold, nms_threshold, 5000)
        else:
            self._face_cascade = _load_cascade(HAAR_FACE)
            self._eye_cascade = _load_cascade(HAAR_EYE)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        height, width = image.shape[:2]
        if min(height, width) < MIN_SIDE:
            return []
        small, scale = _downscale(image, self.max_side)
        small = to_bgr_uint8(small)
        raw = self._detect_yunet(small) if self.backend == "yunet" else self._detect_haar(small)
        faces = []
        for box, landmarks, score in raw:
            box = np.asarray(box, dtype=np.float64) / scale
            clipped = _clip_box(*box, width, height)
            if clipped is None:
                continue
            if landmarks is not None:
                landmarks = (landmarks / scale).astype(np.float32)
            faces.append(Face(box=clipped, landmarks=landmarks, score=float(score)))
        faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        return faces

    def _detect_yunet(self, image_bgr: np.ndarray):
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if size != self._yunet_size:  # priors depend on the input size; video frames keep one size
            self._yunet.setInputSize(size)
            self._yunet_size = size
        _, rows = self._yunet.detect(image_bgr)
        if rows is None:
            return []
        # row: x, y, w, h, 5 x (x, y) landmarks, score
        return [(row[:4], row[4:14].reshape(5, 2).copy(), row[14]) for row in rows]

    def _detect_haar(self, image_bgr: np.ndarray):
        gray = cv2.equalizeHist(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))
        boxes = self._face_cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                    minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE))
        return [(box, self._haar_eyes(gray, box), 1.0) for box in boxes]

    def _haar_eyes(self, gray: np.ndarray, box) -> np.ndarray | None:
        x, y, w, h = (int(v) for v in box)
        roi = gray[y:y + h * 6 // 10, x:x + w]  # eyes sit in the upper part of a Haar face box
        eyes = self._eye_cascade.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(max(5, w // 10), max(5, w // 10)),
                                                  maxSize=(w // 2, w // 2))
        centres = [np.array([ex + ew / 2, ey + eh / 2]) for ex, ey, ew, eh in eyes]
        left_half = [c for c in centres if c[0] < w / 2]
        right_half = [c for c in centres if c[0] >= w / 2]
        if len(left_half) != 1 or len(right_half) != 1:  # missing or ambiguous eyes: let align use the box
            return None
        a, b = left_half[0], right_half[0]
        if np.linalg.norm(b - a) < 0.2 * w:
            return None
        return landmarks_from_eyes(a + (x, y), b + (x, y))


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FileNotFoundError(f"Haar cascade not found or unreadable: {path} (needs opencv-python's cv2.data)")
    return cascade
