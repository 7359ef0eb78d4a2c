"""Shared fixtures: the real data root and the shared media folder (read in place, never copied)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_SHARED") or REPO.parent / "shared")
DATA = Path(os.environ.get("FER_DATA") or SHARED / "data")

# Tests never download: the YuNet file is read in place from the shared models folder, and subprocesses inherit this.
os.environ.setdefault("FER_YUNET_MODEL", str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"))
os.environ.setdefault("FER_OFFLINE", "1")
os.environ.setdefault("FER_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "fer2013" / "train").is_dir(), f"real data not found at {DATA}; set FER_DATA"
    return DATA


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"shared folder not found at {SHARED}; set FER_SHARED"
    return SHARED
