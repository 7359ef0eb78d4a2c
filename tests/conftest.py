"""Shared fixtures: the real data root and the shared media folder (read in place, never copied)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_SHARED") or REPO.parent / "shared")
DATA = Path(os.environ.get("FER_DATA") or SHARED / "data")

# The tests use the YuNet copy shipped inside the package, as a user's first run does; subprocesses inherit this.
# tests/test_face.py sets the override itself where it tests it.
os.environ.pop("FER_YUNET_MODEL", None)
os.environ.setdefault("FER_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "fer2013" / "train").is_dir(), f"real data not found at {DATA}; set FER_DATA"
    return DATA


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"shared folder not found at {SHARED}; set FER_SHARED"
    return SHARED
