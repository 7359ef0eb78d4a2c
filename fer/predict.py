"""Classify the faces in image files: read -> detect -> align -> classify, one JSON-ready dict per file.

JSON contract (scripts depend on it), one object per input path, in input order:
    {"path": str, "error": null | str,
     "faces": [{"box": [x, y, w, h], "landmarks": [[x, y] x 5] | null, "score": float,
                "label": str, "probabilities": {class name: p}}]}
Faces are listed largest first. An unreadable file gets "error" (the reason) and "faces": []; the other files still
run. A readable image without faces gets "faces": [] and "error": null.

classifier: anything with class_names (tuple of str), input_size (int), channels (1 or 3; taken as 1 when absent) and
predict(uint8 (N, S, S) or (N, S, S, 3) BGR) -> (N, K) probs, e.g. fer.inference.Classifier. detector: a
fer.face.FaceDetector.
"""

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from fer.face.align import align_face
from fer.face.detect import Face, read_image
from fer.face.draw import draw_faces

log = logging.getLogger(__name__)


def classify_faces(image_bgr: np.ndarray, faces: list[Face], classifier) -> np.ndarray:
    """Align every face of one image and classify them in one batch: probs float32 (N, K)."""
    num_classes = len(classifier.class_names)
    if not faces:
        return np.zeros((0, num_classes), np.float32)
    size, channels = classifier.input_size, getattr(classifier, "channels", 1)  # the checkpoint's input
    crops = np.stack([align_face(image_bgr, face, size, channels=channels) for face in faces])  # (N, S, S[, 3]) uint8
    probs = np.asarray(classifier.predict(crops), dtype=np.float32)
    if probs.shape != (len(faces), num_classes):
        raise ValueError(f"classifier.predict returned shape {probs.shape}, expected {(len(faces), num_classes)}")
    return probs


def face_record(face: Face, probs_row: np.ndarray, class_names) -> dict:
    return {
        "box": [int(v) for v in face.box],
        "landmarks": None if face.landmarks is None else [[round(float(x), 2), round(float(y), 2)]
                                                          for x, y in face.landmarks],
        "score": round(float(face.score), 4),
        "label": class_names[int(np.argmax(probs_row))],
        "probabilities": {name: round(float(p), 6) for name, p in zip(class_names, probs_row)},
    }


def predict_images(paths, classifier, detector, *, annotate_dir: str | os.PathLike | None = None) -> list[dict]:
    """One result dict per path (see the module docstring). annotate_dir: also write a copy of each readable image
    with boxes, labels and top probabilities drawn, named like the input (suffixed _2, _3 ... on name clashes)."""
    class_names = tuple(classifier.class_names)
    out_dir = None
    if annotate_dir is not None:
        out_dir = Path(annotate_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    used_names: set[str] = set()
    results = []
    for path in paths:
        path = str(path)
        try:
            image = read_image(path)
        except (FileNotFoundError, ValueError) as e:
            log.warning("skipping %s: %s", path, e)
            results.append({"path": path, "faces": [], "error": str(e)})
            continue
        faces = detector.detect(image)
        probs = classify_faces(image, faces, classifier)  # (N, K)
        records = [face_record(face, row, class_names) for face, row in zip(faces, probs)]
        log.info("%s: %d face(s)%s", path, len(faces), "".join(f", {r['label']}" for r in records))
        results.append({"path": path, "faces": records, "error": None})
        if out_dir is not None:
            annotated = draw_faces(image, faces, [r["label"] for r in records], probs, class_names)
            target = _unique_path(out_dir, Path(path).name, used_names)
            if not cv2.imwrite(str(target), annotated):
                raise OSError(f"could not write the annotated image {target}")
    return results


def _unique_path(out_dir: Path, name: str, used: set[str]) -> Path:
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        suffix = ".png"
    candidate, k = stem + suffix, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}_{k}{suffix}"
    used.add(candidate)
    return out_dir / candidate
