"""Several datasets as one 7-class training set: `data.dataset: mixed` + `data.sources: [fer2013, rafdb]`.

Each source is read under its own protocol (fer.data.splits.load_train_val reads it with the source as the dataset and
every other data key shared, then joins the parts here): its training part trains, its selection part joins the union that selects checkpoints
(FER2013 / FER+: PublicTest; RAF-DB: the seeded validation carve). No test split is read. Sources are relabelled by
class name onto the 7 FER2013 classes; a class outside them (FER+ contempt) is dropped and counted per source in
FaceSet.excluded ('ferplus:contempt'). `ferplus` as a source means FER2013's images with FER+ majority-vote labels.
"""

import dataclasses

import numpy as np

from fer.config import DataConfig
from fer.data.readers import FaceSet, face_array
from fer.labels import FER2013_CLASSES

MIXED_CLASSES = FER2013_CLASSES


def source_config(cfg: DataConfig, source: str) -> DataConfig:
    """The data config of one source: the mixed config with the source as its dataset."""
    return dataclasses.replace(cfg, dataset=source, sources=[], path=None, repeat={})


def relabel(faces: FaceSet, class_names, prefix: str) -> FaceSet:
    """faces with labels indexing class_names (by name); classes not among them dropped and counted as prefix:class."""
    index = np.array([class_names.index(n) if n in class_names else -1 for n in faces.class_names], np.int64)
    new_labels = index[faces.labels] if len(faces) else faces.labels
    keep = np.flatnonzero(new_labels >= 0)
    result = faces.subset(keep)
    result.labels, result.class_names = new_labels[keep], tuple(class_names)
    result.excluded = {f"{prefix}:{key}": n for key, n in faces.excluded.items()}
    result.notes = {f"{prefix}:{key}": note for key, note in faces.notes.items()}
    for k, name in enumerate(faces.class_names):
        if index[k] < 0 and (dropped := int(np.sum(faces.labels == k))):
            result.excluded[f"{prefix}:{name}"] = result.excluded.get(f"{prefix}:{name}", 0) + dropped
    return result


def concatenate(parts: list[FaceSet], name: str) -> FaceSet:
    """One FaceSet of parts sharing class_names (and face shape); skipped and excluded carried over."""
    images = np.concatenate([p.images for p in parts]) if parts else face_array(0, 48, 1)
    return FaceSet(images, np.concatenate([p.labels for p in parts]), [path for p in parts for path in p.paths],
                   parts[0].class_names, [item for p in parts for item in p.skipped],
                   {key: n for p in parts for key, n in p.excluded.items()}, name,
                   {key: note for p in parts for key, note in p.notes.items()})


def repeated(faces: FaceSet, times: int) -> FaceSet:
    """faces listed `times` times over (data.repeat: a smaller source weighs more in each epoch); noted in faces.notes."""
    if times == 1:
        return faces
    result = faces.subset(np.tile(np.arange(len(faces)), times))
    result.notes = {**faces.notes, "repeat": times}
    return result


def union(parts: dict[str, tuple[FaceSet, FaceSet]], repeat: dict[str, int] | None = None) -> tuple[FaceSet, FaceSet]:
    """{source: (training part, selection part)} -> (union of the training parts, each listed repeat[source] times
    (default once), union of the selection parts), relabelled onto the 7 FER2013 classes."""
    repeat = repeat or {}
    trains = [relabel(repeated(train, repeat.get(source, 1)), MIXED_CLASSES, source)
              for source, (train, _) in parts.items()]
    vals = [relabel(val, MIXED_CLASSES, source) for source, (_, val) in parts.items()]
    return (concatenate(trains, "mixed[" + " + ".join(t.name for t in trains) + "]"),
            concatenate(vals, "mixed[" + " + ".join(v.name for v in vals) + "]"))
