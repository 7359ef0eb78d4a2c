"""Reading the faces to evaluate and mapping their classes onto a model's.

A split is read as the dataset's crops, or (detect_faces) as faces the face stage finds and aligns: in raw photos for
class folders, inside the dataset's own crops for the dataset layouts (fer.face.recrop). Dataset classes are then mapped
onto the model's (class_map, the common aliases, explicit exclusions, all counted), and a split that is not whole
(unreadable samples, a count other than the official size) is named by completeness_problems.
"""

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from fer.config import DataConfig
from fer.data import registry
from fer.data.readers import IMAGE_SUFFIXES, FaceSet
from fer.data.splits import load_eval_split, native_config
from fer.data.transforms import face_shape
from fer.labels import COMMON_ALIASES

log = logging.getLogger(__name__)

DEDUP_REASON = "duplicate_of_train"  # the excluded-count key fer.data.splits.load_eval_split uses


def read_split(data_cfg: DataConfig, split: str, location: Path, model_classes, seed: int, data_root=None,
               exclude_classes=(), dedup_clean: bool = False, detect_faces: bool = False) -> tuple[FaceSet, np.ndarray | None]:
    """The split's faces labelled with indices into model_classes, and the no-face mask (N,) bool under detect_faces
    (None otherwise). data_cfg carries the model's image size and channels."""
    if dedup_clean and split in ("train", "val"):
        raise ValueError(f"--dedup-clean drops images that also occur in train; it applies to test splits, not {split!r}")
    folder = registry.get(data_cfg.dataset).class_folders
    no_face = None
    if detect_faces:
        if dedup_clean:
            raise ValueError("--dedup-clean compares face pixels with the train split and does not apply to --detect-faces")
        faces, no_face = read_photo_split(data_cfg, split, location, model_classes, seed, data_root)
        if folder:
            check_excluded_folders(faces, data_cfg.class_map, exclude_classes)
    else:
        read_cfg = dataclasses.replace(data_cfg, exclude_unknown=True) if folder else data_cfg  # unknown folders checked below
        faces = load_eval_split(read_cfg, split, seed, data_root, class_names=model_classes, dedup_clean=dedup_clean)
        if folder and not data_cfg.exclude_unknown:
            check_excluded_folders(faces, data_cfg.class_map, exclude_classes)
    check_exclusions_used(faces, exclude_classes, data_cfg.class_map)
    # Folder readers already applied class_map to the folder names; applying it twice would chain mappings.
    mapped = map_classes(faces, model_classes, None if folder else data_cfg.class_map, exclude_classes)
    if no_face is not None and len(mapped) != len(faces):  # exclusions dropped photos: keep the no-face flags in step
        kept = set(mapped.paths)
        no_face = no_face[[path in kept for path in faces.paths]]
    return mapped, no_face


