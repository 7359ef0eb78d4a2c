"""Objective: the loss of a training batch, whichever loss the config names, and the center state it owns."""

import torch
import torch.nn.functional as F

from fer import losses


class Objective(torch.nn.Module):
    """Loss of a batch from (embeddings, outputs, labels); owns the center state of center/island/cosine_distance."""

    def __init__(self, cfg, num_classes: int, embedding_dim: int, class_weights: torch.Tensor | None, class_counts=None):
        super().__init__()
        c = cfg.loss
        self.name, self.weight, self.label_smoothing = c.name, c.lambda_island, c.label_smoothing
        self.register_buffer("class_weights", class_weights)
        self.register_buffer("rebalance_weights", None, persistent=False)  # deferred re-weighting, set per epoch
        margin = losses.ldam_margins(class_counts, c.margin) if c.class_margins == "ldam" else c.margin
        common = dict(alpha=c.alpha, update=c.center_update)
        if c.name == "center":
            self.centers = losses.CenterLoss(num_classes, embedding_dim, **common)
        elif c.name == "island":
            self.centers = losses.IslandLoss(num_classes, embedding_dim, lambda1=c.lambda1, **common)
        elif c.name == "cosine_distance":
            self.centers = losses.CosineDistanceLoss(num_classes, embedding_dim, scale=c.scale, margin=margin,
                                                     lambda_island=c.lambda_island, lambda1=c.lambda1, intra=c.intra,
                                                     label_smoothing=c.label_smoothing, class_weights=class_weights,
                                                     **common)

    def rebalance(self, weights: torch.Tensor | None) -> None:
        """Deferred re-balancing: per-class weights of the classification part from its epoch on (None before)."""
        self.rebalance_weights = weights  # made on the CPU; forward moves them to the outputs' device
        if self.name == "cosine_distance":
            self.centers.class_weights = weights

    def forward(self, embeddings, outputs, labels, labels_b=None, lam: float = 1.0):
        """labels_b, lam: a mixup/cutmix batch (rule: losses.dominant_labels)."""
        if self.name == "cosine_distance":
            return self.centers(embeddings, outputs, labels, labels_b, lam)
        weight = self.class_weights if self.class_weights is not None else self.rebalance_weights
        weight = weight if weight is None else weight.to(outputs.device)
        loss = F.cross_entropy(outputs.float(), labels, weight=weight, label_smoothing=self.label_smoothing)
        if labels_b is not None:
            loss = lam * loss + (1 - lam) * F.cross_entropy(outputs.float(), labels_b, weight=weight,
                                                            label_smoothing=self.label_smoothing)
        if self.name in ("center", "island"):
            loss = loss + self.weight * self.centers(embeddings, losses.dominant_labels(labels, labels_b, lam))
        return loss
