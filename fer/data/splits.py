"""The evaluation protocol: which split trains, which selects checkpoints, which reports (fer.data.registry's roles).

FER2013 and FER+: train on `train`, select on `public` (PublicTest), report `private` (PrivateTest).
RAF-DB and class folders: a stratified, seeded validation split is carved from the training part; the test split is never
used for selection. Dataset mixed: each source under its own protocol, the parts joined (fer.data.mixed).
"""

import dataclasses
import json
import logging

import numpy as np
from sklearn.model_selection import train_test_split

from fer.config import DataConfig
from fer.data import mixed, readers, realign, registry
from fer.data.paths import dataset_path
from fer.labels import FER2013_CLASSES

log = logging.getLogger(__name__)

CARVED = "val"  # a split name that is carved from train rather than stored
SPLITS = {name: registry.DATASETS[name].splits for name in registry.evaluable()}


def read_split(cfg: DataConfig, split: str, root=None, class_names=FER2013_CLASSES) -> readers.FaceSet:
    """Read one split as stored on disk (no carving)."""
    dataset = registry.get(cfg.dataset)
    if dataset.reader is None:
        raise ValueError(f"{cfg.dataset}: not read as one dataset; read each of its sources")
    location = dataset_path(cfg.dataset, cfg.path, root)
    read = getattr(readers, dataset.reader)
    if not dataset.class_folders:
        return read(location, split, cfg.image_size, cfg.channels)
    # class folders: <path>/<split>/<class>/ when split folders exist, else <path>/<class>/ is the whole (train) set.
    folder = location / split if (location / split).is_dir() else location
    return read(folder, class_names, cfg.image_size, cfg.class_map, cfg.exclude_unknown, cfg.channels)


def limit_per_class(faces: readers.FaceSet, max_per_class: int | None, seed: int) -> readers.FaceSet:
    if not max_per_class:
        return faces
    rng = np.random.default_rng(seed)
    keep = [i for label in range(len(faces.class_names))
            for i in rng.permutation(np.flatnonzero(faces.labels == label))[:max_per_class]]
    return faces.subset(sorted(keep))


def carve_validation(faces: readers.FaceSet, fraction: float, seed: int) -> tuple[readers.FaceSet, readers.FaceSet]:
    indices = np.arange(len(faces))
    train_idx, val_idx = train_test_split(indices, test_size=fraction, random_state=seed, stratify=faces.labels)
    train, val = faces.subset(np.sort(train_idx)), faces.subset(np.sort(val_idx))
    train.name, val.name = faces.name + " (train part)", faces.name + f" (val part, {fraction:.0%}, seed {seed})"
    return train, val


def load_train_val(cfg: DataConfig, seed: int = 0, root=None) -> tuple[readers.FaceSet, readers.FaceSet]:
    """Training and validation (checkpoint selection) sets under the dataset's protocol.

    dataset mixed: the union of its sources' sets (fer.data.mixed). A dataset named in cfg.realign is read at its
    stored size in colour, carved, deduplicated and limited exactly as without re-alignment (the same images end up in
    each part), then re-aligned through the face stage (fer.data.realign).
    """
    if cfg.dataset == registry.MIXED:
        return mixed.union({source: load_train_val(mixed.source_config(cfg, source), seed, root)
                            for source in cfg.sources}, cfg.repeat)
    dataset = registry.get(cfg.dataset)
    realigned = cfg.dataset in cfg.realign
    stored = native_config(cfg) if realigned else cfg  # how the files are read
    train = read_split(stored, dataset.train_split, root)
    if dataset.selection_split == CARVED:
        train, val = carve_validation(train, cfg.val_fraction, seed)
    else:
        val = read_split(stored, dataset.selection_split, root)
    if cfg.dedup_train:
        train = readers.drop_duplicates_of(train, read_split(stored, dataset.test_split, root), "duplicate_of_test")
        train = readers.drop_duplicates_of(train, val, "duplicate_of_val")
    train = limit_per_class(train, cfg.max_per_class, seed)
    val = limit_per_class(val, cfg.max_per_class, seed)
    if realigned:
        location = dataset_path(cfg.dataset, cfg.path, root)
        train, val = (realign.realign_for_training(faces, cfg.dataset, location, cfg.image_size, cfg.channels,
                                                   cfg.realign_miss) for faces in (train, val))
    for faces in (train, val):
        if faces.skipped:
            log.warning("%s: %d file(s) could not be read and are not used", faces.name, len(faces.skipped))
    return train, val


def native_config(cfg: DataConfig) -> DataConfig:
    """cfg reading the dataset's crops as stored: their own size, in colour (the face stage's input)."""
    size = registry.get(cfg.dataset).native_size
    if size is None:
        raise ValueError(f"re-alignment reads dataset crops; {cfg.dataset!r} has no stored crop size "
                         f"(one of {', '.join(registry.sources())})")
    return dataclasses.replace(cfg, image_size=size, channels=3)


def load_eval_split(cfg: DataConfig, split: str, seed: int = 0, root=None, class_names=FER2013_CLASSES,
                    dedup_clean: bool = False) -> readers.FaceSet:
    """A split for evaluation; 'val' is recarved exactly as in training. dedup_clean drops images that also occur in train."""
    dataset = registry.get(cfg.dataset)
    if split not in dataset.splits:
        raise ValueError(f"{cfg.dataset}: unknown split {split!r}; expected one of {', '.join(dataset.splits)}")
    if split == CARVED:
        faces = carve_validation(read_split(cfg, dataset.train_split, root, class_names), cfg.val_fraction, seed)[1]
    else:
        faces = read_split(cfg, split, root, class_names)
    if dedup_clean:
        faces = readers.drop_duplicates_of(faces, read_split(cfg, dataset.train_split, root, class_names),
                                           "duplicate_of_train")
    return faces


def write_data_manifest(path, parts: dict) -> dict:
    """<out_dir>/data.json: per part (train, val) its name, size, class counts, unreadable / excluded counts and notes
    (re-alignment: how many faces the face stage did not find, what was done with them, and their paths)."""
    manifest = {part: {"name": faces.name, "n": len(faces), "class_counts": faces.class_counts(),
                       "n_skipped": len(faces.skipped), "skipped": [list(item) for item in faces.skipped],
                       "excluded": dict(faces.excluded), "notes": faces.notes} for part, faces in parts.items()}
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
