"""Warm start (`train.init`): begin training from a trained checkpoint's weights instead of a random init.

Fine-tuning a model trained on more faces (the shipped `default`) on one dataset, or on a user's own labelled faces,
reaches a better model in a fraction of the epochs. The architecture (name, head, width) must match; the input size
may differ, as the models are fully convolutional. The classifier's rows are matched by class name, so a
checkpoint with 7 classes starts an 8-class model: the 7 shared rows are copied, the new class's row keeps its
random init. A gray model can start a colour one and the reverse: the first convolution is converted so that it
gives the same response on the same face (gray -> colour: weights times OpenCV's BGR-to-gray luma coefficients, exact
since the input scaling is affine with the same offset for every channel; colour -> gray: summed over the channels,
exact on gray faces replicated into B, G and R). Only weights travel: optimizer, schedule and loss centers start
fresh, as in any new run.

`train.init: face_resnet_dlib` starts a `face_resnet` from dlib's face-recognition weights instead
(fer.models.face_resnet_init; fetched once with `run.py fetch-backbone`): every layer but the classifier, with its
batch norms re-parametrised on the run's own training faces.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer.checkpoint import input_shape, load_checkpoint, load_model
from fer.config import ConfigError
from fer.face.model_file import sha256_of

log = logging.getLogger(__name__)

ARCHITECTURE = ("name", "head", "width")
BACKBONE = "face_resnet_dlib"  # train.init naming the pretrained backbone rather than a checkpoint
BACKBONE_STATISTICS_FACES = 512  # training faces whose channel statistics re-parametrise the backbone's batch norms
LUMA_BGR = (0.114, 0.587, 0.299)  # cv2.COLOR_BGR2GRAY: Y = 0.299 R + 0.587 G + 0.114 B


def check_sources(init: str, teachers: list[str]) -> dict[str, dict]:
    """Read the checkpoints that train.init and train.teacher name (or the fetched backbone) before the run reads any
    data: a missing or damaged file is then a one-line error at once, not after the dataset (minutes with
    re-alignment) has been loaded. Whether they fit the run (architecture, classes, input) is checked where they are
    used. Returns what was read, by the name or path given (the backbone: its weights), for warm_start and
    recipe.Teacher to use instead of reading the files again."""
    from fer.models.pretrained import face_resnet_state_dict

    if BACKBONE in teachers:
        raise ConfigError(f"'train.teacher': {BACKBONE} is the face-recognition backbone, not a trained expression "
                          "model: name it in train.init, and a trained checkpoint as the teacher")
    loaded = {}
    named = [("train.init", init)] if init else []
    for key, source in named + [("train.teacher", teacher) for teacher in teachers]:
        try:
            if source == BACKBONE:
                loaded[source] = face_resnet_state_dict()
            elif source not in loaded:
                loaded[source] = load_checkpoint(source)
        except (ValueError, FileNotFoundError) as error:
            raise ConfigError(f"'{key}': {error}") from None
    return loaded


def warm_start(model: nn.Module, spec: dict, class_names: list[str], source: str, faces=None,
               checkpoint: dict | None = None) -> dict:
    """Copy source's weights into model (built from spec for class_names); returns what was copied. checkpoint: the
    source already read (check_sources; for BACKBONE its weights), else it is read here.

    Returns {'source': path, 'sha256': of the file, 'datasets': lineage(source), 'classes_copied': [...],
    'classes_new': [...]}. Raises ConfigError naming 'train.init' when the architectures differ or no class is shared.
    source BACKBONE: dlib's weights into a face_resnet; faces (a FaceSet, the run's training faces) set its batch-norm
    statistics.
    """
    if source == BACKBONE:
        return backbone_start(model, spec, faces, checkpoint)
    trained, checkpoint = load_model(checkpoint or source)
    theirs = checkpoint["model_spec"]
    differ = [key for key in ARCHITECTURE if theirs.get(key) != spec[key]]
    if differ:
        raise ConfigError(f"'train.init': {checkpoint['path']} is a different model ("
                          + ", ".join(f"{key} {theirs.get(key)!r}, this run {spec[key]!r}" for key in differ) + ")")
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
            elif value.shape != ours[key].shape:  # the first convolution of a model with other input channels
                ours[key].copy_(convert_input_channels(value, ours[key].shape[1]))
            else:
                ours[key].copy_(value)
    model.load_state_dict(ours)
    report = provenance(checkpoint) | {"classes_copied": shared,
                                       "classes_new": [name for name in class_names if name not in shared]}
    log.info("train.init: weights from %s (%d px, %d channel(s)); classifier rows copied for %s, new for %s",
             checkpoint["path"], *input_shape(theirs), shared, report["classes_new"] or "none")
    return report


def backbone_start(model: nn.Module, spec: dict, faces, cached: dict | None = None) -> dict:
    from fer.data.transforms import to_tensor
    from fer.models.face_resnet_init import init_from_backbone

    if spec["name"] != "face_resnet":
        raise ConfigError(f"'train.init': {BACKBONE} starts the face_resnet model only, this run's model is {spec['name']!r}")
    x = None
    if faces is not None and len(faces):
        pick = np.random.default_rng(0).permutation(len(faces))[:BACKBONE_STATISTICS_FACES]
        x = to_tensor(faces.images[np.sort(pick)])
    try:
        report = init_from_backbone(model, x, cached)
    except FileNotFoundError as error:
        raise ConfigError(f"'train.init': {error}") from None
    log.info("train.init: face_resnet from dlib's face-recognition weights; %d batch norms re-parametrised on %d "
             "training faces", report["batchnorm_reparametrised"], report["faces_for_statistics"])
    return report


def convert_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first-convolution weight (O, 1 or 3, k, k) for `channels` inputs with the same response (module docstring)."""
    if weight.shape[1] == 1 and channels == 3:
        return weight * torch.tensor(LUMA_BGR, dtype=weight.dtype).view(1, 3, 1, 1)
    if weight.shape[1] == 3 and channels == 1:
        return weight.sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert a first convolution with {weight.shape[1]} input channels to {channels}")


def provenance(checkpoint: dict) -> dict:
    """{source, sha256, datasets} of a loaded checkpoint: the exact file (a name like `default` can be re-shipped) and
    what it was trained on, for the checkpoints of a run that starts from it or learns from it."""
    path = checkpoint["path"]
    return {"source": path, "sha256": sha256_of(Path(path)), "datasets": lineage(checkpoint)}


def lineage(checkpoint: dict) -> list[str]:
    """The datasets a checkpoint's weights have been trained (and selected) on, its own warm starts' included."""
    data = (checkpoint.get("config") or {}).get("data", {})
    own = data.get("sources") or [data.get("dataset")]
    return sorted({name for name in own if name} | set((checkpoint.get("warm_start") or {}).get("datasets", ())))
