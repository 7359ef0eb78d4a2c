"""Facts the README install promises: a cv2 with GUI support (live windows) and OpenCV's Haar cascade files."""

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2


def test_cv2_has_gui_support():
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation()).group(1)
    assert gui != "NONE", f"cv2 {cv2.__version__} is a headless build; run scripts/install.sh"


def test_haar_cascades_are_present():
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml"):
        path = Path(cv2.data.haarcascades) / name
        assert path.is_file(), f"{path} missing: OpenCV 5 wheels no longer ship cascades, pin opencv-python<5"
        assert not cv2.CascadeClassifier(str(path)).empty()


def test_losses_import_with_torch_alone():
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('cv2', 'albumentations', 'sklearn', 'yaml', 'matplotlib', 'tqdm'):\n"
               "            raise ImportError('blocked ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import fer.losses\n"
               "assert 'cv2' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", blocker], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shipped_yunet_is_package_data():
    """The wheel must carry the detector: pyproject's package-data globs cover the vendored file, licence and README."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from fer.face.model_file import VENDORED_YUNET

    repo = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fer"]
    for path in (VENDORED_YUNET, VENDORED_YUNET.with_name("LICENSE"), VENDORED_YUNET.with_name("README.md")):
        relative = path.relative_to(repo / "fer")
        assert path.is_file() and any(relative.match(g) for g in globs), f"{relative} not covered by {globs}"
