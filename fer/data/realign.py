"""Re-align a dataset's face crops through the project's face stage, so training sees the framing predict/live produce.

RAF-DB ships tightly aligned 100x100 crops, framed differently from FER2013 and from fer.face.align's template. With
`data.realign: [rafdb]` every RAF-DB face is read at its stored size in colour, detected again (fer.face.recrop) and
aligned to data.image_size / data.channels. A face the detector does not find is handled by `data.realign_miss`:
  keep  the original crop resized to image_size (counted; the default: no training image is lost)
  drop  left out of the split (counted in FaceSet.excluded as 'not_realigned')
Evaluation (`evaluate --detect-faces`) uses the same re-alignment and counts a miss as a wrong answer instead.

Cache: <cache root>/realign/<dataset>-<size>px-<channels>ch-<key>/ (fer.data.paths.cache_root, outside the work tree)
holds faces.npz (path -> aligned face, found flag) and manifest.csv (one row per face: path, class, status realigned /
no_face, detector score), rewritten whenever new faces were added. The key hashes what the result depends on: the
dataset's location, the YuNet file, the detection passes and the alignment template; anything else needs no new key.
"""

import csv
import hashlib
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from fer.data.paths import cache_root
from fer.data.readers import FaceSet, face_array, resize_face

log = logging.getLogger(__name__)

MISS_ACTIONS = ("keep", "drop")
NOT_REALIGNED = "not_realigned"  # FaceSet.excluded key for faces dropped by realign_miss: drop


def cache_dir(dataset: str, location: Path, size: int, channels: int) -> Path:
    from fer.face.align import TEMPLATE
    from fer.face.model_file import sha256_of, yunet_model_path
    from fer.face.recrop import PASSES, UPSCALE_TO

    key = hashlib.sha256(json.dumps([str(Path(location).resolve()), sha256_of(yunet_model_path()), PASSES, UPSCALE_TO,
                                     TEMPLATE.round(6).tolist()]).encode()).hexdigest()[:12]
    return cache_root() / "realign" / f"{dataset}-{size}px-{channels}ch-{key}"


def realign_images(images_bgr: np.ndarray, size: int, channels: int, detector=None) -> tuple[np.ndarray, np.ndarray, list]:
    """BGR crops (N, H, W, 3) -> (aligned faces (N, *face_shape), found (N,) bool, scores). A miss gets the crop resized."""
    from fer.face import FaceDetector
    from fer.face.align import align_face
    from fer.face.recrop import detect_in_crop

    detector = detector or FaceDetector()
    out = face_array(len(images_bgr), size, channels)
    found, scores = np.zeros(len(images_bgr), bool), []
    for i, image in enumerate(images_bgr):
        face = detect_in_crop(detector, image)
        if face is None:
            resized = resize_face(image, size)
            out[i] = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY) if channels == 1 else resized
            scores.append("")
        else:
            out[i] = align_face(image, face, size, channels=channels)
            found[i] = True
            scores.append(f"{face.score:.4f}")
    return out, found, scores


def realign_cached(native: FaceSet, dataset: str, location: Path, size: int, channels: int) -> tuple[FaceSet, np.ndarray, Path]:
    """native (BGR crops at their stored size) -> (the same faces re-aligned, found (N,) bool, manifest path), cached."""
    folder = cache_dir(dataset, location, size, channels)
    store = folder / "faces.npz"
    known: dict[str, tuple[np.ndarray, bool, str]] = {}
    if store.is_file():
        with np.load(store) as z:
            known = {p: (img, bool(f), s) for p, img, f, s in zip(z["paths"], z["images"], z["found"], z["scores"])}
    todo = [i for i, p in enumerate(native.paths) if p not in known]
    if todo:
        log.info("%s: re-aligning %d face(s) through the face stage (cache %s)", native.name, len(todo), folder)
        images, found, scores = realign_images(native.images[todo], size, channels)
        for k, i in enumerate(todo):
            known[native.paths[i]] = (images[k], bool(found[k]), scores[k])
        _write_cache(folder, known, native)
    faces = native.subset(np.arange(len(native)))
    faces.images = np.stack([known[p][0] for p in native.paths]) if len(native) else face_array(0, size, channels)
    return faces, np.array([known[p][1] for p in native.paths], bool), folder / "manifest.csv"


def _write_cache(folder: Path, known: dict, native: FaceSet) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(known)
    # Written under a per-process name, then renamed: torchrun ranks re-aligning at once never see a half-written file.
    tmp = folder / f"faces.{os.getpid()}.tmp.npz"
    np.savez(tmp, paths=np.array(paths), images=np.stack([known[p][0] for p in paths]),
             found=np.array([known[p][1] for p in paths]), scores=np.array([known[p][2] for p in paths]))
    os.replace(tmp, folder / "faces.npz")
    classes = {p: native.class_names[label] for p, label in zip(native.paths, native.labels)}
    if (folder / "manifest.csv").is_file():  # classes of faces cached by an earlier call
        with open(folder / "manifest.csv", newline="") as f:
            classes = {**{row["path"]: row["class"] for row in csv.DictReader(f)}, **classes}
    tmp = folder / f"manifest.{os.getpid()}.tmp.csv"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "status", "score"])
        for p in paths:
            writer.writerow([p, classes.get(p, ""), "realigned" if known[p][1] else "no_face", known[p][2]])
    os.replace(tmp, folder / "manifest.csv")


def realign_for_training(native: FaceSet, dataset: str, location: Path, size: int, channels: int, miss: str) -> FaceSet:
    """Training / selection faces re-aligned; misses kept as the resized crop or dropped (miss), counted and logged."""
    if miss not in MISS_ACTIONS:
        raise ValueError(f"data.realign_miss: expected one of {', '.join(MISS_ACTIONS)}, got {miss!r}")
    faces, found, manifest = realign_cached(native, dataset, location, size, channels)
    missed = int((~found).sum())
    if miss == "drop" and missed:
        faces = faces.subset(np.flatnonzero(found))
        faces.excluded = {**faces.excluded, NOT_REALIGNED: faces.excluded.get(NOT_REALIGNED, 0) + missed}
    action = "dropped" if miss == "drop" else "kept as the original crop resized"
    faces.name = f"{native.name} re-aligned ({missed} not found, {action})"
    not_found = [p for p, f in zip(native.paths, found) if not f]
    faces.notes = {**faces.notes, "realign": {"faces": len(native), "realigned": len(native) - missed,
                                              "not_found": missed, "realign_miss": miss, "action": action,
                                              "manifest": str(manifest), "not_found_paths": not_found}}
    if missed:
        log.warning("%s: %d of %d face(s) not found by the face stage, %s (data.realign_miss: %s); listed in %s",
                    native.name, missed, len(native), action, miss, manifest)
    return faces
