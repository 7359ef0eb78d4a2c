"""The Python API: same faces as `run.py predict --json`, classify for pre-aligned faces, a quiet lazy import."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer import checkpoint
from fer.face import FaceDetector, align_face, read_image
from fer.predict import predict_images

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
PHOTO = SHARED / "media" / "two_people.jpg"


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_predict_equals_the_predict_json(backend):
    from fer import ExpressionRecognizer

    recognizer = ExpressionRecognizer(backend=backend)
    faces = recognizer.predict(read_image(PHOTO))
    (expected,) = predict_images([PHOTO], recognizer.classifier, FaceDetector())
    assert len(faces) == 2 and faces == expected["faces"]


def test_classify_pre_aligned_faces():
    from fer import ExpressionRecognizer

    recognizer = ExpressionRecognizer(model="rafdb")
    image = read_image(PHOTO)
    assert recognizer.channels == 3, "rafdb is a colour model"
    crops = np.stack([align_face(image, face, recognizer.input_size, channels=recognizer.channels)
                      for face in FaceDetector().detect(image)])
    probs = recognizer.classify(crops)
    labels = [recognizer.class_names[k] for k in probs.argmax(1)]
    assert probs.shape == (2, 7) and labels == [f["label"] for f in recognizer.predict(image)]
    with pytest.raises(ValueError, match="uint8"):
        recognizer.classify(crops.astype(np.float32))
    with pytest.raises(ValueError, match="'cuda:0' is not one of auto, cpu, cuda"):
        ExpressionRecognizer(device="cuda:0")
    with pytest.raises(ValueError, match="runs with --backend torch"):
        ExpressionRecognizer(backend="opencv", device="cuda")


def test_default_means_default_pt_once_it_ships(monkeypatch, tmp_path):
    shutil.copy(checkpoint.WEIGHTS_DIR / f"{checkpoint.DEFAULT_MODEL}.pt", tmp_path)
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    assert checkpoint.resolve_checkpoint("default") == tmp_path / f"{checkpoint.DEFAULT_MODEL}.pt", "none shipped yet"
    shutil.copy(tmp_path / f"{checkpoint.DEFAULT_MODEL}.pt", tmp_path / "default.pt")
    assert checkpoint.resolve_checkpoint("default") == tmp_path / "default.pt"
    assert checkpoint.resolve_checkpoint(None) == tmp_path / "default.pt"


def test_import_is_lazy_quiet_and_offline():
    """import fer loads nothing heavy; using the API opens no window, touches no network and prints nothing."""
    script = ("import socket, sys\n"
              "def no_network(*a, **k):\n"
              "    raise OSError('network used')\n"
              "socket.socket.connect = no_network\n"
              "import fer\n"
              "assert 'cv2' not in sys.modules and 'fer.api' not in sys.modules, 'import fer must stay light'\n"
              "from fer import ExpressionRecognizer\n"
              "import cv2\n"
              "def no_window(*a, **k):\n"
              "    raise AssertionError('a window was opened')\n"
              "cv2.namedWindow = cv2.imshow = no_window\n"
              f"faces = ExpressionRecognizer().predict(cv2.imread({str(PHOTO)!r}))\n"
              "assert len(faces) == 2\n")
    env = {k: v for k, v in os.environ.items() if k != "FER_YUNET_MODEL"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "", (result.stdout, result.stderr)
