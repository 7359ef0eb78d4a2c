"""Locate (or fetch once) the YuNet face-detector ONNX file.

Search order, first hit wins:
1. an explicit path argument,
2. the environment variable FER_YUNET_MODEL,
3. the user cache: $XDG_CACHE_HOME/fer/face_detection_yunet_2023mar.onnx (default ~/.cache/fer/...),
4. a download from the official OpenCV Zoo URL into that cache, checked against the published sha256.
   Set FER_OFFLINE=1 to skip the download (tests and air-gapped machines do).

An explicit path or FER_YUNET_MODEL that names a missing file is a configuration error (FileNotFoundError);
a failed download is not: find_yunet_model() logs why and returns None, so backend "auto" can fall back to Haar.
"""

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_URL = "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/" + YUNET_FILENAME
# opencv_zoo keeps the file in Git LFS; its pointer states this sha256 (and 232,589 bytes).
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
ENV_MODEL = "FER_YUNET_MODEL"
ENV_OFFLINE = "FER_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10.0
MAX_DOWNLOAD_BYTES = 16 * 1024 * 1024  # the real file is 232 KB; refuse anything absurd


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/fer, or ~/.cache/fer when XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fer"


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_yunet(dest: Path, url: str = YUNET_URL, sha256: str = YUNET_SHA256,
                   timeout: float = DOWNLOAD_TIMEOUT_S) -> Path | None:
    """Download url to dest, keep it only if its sha256 matches. Returns dest, or None (logged) on any failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    log.info("downloading the YuNet face detector from %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise OSError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes")
                f.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
        partial.unlink(missing_ok=True)
        log.warning("could not download the YuNet model from %s (%s); no network?", url, e)
        return None
    got = sha256_of(partial)
    if got != sha256:
        partial.unlink(missing_ok=True)
        log.error("rejected the YuNet download from %s: sha256 %s, expected %s", url, got, sha256)
        return None
    os.replace(partial, dest)
    return dest


def find_yunet_model(model_path: str | os.PathLike | None = None, download: bool = True) -> Path | None:
    """The YuNet ONNX path by the search order in the module docstring, or None when none is available.

    Raises FileNotFoundError when model_path or $FER_YUNET_MODEL names a file that does not exist.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {path} (given as model_path)")
        return path
    env = os.environ.get(ENV_MODEL)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {path} (from ${ENV_MODEL})")
        return path
    cached = cache_dir() / YUNET_FILENAME
    if cached.is_file():
        return cached
    if not download or offline():
        log.info("no YuNet model at %s and downloading is off (%s set or download=False)", cached, ENV_OFFLINE)
        return None
    return download_yunet(cached)


def require_yunet_model(model_path: str | os.PathLike | None = None) -> Path:
    """Like find_yunet_model, but a missing file is a FileNotFoundError that says where we looked."""
    path = find_yunet_model(model_path)
    if path is None:
        raise FileNotFoundError(
            f"YuNet model {YUNET_FILENAME} not found. Looked at: model_path (not given), ${ENV_MODEL} (not set), "
            f"{cache_dir() / YUNET_FILENAME}; download from {YUNET_URL} "
            f"{'is disabled by $' + ENV_OFFLINE if offline() else 'failed'}. Provide it with model_path=..., "
            f"by setting ${ENV_MODEL}, or by saving the file (sha256 {YUNET_SHA256}) at that cache path."
        )
    return path
