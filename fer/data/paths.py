"""Where data lives: --data-root, then env FER_DATA, then <repo>/data."""

import os
from pathlib import Path

from fer.data import registry

REPO_ROOT = Path(__file__).resolve().parents[2]

# Folder of each dataset under the data root (the layout of data/README.md): the registry's records.
DATASET_FOLDERS = {name: dataset.folder for name, dataset in registry.DATASETS.items() if dataset.reader}


def data_root(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("FER_DATA"):
        return Path(os.environ["FER_DATA"])
    return REPO_ROOT / "data"


def dataset_path(dataset: str, path: str | Path | None = None, root: str | Path | None = None) -> Path:
    """The dataset's location: an explicit path wins, else its folder under the data root."""
    if path:
        return Path(path)
    return data_root(root) / registry.get(dataset).folder


def shared_root() -> Path:
    """The read-only shared folder beside the repo (test media, third-party models); env FER_SHARED overrides."""
    return Path(os.environ.get("FER_SHARED") or REPO_ROOT.parent / "shared")


def cache_root() -> Path:
    """Derived data kept between runs (re-aligned faces), outside the work tree: env FER_CACHE, else ~/.cache/fer."""
    return Path(os.environ.get("FER_CACHE") or Path.home() / ".cache" / "fer")
