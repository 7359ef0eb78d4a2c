"""Checkpoints: weights + model config + class names + resolved config + metrics, written atomically.

Everything is plain tensors, numbers, strings, lists and dicts, so `torch.load(path, weights_only=True)` reads it.
Shipped models live in fer/weights/<name>.pt and are addressable by name (`--checkpoint fer2013`).
"""

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from fer.models import MODELS, create_model

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "fer2013"
DEFAULT_NAME = "default"  # resolves to weights/default.pt once one ships, else to DEFAULT_MODEL


def shipped_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def resolve_checkpoint(name_or_path: str | Path | None) -> Path:
    """A shipped model name (None: the default) or a path to a checkpoint file."""
    name_or_path = DEFAULT_NAME if name_or_path is None else str(name_or_path)
    if name_or_path == DEFAULT_NAME and not (WEIGHTS_DIR / f"{DEFAULT_NAME}.pt").is_file():
        name_or_path = DEFAULT_MODEL
    shipped = WEIGHTS_DIR / f"{name_or_path}.pt"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_dir() and (path / "best.pt").is_file():
        return path / "best.pt"
    if path.is_file():
        return path
    raise FileNotFoundError(f"checkpoint {name_or_path!r} is neither a file nor a shipped model "
                            f"(shipped: {', '.join(shipped_models()) or 'none'})")


def atomic_save(obj, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_spec(name: str, num_classes: int, head: str, width: int, image_size: int, prob_scale: float,
               channels: int = 1) -> dict:
    return {"name": name, "num_classes": num_classes, "head": head, "width": width, "image_size": image_size,
            "prob_scale": prob_scale, "channels": channels}


def input_shape(spec: dict) -> tuple[int, int]:
    """(image_size, channels) a checkpoint's model takes; checkpoints from before colour input have no 'channels': gray."""
    return int(spec["image_size"]), int(spec.get("channels", 1))


def build_model(spec: dict) -> nn.Module:
    return create_model(spec["name"], spec["num_classes"], head=spec["head"], width=spec["width"],
                        in_channels=input_shape(spec)[1])


def read_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True) with its failures said in one line (a ValueError naming the file). torch's own
    messages run to pages and advise weights_only=False, which would run whatever code the file carries: never repeat
    that advice."""
    if path.suffix == ".onnx":
        raise ValueError(f"{path}: an ONNX model, not a torch checkpoint; run it with --backend onnxruntime or opencv")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise ValueError(f"{path}: refused: the file is a pickle that would import and run {unsafe.group(1)}; a fer "
                             "checkpoint holds only tensors, numbers, strings, lists and dicts") from None
        reason = next((line for line in str(error).splitlines()[1:] if line.strip() and "WeightsUnpickler" not in line
                       and not line.startswith("Please file")), "")
        raise ValueError(f"{path}: not a fer checkpoint: a pickle with content weights-only loading does not read "
                         f"({reason.strip() or 'unknown'})") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError) as error:
        first = str(error).split(". ")[0] or type(error).__name__
        raise ValueError(f"{path}: truncated or damaged checkpoint ({first})") from None
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError, OSError) as error:
        # a file that is no pickle at all: torch's unpickler reads garbage opcodes and fails anywhere
        raise ValueError(f"{path}: not a torch checkpoint (unreadable as one: {type(error).__name__} {error})") from None


def load_checkpoint(name_or_path: str | Path | None) -> dict:
    path = resolve_checkpoint(name_or_path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a fer checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    missing = {"model_spec", "class_names", "state_dict"} - set(checkpoint)
    if missing:
        raise ValueError(f"{path}: not a fer checkpoint (missing {', '.join(sorted(missing))})")
    name = checkpoint["model_spec"].get("name") if isinstance(checkpoint["model_spec"], dict) else None
    if name not in MODELS:
        raise ValueError(f"{path}: unknown architecture {name!r} in model_spec (known: {', '.join(MODELS)})")
    checkpoint["path"] = str(path)
    return checkpoint


def load_model(name_or_path: str | Path | dict | None) -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, checkpoint dict). A dict is a
    checkpoint load_checkpoint has already read (with its "path"), used as it is."""
    checkpoint = name_or_path if isinstance(name_or_path, dict) else load_checkpoint(name_or_path)
    try:
        model = build_model(checkpoint["model_spec"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{checkpoint['path']}: the weights do not fit its model_spec ({first})") from None
    return model.eval(), checkpoint


def export_checkpoint(src: str | Path, name: str, notes: dict | None = None, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Ship a trained checkpoint as fer/weights/<name>.pt: weights, model spec, class names, config and metrics only
    (no optimizer state), weights stored as float16, so it stays small and loads by name."""
    checkpoint = load_checkpoint(src)
    shipped = {key: checkpoint[key] for key in ("model_spec", "class_names", "config", "metrics")}
    history = (checkpoint.get("train_state") or {}).get("history") or []
    if not shipped["metrics"] and history:  # last.pt: the metrics of the last epoch it finished, from its own history
        shipped["metrics"] = history[-1]
    # the weights it started from, the models it was distilled from, its temperature (fer.calibration)
    for provenance in ("warm_start", "teachers", "calibration"):
        if provenance in checkpoint:
            shipped[provenance] = checkpoint[provenance]
    # float16 storage halves the package size; load_state_dict casts back to the model's float32.
    shipped["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    shipped["notes"] = notes or {}
    destination = Path(weights_dir) / f"{name}.pt"
    atomic_save(shipped, destination)
    return destination
