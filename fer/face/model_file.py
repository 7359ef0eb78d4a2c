"""The YuNet face-detector ONNX file: vendored in fer/face/yunet/, checked by sha256, overridable.

Which file is used, first hit wins:
1. an explicit path (`--yunet-model`, FaceDetector(model_path=...)),
2. the environment variable FER_YUNET_MODEL,
3. the copy shipped inside the package (fer/face/yunet/, MIT licence, source in its README.md).

An override names any YuNet-format file the user chose, so only its existence is checked. The shipped copy must match
YUNET_SHA256: a mismatch (a damaged install) is an error, never a silent switch to another detector.
"""

import hashlib
import os
from pathlib import Path

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
# opencv_zoo keeps the file in Git LFS; its pointer states this sha256 (and 232,589 bytes).
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
VENDORED_YUNET = Path(__file__).resolve().parent / "yunet" / YUNET_FILENAME
ENV_MODEL = "FER_YUNET_MODEL"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_vendored(path: Path, sha256: str = YUNET_SHA256) -> Path:
    """The shipped file, verified; FileNotFoundError or ValueError (naming the file) when it is missing or altered."""
    if not path.is_file():
        raise FileNotFoundError(f"the YuNet model shipped with fer is missing: {path} (reinstall fer-toolkit, or "
                                f"pass --yunet-model / set ${ENV_MODEL})")
    got = sha256_of(path)
    if got != sha256:
        raise ValueError(f"{path}: sha256 {got} does not match the shipped YuNet model ({sha256}); the install is "
                         f"damaged (reinstall fer-toolkit, or pass --yunet-model / set ${ENV_MODEL})")
    return path


def yunet_model_path(model_path: str | os.PathLike | None = None) -> Path:
    """The YuNet ONNX path by the order in the module docstring. FileNotFoundError names a missing override."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {path} (given as --yunet-model / model_path)")
        return path
    env = os.environ.get(ENV_MODEL)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {path} (from ${ENV_MODEL})")
        return path
    return check_vendored(VENDORED_YUNET)
