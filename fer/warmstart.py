"""Warm start (`train.init`): begin training from a trained checkpoint's weights instead of a random init.

Fine-tuning a model trained on more faces (the shipped `default`) on one dataset, or on a user's own labelled faces,
reaches a better model in a fraction of the epochs. The architecture (name, head, width, channels) must match; the
input size may differ, as the models are fully convolutional. The classifier's rows are matched by class name, so a
checkpoint with 7 classes starts an 8-class model: the 7 shared rows are copied, the new class's row keeps its
random init. Only weights travel: optimizer, schedule and loss centers start fresh, as in any new run.
"""

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from fer.checkpoint import input_shape, load_model
from fer.config import ConfigError

log = logging.getLogger(__name__)

ARCHITECTURE = ("name", "head", "width", "channels")


def warm_start(model: nn.Module, spec: dict, class_names: list[str], source: str) -> dict:
    """Copy source's weights into model (built from spec for class_names); returns what was copied.

    Returns {'source': path, 'sha256': of the file, 'datasets': lineage(source), 'classes_copied': [...], 'classes_new': [...]}. Raises ConfigError naming 'train.init'
    when the architectures differ or no class is shared.
    """
    trained, checkpoint = load_model(source)
    theirs = checkpoint["model_spec"]
    architecture = {key: theirs.get(key) for key in ARCHITECTURE} | {"channels": input_shape(theirs)[1]}
    differ = [key for key in ARCHITECTURE if architecture[key] != spec[key]]
    if differ:
        raise ConfigError(f"'train.init': {checkpoint['path']} is a different model ("
                          + ", ".join(f"{key} {architecture[key]!r}, this run {spec[key]!r}" for key in differ) + ")")
    their_classes = list(checkpoint["class_names"])
    shared = [name for name in class_names if name in their_classes]
    if not shared:
        raise ConfigError(f"'train.init': {checkpoint['path']} predicts {their_classes}, none of this run's "
                          f"classes {list(class_names)}")
    ours = model.state_dict()
    source_state = trained.state_dict()
    rows_to = torch.tensor([class_names.index(name) for name in shared])
    rows_from = torch.tensor([their_classes.index(name) for name in shared])
    with torch.no_grad():
        for key, value in source_state.items():
            if key.startswith("head."):  # class-major tensors: weight (K, ...) and bias (K,)
                ours[key][rows_to] = value[rows_from].to(ours[key].dtype)
            else:
                ours[key].copy_(value)
    model.load_state_dict(ours)
    digest = hashlib.sha256(Path(checkpoint["path"]).read_bytes()).hexdigest()  # a name like `default` can be re-shipped
    report = {"source": checkpoint["path"], "sha256": digest, "datasets": lineage(checkpoint), "classes_copied": shared,
              "classes_new": [name for name in class_names if name not in shared]}
    log.info("train.init: weights from %s (%d px); classifier rows copied for %s, new for %s", checkpoint["path"],
             theirs["image_size"], shared, report["classes_new"] or "none")
    return report


def lineage(checkpoint: dict) -> list[str]:
    """The datasets a checkpoint's weights have been trained (and selected) on, its own warm starts' included."""
    data = (checkpoint.get("config") or {}).get("data", {})
    own = data.get("sources") or [data.get("dataset")]
    return sorted({name for name in own if name} | set((checkpoint.get("warm_start") or {}).get("datasets", ())))
