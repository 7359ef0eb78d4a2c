"""Dataset readers, one per on-disk format, all returning a FaceSet of decoded uint8 faces of the configured size.

channels 1: gray (N, S, S); channels 3: colour (N, S, S, 3) in BGR order (OpenCV's, as cv2.imread returns it). FER2013
and FER+ are gray at source, so their 3-channel faces are the gray face replicated into B, G and R. RAF-DB ships 100x100
colour faces. Faces are resized with INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging.

Nothing is dropped silently: unreadable files land in FaceSet.skipped with the reason, excluded samples are counted
per class in FaceSet.excluded.
"""

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer.labels import COMMON_ALIASES, FER2013_CLASSES, FERPLUS_CLASSES, FERPLUS_VOTE_COLUMNS, RAFDB_LABELS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}
FER2013_SPLIT_PREFIX = {"train": "Training_", "public": "PublicTest_", "private": "PrivateTest_"}


@dataclass
class FaceSet:
    """Decoded faces of one split: images uint8 (N, S, S) gray or (N, S, S, 3) BGR, labels (N,) int64 indices into
    class_names."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    class_names: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    excluded: dict[str, int] = field(default_factory=dict)  # reason or class -> count
    name: str = ""
    notes: dict = field(default_factory=dict)  # what was done to the faces, e.g. re-alignment counts (fer.data.realign)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "FaceSet":
        indices = np.asarray(indices, dtype=np.int64)
        return FaceSet(self.images[indices], self.labels[indices], [self.paths[i] for i in indices], self.class_names,
                       list(self.skipped), dict(self.excluded), self.name, dict(self.notes))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}


def check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (BGR colour), got {channels!r}")


def resize_face(image: np.ndarray, size: int) -> np.ndarray:
    """A square face resized to (size, size): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)


