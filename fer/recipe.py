"""Recipe pieces the trainer switches on by config: EMA of the weights, mixup/cutmix, knowledge distillation.

Each is off by default and then costs nothing: train.py calls these in a few lines and a default run is unchanged.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from fer.checkpoint import load_model
from fer.config import ConfigError
from fer.data.transforms import to_tensor
from fer.warmstart import provenance

MIX_STREAM = 7919  # extra seed word: the mixing draws never coincide with the augmentation's (seed, epoch, batch) stream


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """EMA copy of the model (torch's AveragedModel), or None for decay 0.

    use_buffers=True averages the BatchNorm running statistics too, but averaged statistics do not describe averaged
    weights (see recalibrate_bn): call recalibrate_bn(ema.module, ...) before the copy is validated or shipped.
    Call ema.update_parameters(model) after each optimizer step; ema.module is the averaged model.
    """
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def recalibrate_bn(module: torch.nn.Module, faces, batch_size: int, device, max_images: int = 2048) -> None:
    """Recompute the BatchNorm running statistics of `module` on up to max_images un-augmented training faces.

    Why: the average of many weight vectors is not any of them, and the activations it produces have other statistics
    than the average of the statistics seen along the way (SWA, Izmailov et al. 2018, recalibrates for this reason).
    Without it, the EMA copy of mini-Xception (depthwise then pointwise convolutions, Keras BN momentum 0.01) loses
    most of its accuracy (docs/studies.md, EMA on mini-Xception).
    The faces are evenly spaced over the set (not the first ones: a set may be sorted by class) and always the same,
    so every rank of a distributed run computes the same statistics.
    """
    count = min(len(faces), max_images)
    if count == 0:
        return
    chosen = np.unique(np.linspace(0, len(faces) - 1, count).round().astype(np.int64))
    batches = (to_tensor(faces.images[chosen[first:first + batch_size]]) for first in range(0, len(chosen), batch_size))
    update_bn(batches, module, device=device)  # cumulative average over the batches; restores BN momenta and the mode


def mix_batch(x: torch.Tensor, labels: torch.Tensor, augment, seed: int, epoch: int, batch: int):
    """Mixup (Zhang et al. 2018) or cutmix (Yun et al. 2019) of a whole batch with a shuffled copy of itself.

    The draws come from numpy generators seeded by (seed, epoch, batch) alone, so a resumed run mixes exactly like a
    straight one and torch's RNG is not touched.
    Args:
        x: (B, C, S, S) float images; labels: (B,) int64.
        augment: AugmentConfig (mixup, cutmix: Beta alphas, 0 = off; mix_prob: probability that a batch is mixed).
    Returns:
        (x mixed, labels_b (B,) or None, lam): the image holds a lam share of `labels` and 1 - lam of labels_b.
        Unmixed batches return (x, None, 1.0).
    """
    if not (augment.mixup or augment.cutmix):
        return x, None, 1.0
    rng = np.random.default_rng([seed, epoch, batch, MIX_STREAM])
    if rng.random() >= augment.mix_prob:
        return x, None, 1.0
    use_cutmix = augment.cutmix > 0 and (augment.mixup == 0 or rng.random() < 0.5)
    alpha = augment.cutmix if use_cutmix else augment.mixup
    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if not use_cutmix:
        return lam * x + (1 - lam) * x[order], labels[order], lam
    # cutmix: paste a box of area (1 - lam) from the partner image, clipped at the border; lam is then the exact share
    height, width = x.shape[-2:]
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[order][..., y0:y1, x0:x1]
    return mixed, labels[order], 1 - (y1 - y0) * (x1 - x0) / (height * width)


class Teacher:
    """One or several trained checkpoints whose softened probabilities are averaged (knowledge distillation).

    Teacher logits are prob_scale * outputs, as in fer/inference.py (s * cos for a cosine head); the models stay in
    eval mode and run without gradients on the student's (augmented, possibly mixed) batch.
    """

    def __init__(self, sources: list[str], class_names, image_size: int, channels: int = 1,
                 loaded: dict | None = None):
        """loaded: checkpoints already read, by source (fer.warmstart.check_sources); the others are read here."""
        self.models, self.device = [], torch.device("cpu")
        self.provenance = []  # per teacher: {source, sha256, datasets}, recorded in the student's checkpoints
        for source in sources:
            model, checkpoint = load_model((loaded or {}).get(source, source))
            spec = checkpoint["model_spec"]
            if list(checkpoint["class_names"]) != list(class_names):
                raise ConfigError(f"'train.teacher': {checkpoint['path']} predicts {list(checkpoint['class_names'])}, "
                                  f"the training set has {list(class_names)}")
            if spec["image_size"] != image_size or spec.get("channels", 1) != channels:
                raise ConfigError(f"'train.teacher': {checkpoint['path']} takes {spec.get('channels', 1)} x "
                                  f"{spec['image_size']} px input, the training data is {channels} x {image_size} px")
            self.models.append((model.to(memory_format=torch.channels_last), spec["prob_scale"]))
            self.provenance.append(provenance(checkpoint))  # a student learns from its teachers' data too

    @torch.no_grad()
    def probs(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """x (B, C, S, S) -> mean over teachers of softmax(teacher logits / T), (B, K)."""
        x = x.contiguous(memory_format=torch.channels_last)
        if x.device != self.device:  # follow the student's device
            self.models, self.device = [(model.to(x.device), scale) for model, scale in self.models], x.device
        return torch.stack([torch.softmax(model(x).float() * scale / temperature, dim=1)
                            for model, scale in self.models]).mean(0)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015 (https://arxiv.org/abs/1503.02531): T^2 * KL(teacher_T || student_T), mean over the batch.

    student_logits: (B, K), for a cosine head scale * cos (no margin); teacher_probs: (B, K) at the same temperature.
    T^2 keeps the gradient scale independent of T.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_student, teacher_probs, reduction="batchmean")
