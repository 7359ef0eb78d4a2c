"""Draw faces, labels and probabilities on a BGR image (used by predict's annotated copies and the live view)."""

from collections.abc import Sequence

import cv2
import numpy as np

from fer.face.detect import Face

BOX_COLOR = (0, 200, 0)  # BGR
TEXT_COLOR = (255, 255, 255)
LANDMARK_COLOR = (0, 200, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_faces(image_bgr: np.ndarray, faces: Sequence, labels: Sequence[str] | None = None,
               probs: np.ndarray | Sequence | None = None, class_names: Sequence[str] | None = None,
               track_ids: Sequence | None = None, *, show_bars: bool = False, show_landmarks: bool = True,
               color: tuple[int, int, int] = BOX_COLOR) -> np.ndarray:
    """Return a copy of image_bgr (H, W, 3) uint8 with each face drawn.

    faces: Face objects or (x, y, w, h) boxes. labels: one string per face (None: from argmax of probs and
    class_names, or nothing). probs: (N, K) probabilities; the top one is written after the label. track_ids: one id
    (or None) per face, drawn as "#id". show_bars: draw a bar per class under the box (needs class_names).
    Landmarks of Face objects are drawn as dots when show_landmarks.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"draw_faces needs a BGR (H, W, 3) image, got "
                         f"{getattr(image_bgr, 'shape', type(image_bgr).__name__)}")
    n = len(faces)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim == 1 and n == 1:
            probs = probs[None]
        if probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError(f"draw_faces: {n} faces but probs of shape {probs.shape}, expected ({n}, K)")
    for name, seq in (("labels", labels), ("track_ids", track_ids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"draw_faces: {n} faces but {len(seq)} {name}")
    if class_names is not None and probs is not None and probs.shape[1] != len(class_names):
        raise ValueError(f"draw_faces: probs have {probs.shape[1]} classes but class_names has {len(class_names)}")
    out = np.ascontiguousarray(image_bgr).copy()
    thickness = max(1, round(max(out.shape[:2]) / 500))
    font_scale = max(0.4, max(out.shape[:2]) / 1500)
    for i, face in enumerate(faces):
        box = face.box if isinstance(face, Face) else face
        x, y, w, h = (int(round(v)) for v in box)
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        if show_landmarks and isinstance(face, Face) and face.landmarks is not None:
            for px, py in face.landmarks:
                cv2.circle(out, (int(round(px)), int(round(py))), thickness + 1, LANDMARK_COLOR, -1)
        parts = []
        if track_ids is not None and track_ids[i] is not None:
            parts.append(f"#{track_ids[i]}")
        label = labels[i] if labels is not None else None
        if label is None and probs is not None and class_names is not None:
            label = class_names[int(np.argmax(probs[i]))]
        if label:
            parts.append(str(label))
        if probs is not None:
            parts.append(f"{float(np.max(probs[i])):.2f}")
        if parts:
            _put_label(out, " ".join(parts), x, y, font_scale, thickness, color)
        if show_bars and probs is not None and class_names is not None:
            _draw_bars(out, probs[i], class_names, x, y + h, max(w, 80), font_scale, color)
    return out


def _put_label(out, text, x, y, font_scale, thickness, color):
    (tw, th), base = cv2.getTextSize(text, FONT, font_scale, thickness)
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y  # above the box, or inside it at the top edge
    cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), color, -1)
    cv2.putText(out, text, (x + 1, top + th + 1), FONT, font_scale, TEXT_COLOR, thickness, cv2.LINE_AA)


def _draw_bars(out, probs_row, class_names, x, y, width, font_scale, color):
    scale = font_scale * 0.8
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
    row_h = th + base + 2
    label_w = max(cv2.getTextSize(name, FONT, scale, 1)[0][0] for name in class_names) + 4
    for k, (name, p) in enumerate(zip(class_names, probs_row)):
        top = y + 2 + k * row_h
        cv2.putText(out, name, (x, top + th), FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)
        bar = int(round(float(np.clip(p, 0.0, 1.0)) * (width - label_w)))
        cv2.rectangle(out, (x + label_w, top + 1), (x + label_w + bar, top + row_h - 2), color, -1)