def decode_face(path: str | Path, size: int | None = None, channels: int = 1) -> np.ndarray | str:
    """The file as uint8 gray (H, W) or BGR (H, W, 3) (resized to size x size if given), or the reason it cannot be read.

    A gray file read with channels 3 comes back replicated into B, G and R (OpenCV's IMREAD_COLOR).
    """
    check_channels(channels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        return f"cannot read file: {error.strerror}"
    if data.size == 0:
        return "empty file"
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if image is None:
        return "not a decodable image"
    return image if size is None else resize_face(image, size)


def face_array(n: int, size: int, channels: int) -> np.ndarray:
    """An uninitialised uint8 array for n faces: (n, S, S) or (n, S, S, 3)."""
    return np.empty((n, size, size) if channels == 1 else (n, size, size, 3), np.uint8)


def _decode_all(items: list[tuple[str, int]], class_names, size: int, name: str, channels: int = 1) -> FaceSet:
    # Filled in place: one array of the final size, no list of per-face copies (FER2013 at 112 px colour is ~1.35 GB).
    images = face_array(len(items), size, channels)
    labels, paths, skipped = [], [], []
    for path, label in items:
        image = decode_face(path, size, channels)
        if isinstance(image, str):
            skipped.append((str(path), image))
            continue
        images[len(labels)] = image
        labels.append(label)
        paths.append(str(path))
    if skipped:
        log.warning("%s: %d unreadable file(s), first: %s (%s)", name, len(skipped), *skipped[0])
        images = images[:len(labels)].copy()  # drop the unfilled tail
    return FaceSet(images, np.asarray(labels, dtype=np.int64), paths, tuple(class_names), skipped, {}, name)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")


def read_fer2013_folder(root: str | Path, split: str, size: int = 48, channels: int = 1) -> FaceSet:
    """Kaggle folder layout: train/<class>/Training_*.jpg, test/<class>/{PublicTest,PrivateTest}_*.jpg (gray at source)."""
    if split not in FER2013_SPLIT_PREFIX:
        raise ValueError(f"fer2013: unknown split {split!r}; expected one of {', '.join(FER2013_SPLIT_PREFIX)}")
    root = Path(root)
    folder = root / ("train" if split == "train" else "test")
    _require_dir(folder, "fer2013")
    prefix = FER2013_SPLIT_PREFIX[split]
    items = []
    for label, class_name in enumerate(FER2013_CLASSES):
        class_dir = folder / class_name
        _require_dir(class_dir, "fer2013")
        items += [(str(p), label) for p in sorted(class_dir.iterdir()) if p.name.startswith(prefix)]
    return _decode_all(items, FER2013_CLASSES, size, f"fer2013/{split}", channels)


def read_fer2013_csv(csv_path: str | Path, split: str, size: int = 48, channels: int = 1) -> FaceSet:
    """Original fer2013.csv: columns emotion, pixels (48*48 space-separated grey values), Usage; channels 3 replicates gray."""
    check_channels(channels)
    usage = {"train": "Training", "public": "PublicTest", "private": "PrivateTest"}
    if split not in usage:
        raise ValueError(f"fer2013-csv: unknown split {split!r}; expected one of {', '.join(usage)}")
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"fer2013-csv: file not found: {csv_path}")
    images, labels, paths, skipped = [], [], [], []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            if row["Usage"] != usage[split]:
                continue
            where = f"{csv_path}:{line}"
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.float32)
                label = int(row["emotion"])
            except ValueError:
                skipped.append((where, "non-numeric emotion or pixels"))
                continue
            side = int(round(len(pixels) ** 0.5))
            if side * side != len(pixels) or side == 0 or pixels.min() < 0 or pixels.max() > 255:
                skipped.append((where, f"pixels: {len(pixels)} values, not a square 8-bit image"))
                continue
            if not 0 <= label < len(FER2013_CLASSES):
                skipped.append((where, f"emotion {label} outside 0..{len(FER2013_CLASSES) - 1}"))
                continue
            image = resize_face(pixels.reshape(side, side).astype(np.uint8), size)
            images.append(image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
            labels.append(label)
            paths.append(where)
    if skipped:
        log.warning("fer2013-csv/%s: %d bad row(s), first: %s (%s)", split, len(skipped), *skipped[0])
    stacked = np.stack(images) if images else face_array(0, size, channels)
    return FaceSet(stacked, np.asarray(labels, np.int64), paths, FER2013_CLASSES, skipped, {}, f"fer2013-csv/{split}")


def ferplus_majority(votes: dict[str, int]) -> str | None:
    """FER+ majority vote over the 10 columns (ties go to the first column); None for unknown / not-a-face."""
    best = max(FERPLUS_VOTE_COLUMNS, key=lambda column: votes[column])  # max keeps the first of equal values
    return FERPLUS_VOTE_COLUMNS[best]


def read_ferplus(data_root: str | Path, split: str, size: int = 48, channels: int = 1) -> FaceSet:
    """FER+ labels (ferplus/ferplus_aligned.csv) over the FER2013 images under the same data root; 8 classes; gray at source."""
    usage = {"train": "Training", "public": "PublicTest", "private": "PrivateTest"}
    if split not in usage:
        raise ValueError(f"ferplus: unknown split {split!r}; expected one of {', '.join(usage)}")
    data_root = Path(data_root)
    csv_path = data_root / "ferplus" / "ferplus_aligned.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"ferplus: label file not found: {csv_path}")
    items, excluded = [], Counter()
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["usage"] != usage[split]:
                continue
            if not row["fer2013_path"]:
                excluded["no_image"] += 1
                continue
            label = ferplus_majority({column: int(row[column]) for column in FERPLUS_VOTE_COLUMNS})
            if label is None:
                excluded["unknown_or_not_a_face"] += 1
                continue
            items.append((str(data_root / row["fer2013_path"]), FERPLUS_CLASSES.index(label)))
    faces = _decode_all(items, FERPLUS_CLASSES, size, f"ferplus/{split}", channels)
    faces.excluded = dict(excluded)
    return faces


def read_rafdb(root: str | Path, split: str, size: int = 48, channels: int = 1) -> FaceSet:
    """RAF-DB basic: Image/aligned/<name>_aligned.jpg (100x100 colour) + EmoLabel/list_patition_label.txt (labels 1..7)."""
    if split not in ("train", "test"):
        raise ValueError(f"rafdb: unknown split {split!r}; expected 'train' or 'test'")
    root = Path(root)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise FileNotFoundError(f"rafdb: label file not found: {label_file}")
    items = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_LABELS:
            raise ValueError(f"{label_file}:{number}: expected '<name>.jpg <1..7>', got {line!r}")
        name, label = parts[0], int(parts[1])
        if name.startswith(split + "_"):
            image_path = root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")
            items.append((str(image_path), FER2013_CLASSES.index(RAFDB_LABELS[label])))
    if not items:
        raise ValueError(f"{label_file}: no lines for split {split!r}")
    # A missing file of the asked split is reported through FaceSet.skipped like any unreadable file.
    return _decode_all(items, FER2013_CLASSES, size, f"rafdb/{split}", channels)


def read_class_folder(root: str | Path, class_names=FER2013_CLASSES, size: int = 48, class_map: dict[str, str] | None = None,
                      exclude_unknown: bool = False, channels: int = 1) -> FaceSet:
    """Generic root/<class>/*.{jpg,png,...}; folder names go through class_map, then common aliases (anger -> angry)."""
    root = Path(root)
    _require_dir(root, "folder dataset")
    mapping = {**COMMON_ALIASES, **(class_map or {})}
    items, excluded, unknown = [], Counter(), []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = mapping.get(class_dir.name, mapping.get(class_dir.name.lower(), class_dir.name.lower()))
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if name not in class_names:
            unknown.append(class_dir.name)
            excluded[class_dir.name] += len(files)
            continue
        items += [(str(p), class_names.index(name)) for p in files]
    if unknown and not exclude_unknown:
        raise ValueError(f"{root}: class folder(s) {', '.join(unknown)} not among the model's classes "
                         f"({', '.join(class_names)}); map them with class_map or exclude them explicitly")
    faces = _decode_all(items, class_names, size, f"folder:{root}", channels)
    faces.excluded = dict(excluded)
    return faces


def pixel_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(image.tobytes()).hexdigest() for image in images]


def drop_duplicates_of(faces: FaceSet, reference: FaceSet, reason: str) -> FaceSet:
    """faces without the images whose pixels equal an image of reference (e.g. test images leaked into train)."""
    seen = set(pixel_hashes(reference.images))
    keep = [i for i, h in enumerate(pixel_hashes(faces.images)) if h not in seen]
    result = faces.subset(keep)
    result.excluded = {**faces.excluded, reason: len(faces) - len(keep)}
    return result