def parse_class_map(text: str | None) -> dict[str, str]:
    """'anger=angry,sadness=sad' -> {'anger': 'angry', 'sadness': 'sad'}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--class-map: expected dataset_class=model_class, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def parse_names(text: str | None) -> tuple[str, ...]:
    """'contempt, unknown' -> ('contempt', 'unknown')."""
    return tuple(filter(None, (part.strip() for part in (text or "").split(","))))


def map_classes(faces: FaceSet, model_classes, class_map: dict[str, str] | None = None, exclude=()) -> FaceSet:
    """faces relabelled to indices into model_classes; classes named in exclude are dropped and counted per class.

    A dataset class that is neither a model class (after class_map and the common aliases) nor excluded is an error.
    """
    model_classes = tuple(model_classes)
    mapping = {**COMMON_ALIASES, **(class_map or {})}
    excluded_names = {name.lower() for name in exclude}
    new_index = np.full(len(faces.class_names), -1, dtype=np.int64)
    dropped, unknown = [], []
    for k, name in enumerate(faces.class_names):
        target = mapping.get(name, name)
        if {name.lower(), target.lower()} & excluded_names:
            dropped.append(k)
        elif target in model_classes:
            new_index[k] = model_classes.index(target)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{faces.name}: dataset class(es) {', '.join(unknown)} not among the model's classes "
                         f"({', '.join(model_classes)}); map them with --class-map {unknown[0]}=<class> or drop them "
                         f"with --exclude-classes {','.join(unknown)}")
    excluded = dict(faces.excluded)
    for k in dropped:
        excluded[faces.class_names[k]] = excluded.get(faces.class_names[k], 0) + int(np.sum(faces.labels == k))
    keep = np.flatnonzero(new_index[faces.labels] >= 0)
    result = faces.subset(keep)
    result.labels = new_index[result.labels]
    result.class_names = model_classes
    result.excluded = excluded
    return result


def check_excluded_folders(faces: FaceSet, class_map: dict[str, str], exclude) -> None:
    """Class folders the reader left out (unknown to the model) must have been excluded explicitly."""
    mapping = {**COMMON_ALIASES, **class_map}
    allowed = {name.lower() for name in exclude}
    folders = [key for key in faces.excluded if key != DEDUP_REASON]
    unexpected = [key for key in folders if not {key.lower(), mapping.get(key, key).lower()} & allowed]
    if unexpected:
        raise ValueError(f"{faces.name}: class folder(s) {', '.join(unexpected)} not among the model's classes "
                         f"({', '.join(faces.class_names)}); map them with --class-map {unexpected[0]}=<class> or drop "
                         f"them with --exclude-classes {','.join(unexpected)}")


def check_exclusions_used(faces: FaceSet, exclude, class_map: dict[str, str]) -> None:
    """An exclusion that names no class of the dataset is a typo, not a no-op."""
    mapping = {**COMMON_ALIASES, **class_map}
    known = {k.lower() for k in faces.excluded} | {n.lower() for n in faces.class_names}
    known |= {mapping.get(n, n).lower() for n in faces.class_names}
    unused = [name for name in exclude if name.lower() not in known]
    if unused:
        raise ValueError(f"{faces.name}: --exclude-classes {', '.join(unused)} names no class of the dataset "
                         f"(classes: {', '.join(faces.class_names)})")


def read_photos(folder: str | Path, model_classes, size: int, class_map: dict[str, str], detector,
                channels: int = 1) -> tuple[FaceSet, np.ndarray]:
    """Class-folder tree of raw photos -> (aligned faces, no_face mask (N,) bool).

    The largest detected face of each photo is aligned to (size, size), gray or BGR (channels 1 or 3); a photo without a face keeps an all-zero
    placeholder and is flagged in no_face (the caller counts it as a wrong prediction). Unreadable files are skipped.
    """
    from fer.face import align_face, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder not found: {folder}")
    mapping = {**COMMON_ALIASES, **class_map}
    items, excluded = [], Counter()
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = mapping.get(class_dir.name, mapping.get(class_dir.name.lower(), class_dir.name.lower()))
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if name not in model_classes:
            excluded[class_dir.name] += len(files)
            continue
        items += [(str(p), model_classes.index(name)) for p in files]
    images, labels, paths, skipped, no_face, multiple = [], [], [], [], [], 0
    for path, label in items:
        try:
            image_bgr = read_image(path)
        except (OSError, ValueError) as error:
            skipped.append((path, str(error)))
            continue
        found = detector.detect(image_bgr)
        multiple += len(found) > 1
        if found:
            face = max(found, key=lambda f: f.box[2] * f.box[3])  # the photo's subject: the largest face
            images.append(align_face(image_bgr, face, size, channels=channels))
        else:
            images.append(np.zeros(face_shape(size, channels), np.uint8))
        no_face.append(not found)
        labels.append(label)
        paths.append(path)
    if multiple:
        log.info("%s: %d photo(s) with several faces; the largest face was used", folder, multiple)
    stacked = np.stack(images) if images else np.zeros((0, *face_shape(size, channels)), np.uint8)
    faces = FaceSet(stacked, np.asarray(labels, np.int64), paths, tuple(model_classes), skipped, dict(excluded),
                    f"photos:{folder}")
    return faces, np.asarray(no_face, dtype=bool)


def completeness_problems(faces: FaceSet, dataset: str, split: str) -> list[str]:
    """Why the split is not whole: unreadable samples, or a count that differs from the official split size."""
    problems = []
    if faces.skipped:
        first = "; ".join(f"{path} ({reason})" for path, reason in faces.skipped[:3])
        problems.append(f"{len(faces.skipped)} sample(s) of {faces.name} could not be read, first: {first}")
    expected = registry.get(dataset).official_sizes.get(split)
    listed = len(faces) + len(faces.skipped) + sum(faces.excluded.values())
    if expected is not None and listed != expected:
        problems.append(f"{faces.name}: {listed} samples found (evaluated + unreadable + excluded), the official split "
                        f"has {expected}")
    return problems


def read_photo_split(data_cfg: DataConfig, split: str, location: Path, model_classes, seed: int,
                      data_root) -> tuple[FaceSet, np.ndarray]:
    """Faces found and aligned by the face stage, with the no-face mask: raw photos for folders, the dataset's own
    crops (re-detected inside the crop, fer.face.recrop) for the dataset layouts."""
    try:
        from fer.face import FaceDetector
    except ImportError as error:
        raise ValueError(f"--detect-faces needs the face stage (fer.face.detect, fer.face.align): {error}") from error
    if registry.get(data_cfg.dataset).redetect == "photos":
        folder = location / split if (location / split).is_dir() else location
        return read_photos(folder, model_classes, data_cfg.image_size, data_cfg.class_map, FaceDetector(),
                           data_cfg.channels)
    from fer.data.realign import realign_cached

    native = load_eval_split(native_config(data_cfg), split, seed, data_root)
    faces, found, manifest = realign_cached(native, data_cfg.dataset, location, data_cfg.image_size, data_cfg.channels)
    faces.name = f"{native.name} (faces re-detected and aligned)"
    if not found.all():
        log.warning("%s: the face stage found no face in %d of %d crops; counted as errors (listed in report.json and "
                    "%s)", native.name, int((~found).sum()), len(found), manifest)
    return faces, ~found
