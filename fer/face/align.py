"""Face alignment: pure geometry (similarity transforms) plus one warp to a gray (S, S) or BGR (S, S, 3) crop.

The template puts the landmarks where they sit in FER2013 training crops, so an aligned face from a photo is framed
like the faces the classifier was trained on. FER2013 crops are loose (forehead, chin and some background). The
numbers were measured, not guessed: benchmarks/pasted_faces.py upscales FER2013 PrivateTest faces, pastes them into
frames, runs YuNet and maps its landmarks back into the original 48x48 crop; TEMPLATE is the mean position over
those faces, in units of the crop side: u = (pixel + 0.5) / side, so (0, 0) is the crop's top-left corner and
(1, 1) its bottom-right corner whatever the side (x to the right, y down).

Border: BORDER_REPLICATE. A face at the image edge needs pixels from outside the image; FER2013 crops never hold
constant (black) bars, and a hard black edge is a strong feature for a CNN, while replicated edge pixels keep the local
brightness the network expects.
"""

import cv2
import numpy as np

from fer.face.detect import Face, check_image, to_bgr_uint8

# (5, 2) YuNet order: right eye, left eye (subject's), nose tip, right mouth corner, left mouth corner.
# Mean YuNet landmarks on 445 pasted FER2013 PrivateTest faces, made mirror-symmetric (training uses flips):
# eyes at y 0.368, eye distance 0.375 of the side (python benchmarks/pasted_faces.py --n 1000, seed 0).
TEMPLATE = np.array([
    [0.3127, 0.3679],
    [0.6873, 0.3679],
    [0.5000, 0.5856],
    [0.3443, 0.7617],
    [0.6557, 0.7617],
], dtype=np.float32)
# Which template points the fit uses: all five. On held-out pasted faces the 5-point least-squares fit reproduces
# FER2013 framing better than eyes alone on the mean, not the median (docs/runs/pasted_faces_fer2013.txt): single bad
# eye points pull an eyes-only fit far off, five points average them out.
ALIGN_POINTS = (0, 1, 2, 3, 4)
# Without landmarks (Haar found no eyes): a square of side BOX_CROP_SCALE * max(w, h) centred on the box centre
# shifted down by BOX_CROP_SHIFT * h: FER2013's crop relative to the Haar box, measured on pasted FER2013 faces
# (benchmarks/pasted_faces.py --haar); FER2013 was cropped with a Haar-like box.
BOX_CROP_SCALE = 1.03
BOX_CROP_SHIFT = 0.017


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src onto dst.

    Closed form (Umeyama 1991, in 2-D with complex numbers): z_dst ~ a * z_src + t, a = sum(conj(s) d) / sum(|s|^2)
    over the centred points. Exact for N = 2. Returns the (2, 3) float64 matrix for cv2.warpAffine.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"expected src and dst of the same shape (N, 2) with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst points must be finite")
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    zs_c, zd_c = zs - zs.mean(), zd - zd.mean()
    norm = np.sum(np.abs(zs_c) ** 2)
    if norm < 1e-12:
        raise ValueError("src points all coincide; a similarity transform is undefined")
    a = np.sum(np.conj(zs_c) * zd_c) / norm
    t = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def alignment_matrix(landmarks: np.ndarray, size: int, template: np.ndarray = TEMPLATE,
                     points: tuple[int, ...] = ALIGN_POINTS) -> np.ndarray:
    """(2, 3) matrix taking image pixels to a (size, size) crop with landmarks[points] on template[points] * size."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    template = np.asarray(template, dtype=np.float64)
    if landmarks.shape != (5, 2) or template.shape != (5, 2):
        raise ValueError(f"landmarks and template must be (5, 2), got {landmarks.shape} and {template.shape}")
    idx = list(points)
    return similarity_from_points(landmarks[idx], template[idx] * size - 0.5)  # unit -> pixel-centre coordinates


def box_matrix(box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(2, 3) matrix for the landmark-free fallback: the expanded square around the box (see BOX_CROP_*)."""
    x, y, w, h = box
    side = BOX_CROP_SCALE * max(w, h)
    cx, cy = x + w / 2, y + h / 2 + BOX_CROP_SHIFT * h
    s = size / side
    # pixel-centre convention: the square's centre maps to the crop centre (size - 1) / 2
    return np.array([[s, 0.0, (size - 1) / 2 - s * cx], [0.0, s, (size - 1) / 2 - s * cy]])


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """Warp image through matrix to a uint8 crop, gray (size, size) for channels 1 or BGR (size, size, 3) for channels 3,
    reading only the pixels the crop needs (a gray image gives a replicated BGR crop).

    When the crop shrinks the face (the usual case), the needed region is first reduced with INTER_AREA so the warp
    itself is close to 1:1; a bilinear warp alone would alias (skip pixels) on large faces.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (BGR colour), got {channels!r}")
    image = check_image(image)
    height, width = image.shape[:2]
    m = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], dtype=np.float64)
    src = corners @ inv[:2].T  # (4, 2) where the crop corners come from
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 2, 0, width - 1))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 2, 0, height - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 3, x0 + 1, width))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 3, y0 + 1, height))
    roi = image[y0:y1, x0:x1]
    roi = _gray_uint8(roi) if channels == 1 else to_bgr_uint8(roi)  # convert the region only, not the whole frame
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # roi pixel -> image pixel
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # crop pixels per image pixel
    if scale < 1.0:
        rh, rw = roi.shape[:2]
        nw, nh = max(1, round(rw * scale)), max(1, round(rh * scale))
        roi = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / rw, nh / rh
        # resized pixel p' -> roi pixel p = (p' + 0.5) / f - 0.5 (cv2.resize pixel-centre convention)
        unresize = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
        shift = shift @ unresize
    full = m @ shift
    return cv2.warpAffine(roi, full[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(image: np.ndarray, face: Face, size: int = 48, template: np.ndarray = TEMPLATE, channels: int = 1) -> np.ndarray:
    """uint8 crop of face framed like a FER2013 image (landmarks if known, else the box): gray (size, size) for
    channels 1, BGR (size, size, 3) for channels 3 (the model's input channels; fer.inference.Classifier.channels)."""
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if face.landmarks is not None:
        matrix = alignment_matrix(face.landmarks, size, template)
    else:
        matrix = box_matrix(face.box, size)
    return warp_face(image, matrix, size, channels)


def _gray_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8 and image.ndim == 2:
        return image
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint8 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(to_bgr_uint8(image), cv2.COLOR_BGR2GRAY)
