"""The datasets: one record each, the single place their facts live.

A record says how the dataset is read (its reader in fer.data.readers and its folder under the data root), which splits
it has and the role each plays in the protocol (train on one, select best.pt on another, report on a third; 'val' is
carved from train, stratified and seeded), the size and colour of its stored crops, its class names, and how
`--detect-faces` / `data.realign` find its faces again. Config validation, the CLI's choices, training, evaluation and the
studies read these records. Adding a dataset = one record here + its reader in fer.data.readers.

Imports nothing but fer.labels, so that fer.config stays light (no OpenCV); readers are named, not imported.
"""

from dataclasses import dataclass, field

from fer.labels import FER2013_CLASSES, FERPLUS_CLASSES

# Samples per split in the official FER2013 release (shared/data/README.md); FER+ rows are FER2013's rows.
_FER2013_SIZES = {"train": 28709, "public": 3589, "private": 3589}


@dataclass(frozen=True)
class Dataset:
    name: str
    reader: str | None  # function of fer.data.readers: (location, split, size, channels) -> FaceSet; None: not read itself
    folder: str  # location under the data root (data/README.md), a file for a csv
    splits: tuple[str, ...]  # what evaluate accepts; 'val' is carved from 'train' (fer.data.splits.carve_validation)
    selection_split: str  # best.pt is chosen on it
    report_split: str  # evaluated after training (fer.evaluate.evaluate_after_training)
    test_split: str  # `run.py evaluate`'s default split
    class_names: tuple[str, ...] | None  # None: the model's (class folders name their own)
    native_size: int | None  # side of the stored crops; None: no fixed size (photos, crops of any size)
    native_colour: bool  # colour at source (gray datasets are replicated into B, G and R when read with 3 channels)
    redetect: str  # how the face stage finds its faces again: 'crops' (inside the stored crops, fer.face.recrop) or
    # 'photos' (the largest face of each raw photo, fer.evaluation.faces.read_photos)
    images: str = ""  # datasets with the same images share this (mixing them would train on one image twice)
    official_sizes: dict[str, int] = field(default_factory=dict)  # samples per split in the official release
    train_split: str = "train"

    @property
    def source(self) -> bool:
        """May be a source of dataset mixed and be re-aligned (data.sources, data.realign): crops of a fixed size."""
        return self.native_size is not None

    @property
    def class_folders(self) -> bool:
        """A tree of class folders: the folder names are the classes (through class_map and the common aliases)."""
        return self.class_names is None

    @property
    def roles(self) -> dict[str, str]:
        return {"train": self.train_split, "selection": self.selection_split, "report": self.report_split}


DATASETS = {d.name: d for d in (
    Dataset("fer2013", "read_fer2013_folder", "fer2013", ("train", "public", "private"), selection_split="public",
            report_split="private", test_split="private", class_names=FER2013_CLASSES, native_size=48,
            native_colour=False, redetect="crops", images="fer2013", official_sizes=_FER2013_SIZES),
    Dataset("fer2013-csv", "read_fer2013_csv", "fer2013/fer2013.csv", ("train", "public", "private"),
            selection_split="public", report_split="private", test_split="private", class_names=FER2013_CLASSES,
            native_size=48, native_colour=False, redetect="crops", images="fer2013", official_sizes=_FER2013_SIZES),
    # FER2013's images with FER+ majority-vote labels; rows without a majority are excluded but counted in the size
    Dataset("ferplus", "read_ferplus", ".", ("train", "public", "private"), selection_split="public",
            report_split="private", test_split="private", class_names=FERPLUS_CLASSES, native_size=48,
            native_colour=False, redetect="crops", images="fer2013", official_sizes=_FER2013_SIZES),
    # its test images are held out from developers: best.pt is chosen on, and reported on, a carve of train
    Dataset("rafdb", "read_rafdb", "rafdb", ("train", "val", "test"), selection_split="val", report_split="val",
            test_split="test", class_names=FER2013_CLASSES, native_size=100, native_colour=True, redetect="crops",
            images="rafdb", official_sizes={"train": 12271, "test": 3068}),
    # <path>/<split>/<class>/ or <path>/<class>/ (read whole); class folder names through class_map and the aliases
    Dataset("folder", "read_class_folder", ".", ("train", "val", "test"), selection_split="val", report_split="val",
            test_split="test", class_names=None, native_size=None, native_colour=True, redetect="photos"),
    # several sources as one 7-class training set (data.sources; fer.data.mixed): each source under its own record
    Dataset("mixed", None, ".", ("train", "val"), selection_split="val", report_split="val", test_split="val",
            class_names=FER2013_CLASSES, native_size=None, native_colour=True, redetect="crops"),
)}

MIXED = "mixed"


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def names() -> tuple[str, ...]:
    """Every dataset a config may name (data.dataset)."""
    return tuple(DATASETS)


def evaluable() -> tuple[str, ...]:
    """The datasets evaluate reads directly (the CLI's --dataset choices): all but mixed, whose sources are evaluated."""
    return tuple(name for name, d in DATASETS.items() if d.reader is not None)


def sources() -> tuple[str, ...]:
    """What data.sources and data.realign may name."""
    return tuple(name for name, d in DATASETS.items() if d.source)
