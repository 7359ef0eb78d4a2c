"""Losses for cosine-distance expression recognition: AM-Softmax, Center, Island and their combination. torch only.

Shapes: embeddings (B, D), cosines (B, K), labels (B,) integer in [0, K), centers (K, D).
Specification and hand-checked values: docs/LOSSES.md (shared); usage: docs/losses.md.
[C] = confirmed from a paper or its reference code, [I] = our reading where the source is silent.

Numerics: every loss is computed in float32 (float64 stays float64, for gradcheck), with autocast switched off, so the
same code is safe under mixed precision. Normalisation clamps norms at NORM_EPS (fp16-safe, see below).
Every public entry point checks its inputs and raises ValueError naming the loss, the argument and the shapes/values;
the value checks (finite, label range) cost one device sync per call.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Norms are clamped at NORM_EPS. F.normalize's default 1e-12 is 0 in fp16, and the gradient of x / max(|x|, eps) is
# up to |upstream| / eps: with |upstream| <= s * sqrt(2) / B (43 for s = 30, B = 1), eps = 1e-3 keeps even an all-zero
# feature's gradient below the fp16 maximum 65504. Real embedding and center norms are far above 1e-3.
NORM_EPS = 1e-3
REDUCTIONS = ("mean", "sum", "none")
UPDATES = ("delta", "autograd")
INTRA_TERMS = ("euclidean", "cosine")


# ---------------------------------------------------------------------------------------------------------------------
# Input checks and numerics helpers (private)


def _check_reduction(where: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def _check_matrix(where: str, name: str, tensor: torch.Tensor, cols: int | None = None, cols_name: str = "") -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{where}: {name} must be 2-D, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{where}: {name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if cols is not None and tensor.shape[1] != cols:
        raise ValueError(f"{where}: {name} has shape {tuple(tensor.shape)} but {cols_name} is {cols}")


def _check_labels(where: str, labels: torch.Tensor, batch_size: int, batch_name: str, batch_shape: tuple) -> None:
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{where}: labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{where}: labels must be 1-D (B,), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{where}: labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != batch_size:
        raise ValueError(
            f"{where}: batch sizes differ: {batch_name} has shape {batch_shape}, labels has shape {tuple(labels.shape)}"
        )
    if batch_size == 0:
        raise ValueError(f"{where}: empty batch ({batch_name} has shape {batch_shape})")


def _check_devices(where: str, **tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{where}: tensors are on different devices: {devices}")


def _check_values(where: str, labels: torch.Tensor, num_classes: int, **floats: torch.Tensor) -> None:
    """Finite floats and labels in [0, K), with a single device sync on the good path."""
    checks = {f"{name} has non-finite values": torch.isfinite(t).all() for name, t in floats.items()}
    checks["labels"] = ((labels >= 0) & (labels < num_classes)).all()
    if bool(torch.stack(list(checks.values())).all()):
        return
    for message, ok in checks.items():
        if bool(ok):
            continue
        if message == "labels":
            bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:10].tolist()
            raise ValueError(f"{where}: labels must lie in [0, {num_classes}), found {bad}")
        raise ValueError(f"{where}: {message} (shape {tuple(floats[message.split()[0]].shape)})")


def _fp32_region(device: torch.device):
    """Switch autocast off so matmuls and reductions really run in the dtype we cast to."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


# ---------------------------------------------------------------------------------------------------------------------
# Functional forms: they validate their input; the modules validate once and call the unchecked _terms below.


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_j) for all pairs: a (N, D), b (M, D) -> (N, M). A zero row gives cosines 0 (norms clamped).

    Unchecked helper: computes in the dtype of its inputs; callers cast up and switch autocast off.
    """
    return F.normalize(a, dim=1, eps=NORM_EPS) @ F.normalize(b, dim=1, eps=NORM_EPS).T


def am_softmax_logits(cosines: torch.Tensor, labels: torch.Tensor, *, scale: float,
                      margin: float | torch.Tensor) -> torch.Tensor:
    """Training logits of AM-Softmax: s * (cos - m_y * onehot(y)). Non-target logits are exactly s * cos_j.

    margin: one float m, or a (K,) tensor of per-class margins m_j (the sample's target class picks its margin).
    Unchecked helper (use am_softmax_loss for checked input). Never use these logits at inference: there the
    prediction is argmax of cosines and probs = softmax(scale * cosines).
    """
    if isinstance(margin, torch.Tensor):
        margin = margin.to(cosines)[labels.long()][:, None]  # (B, 1) the target class's margin
    target_margin = torch.zeros_like(cosines).scatter_(1, labels.long()[:, None], margin)  # (B, K)
    return scale * (cosines - target_margin)


def _am_softmax_terms(cosines, labels, scale, margin, reduction, label_smoothing=0.0, class_weights=None):
    with _fp32_region(cosines.device):
        cosines = cosines.to(_compute_dtype(cosines))
        logits = am_softmax_logits(cosines, labels, scale=scale, margin=margin)  # (B, K)
        if class_weights is None:
            return F.cross_entropy(logits, labels.long(), reduction=reduction, label_smoothing=label_smoothing)
        per_sample = F.cross_entropy(logits, labels.long(), reduction="none", label_smoothing=label_smoothing)
        return _reduce(per_sample * class_weights.to(per_sample)[labels.long()], reduction)


def _check_class_vector(where: str, name: str, vector, num_classes: int) -> None:
    """A per-class margin or weight: a finite, non-negative (K,) float tensor."""
    if not isinstance(vector, torch.Tensor) or vector.dim() != 1 or vector.shape[0] != num_classes:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"{where}: {name} must be a (K,) = ({num_classes},) tensor, got {shape}")
    if not vector.is_floating_point() or not bool(torch.isfinite(vector).all()) or bool((vector < 0).any()):
        raise ValueError(f"{where}: {name} must be finite, non-negative floats, got {vector.tolist()}")


def _check_am_softmax_options(where, num_classes, scale, margin, label_smoothing, class_weights) -> None:
    if not scale > 0:
        raise ValueError(f"{where}: scale must be > 0, got {scale}")
    if isinstance(margin, torch.Tensor):
        _check_class_vector(where, "margin", margin, num_classes)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if class_weights is not None:
        _check_class_vector(where, "class_weights", class_weights, num_classes)


def am_softmax_loss(cosines, labels, *, scale: float, margin: float | torch.Tensor, reduction: str = "mean",
                    label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """AM-Softmax / CosFace (Wang et al. 2018, https://arxiv.org/abs/1801.05599).

    L_i = w_{y_i} * CE_eps(s * (cos_i - m_{y_i} * onehot(y_i)), y_i): the margin is subtracted from the target logit
    only, also under label smoothing (the smoothed target (1 - eps) onehot + eps / K is compared with the margin logits).

    Args:
        cosines: (B, K) cosines between normalised embeddings and class weights (CosineClassifier), in [-1, 1].
        labels: (B,) integer class indices in [0, K).
        scale: s > 0, fixed (not learned).
        margin: m, subtracted from the target cosine during training only: a float, or a (K,) tensor of per-class
            margins (ldam_margins).
        reduction: "mean" | "sum" | "none". "mean" is the plain mean over the batch of the weighted per-sample losses.
        label_smoothing: eps in [0, 1], as F.cross_entropy's.
        class_weights: None or (K,) non-negative weights w_j of each sample's loss by its target class (ones = None).
    Returns:
        0-d loss for "mean"/"sum", (B,) for "none"; float32 (float64 for float64 input).
    """
    where = "am_softmax_loss"
    _check_reduction(where, reduction)
    _check_matrix(where, "cosines", cosines)
    _check_labels(where, labels, cosines.shape[0], "cosines", tuple(cosines.shape))
    _check_devices(where, cosines=cosines, labels=labels)
    _check_values(where, labels, cosines.shape[1], cosines=cosines)
    _check_am_softmax_options(where, cosines.shape[1], scale, margin, label_smoothing, class_weights)
    return _am_softmax_terms(cosines, labels, scale, margin, reduction, label_smoothing, class_weights)


def _center_terms(embeddings, labels, centers):
    """Per-sample 1/2 ||x_i - c_{y_i}||^2, (B,). Direct difference: the expanded form goes negative and needs clamps."""
    with _fp32_region(embeddings.device):
        dtype = _compute_dtype(embeddings, centers)
        return (embeddings.to(dtype) - centers.to(dtype)[labels.long()]).pow(2).sum(1) / 2


def _cosine_intra_terms(embeddings, labels, centers):
    """Per-sample 1 - cos(x_i, c_{y_i}), (B,)."""
    with _fp32_region(embeddings.device):
        dtype = _compute_dtype(embeddings, centers)
        x = F.normalize(embeddings.to(dtype), dim=1, eps=NORM_EPS)  # (B, D)
        c = F.normalize(centers.to(dtype)[labels.long()], dim=1, eps=NORM_EPS)  # (B, D)
        return 1 - (x * c).sum(1)


def _pair_terms(centers):
    with _fp32_region(centers.device):
        c = centers.to(_compute_dtype(centers))
        cos = cosine_similarity_matrix(c, c)  # (K, K)
        diagonal = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
        return (cos + 1).masked_fill(diagonal, 0).sum()


def _check_center_inputs(where, embeddings, labels, centers):
    _check_matrix(where, "centers", centers)
    _check_matrix(where, "embeddings", embeddings, centers.shape[1], "the embedding dim of centers (K, D)")
    _check_labels(where, labels, embeddings.shape[0], "embeddings", tuple(embeddings.shape))
    _check_devices(where, embeddings=embeddings, labels=labels, centers=centers)
    _check_values(where, labels, centers.shape[0], embeddings=embeddings, centers=centers)


def center_loss(embeddings, labels, centers, reduction: str = "mean") -> torch.Tensor:
    """Center loss (Wen et al., ECCV 2016, https://ydwen.github.io/papers/WenECCV16.pdf).

    L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2 (the reference Caffe layer divides by the batch and by 2).

    Args:
        embeddings: (B, D) features x_i.
        labels: (B,) integer class indices in [0, K).
        centers: (K, D) class centers c_j.
        reduction: "mean" | "sum" | "none".
    Returns:
        0-d loss for "mean"/"sum", (B,) for "none".
    """
    where = "center_loss"
    _check_reduction(where, reduction)
    _check_center_inputs(where, embeddings, labels, centers)
    return _reduce(_center_terms(embeddings, labels, centers), reduction)


def cosine_intra_loss(embeddings, labels, centers, reduction: str = "mean") -> torch.Tensor:
    """Cosine intra-class term [I] (our reading of Wu et al. 2019): L_i = 1 - cos(x_i, c_{y_i}).

    Invariant to the scale of each feature and each center; a zero feature or center gives 1 (cos clamped to 0).

    Args / Returns: as center_loss.
    """
    where = "cosine_intra_loss"
    _check_reduction(where, reduction)
    _check_center_inputs(where, embeddings, labels, centers)
    return _reduce(_cosine_intra_terms(embeddings, labels, centers), reduction)


def island_pair_term(centers: torch.Tensor) -> torch.Tensor:
    """Island pair term (Cai et al., FG 2018, https://arxiv.org/abs/1710.03144): sum_j sum_{k != j} (cos(c_j, c_k) + 1).

    Ordered pairs, so each unordered pair counts twice. Invariant to center norms; its minimum is K(K - 2) for K > 2
    (35 for K = 7, a regular simplex) and 0 for K = 2 (opposite centers). A zero center gives cosines 0 and a finite
    gradient (norms clamped at NORM_EPS).

    Args:
        centers: (K, D) class centers.
    Returns:
        0-d tensor.
    """
    where = "island_pair_term"
    _check_matrix(where, "centers", centers)
    if not bool(torch.isfinite(centers).all()):
        raise ValueError(f"{where}: centers has non-finite values (shape {tuple(centers.shape)})")
    return _pair_terms(centers)


def island_loss(embeddings, labels, centers, *, lambda1: float, reduction: str = "mean") -> torch.Tensor:
    """Island loss (Cai et al., FG 2018, https://arxiv.org/abs/1710.03144).

    L_IL = L_C + lambda1 * sum_j sum_{k != j} (cos(c_j, c_k) + 1).

    The pair term is one number per batch. reduction="none" adds it to every sample, so that "none".mean() equals "mean"
    and "none".sum() equals "sum" (= sum_i center_i + B * lambda1 * pair): the center/pair balance does not depend on
    the reduction.

    Args:
        embeddings: (B, D); labels: (B,) in [0, K); centers: (K, D).
        lambda1: weight of the pair term (paper: 10 [recalled, not confirmed]).
        reduction: "mean" | "sum" | "none".
    Returns:
        0-d loss for "mean"/"sum", (B,) for "none".
    """
    where = "island_loss"
    _check_reduction(where, reduction)
    _check_center_inputs(where, embeddings, labels, centers)
    per_sample = _center_terms(embeddings, labels, centers) + lambda1 * _pair_terms(centers)
    return _reduce(per_sample, reduction)


# ---------------------------------------------------------------------------------------------------------------------
# Class imbalance and mixed labels: per-class margins, deferred re-weighting, the mixed-label rule.


def _check_class_counts(where: str, class_counts) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or len(counts) == 0 or not bool((counts > 0).all()):
        raise ValueError(f"{where}: class_counts must be a 1-D sequence of positive counts, got {counts.tolist()}")
    return counts


def ldam_margins(class_counts, max_margin: float) -> torch.Tensor:
    """Label-distribution-aware margins (Cao et al., NeurIPS 2019, https://arxiv.org/abs/1906.07413, eq. 13).

    m_j = C / n_j^(1/4) with C chosen so that the rarest class gets max_margin: m_j = max_margin * (n_min / n_j)^(1/4).

    Args:
        class_counts: (K,) training images per class, all > 0.
        max_margin: the largest margin (the loss's m), >= 0.
    Returns:
        (K,) float32 margins in (0, max_margin]; uniform counts give max_margin for every class.
    """
    counts = _check_class_counts("ldam_margins", class_counts)
    if not max_margin >= 0:
        raise ValueError(f"ldam_margins: max_margin must be >= 0, got {max_margin}")
    return (max_margin * (counts.min() / counts) ** 0.25).float()


def deferred_class_weights(class_counts, epoch: int, start_epoch: int, beta: float = 0.9999) -> torch.Tensor | None:
    """Deferred re-weighting (DRW, Cao et al. 2019): no weights before start_epoch, class-balanced weights from it on.

    The weights are Cui et al.'s effective-number weights (CVPR 2019, https://arxiv.org/abs/1901.05555), as in the LDAM
    reference code: w_j = (1 - beta) / (1 - beta^n_j), normalised so that sum_j w_j = K.

    Args:
        class_counts: (K,) training images per class, all > 0.
        epoch: the current epoch, counted from 0.
        start_epoch: the first re-weighted epoch (>= 1: the first epochs learn the representation unweighted).
        beta: in [0, 1); 0 gives uniform weights, beta -> 1 weights proportional to 1 / n_j.
    Returns:
        None before start_epoch (the unweighted loss), else (K,) float32 weights for class_weights.
    """
    counts = _check_class_counts("deferred_class_weights", class_counts)
    if not 0 <= beta < 1:
        raise ValueError(f"deferred_class_weights: beta must be in [0, 1), got {beta}")
    if epoch < start_epoch:
        return None
    weights = (1 - beta) / (1 - beta ** counts)
    return (weights / weights.sum() * len(counts)).float()


def dominant_labels(labels: torch.Tensor, labels_b: torch.Tensor | None, lam: float) -> torch.Tensor:
    """The rule for center terms under mixup/cutmix: each mixed image counts for the label holding the larger share.

    The classification part of a mixed batch is lam * L(y_a) + (1 - lam) * L(y_b) (the margin on each term's own
    target); the center/intra terms and the delta-rule center updates use only the dominant label, so each sample
    still moves exactly one center with weight 1 and no center is pulled toward a blend that belongs to neither class.
    """
    return labels if labels_b is None or lam >= 0.5 else labels_b


# ---------------------------------------------------------------------------------------------------------------------
# Center state shared by the modules: creation and the paper's delta rule.


def _init_centers(module: nn.Module, where: str, num_classes: int, embedding_dim: int, update: str,
                  alpha: float) -> None:
    if update not in UPDATES:
        raise ValueError(f"{where}: unknown update {update!r}; expected one of {UPDATES}")
    if num_classes < 1 or embedding_dim < 1:
        raise ValueError(f"{where}: num_classes and embedding_dim must be >= 1, got {num_classes}, {embedding_dim}")
    if not alpha > 0:
        raise ValueError(f"{where}: alpha must be > 0, got {alpha}")
    module.num_classes, module.embedding_dim, module.update, module.alpha = num_classes, embedding_dim, update, alpha
    # Data-parallel training sets this to a cross-process sum (fer.distributed.all_reduce_sum) for the delta rule.
    module.reduce_center_stats = None
    # randn init as in KaiyangZhou/pytorch-center-loss [I]: a zero init would leave the pair term without a direction.
    centers = torch.randn(num_classes, embedding_dim)  # (K, D)
    if update == "autograd":
        module.centers = nn.Parameter(centers)
    else:
        module.register_buffer("centers", centers)


def _pair_gradient_one_sided(centers: torch.Tensor) -> torch.Tensor:
    """d/dc_j of sum_{k != j} cos(c_j, c_k), others fixed: (K, D). Half the autograd gradient of the ordered pair sum.

    This is the bracket of Cai et al. eq. 5: sum_k c_k/(|c_k||c_j|) - (c_k.c_j) c_j/(|c_k||c_j|^3). A center with
    norm < NORM_EPS has no direction: it gets no pair push (the center term moves it off zero first) [I].
    """
    norms = centers.norm(dim=1, keepdim=True)  # (K, 1)
    safe_norms = norms.clamp_min(NORM_EPS)
    u = centers / safe_norms  # (K, D) unit centers
    others = u.sum(0, keepdim=True) - u  # (K, D) sum_{k != j} u_k
    tangential = others - (u * others).sum(1, keepdim=True) * u  # project out the radial part
    return tangential / safe_norms * (norms >= NORM_EPS)


@torch.no_grad()
def _delta_rule(centers, embeddings, labels, alpha, pair_weight, reduce_stats=None):
    """New centers (a fresh tensor) after one step of the paper's update.

    Wen et al. 2016 eq. 4 [C]: dc_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j); classes absent from the batch get 0.
    Cai et al. 2018 eq. 5 [C]: + pair_weight (= lambda1 / (K - 1)) * one-sided pair gradient, for every j.
    c_j <- c_j - alpha * dc_j.
    reduce_stats: None, or a function that sums the per-class [sums | counts] (K, D + 1) over processes, so that every
    process makes the update of the concatenated global batch (data-parallel training; see the loss classes).
    """
    with _fp32_region(centers.device):
        c = centers.to(_compute_dtype(centers))  # (K, D)
        x = embeddings.detach().to(c.dtype)  # (B, D)
        labels = labels.long()
        counts = torch.bincount(labels, minlength=c.shape[0]).to(c.dtype)[:, None]  # (K, 1)
        sums = torch.zeros_like(c).index_add_(0, labels, x)  # (K, D) sum of x_i per class
        if reduce_stats is not None:
            stats = reduce_stats(torch.cat([sums, counts], 1))  # (K, D + 1) over the global batch
            sums, counts = stats[:, :-1], stats[:, -1:]
        delta = (counts * c - sums) / (1 + counts)
        if pair_weight:
            delta = delta + pair_weight * _pair_gradient_one_sided(c)
        return (c - alpha * delta).to(centers.dtype)


def _check_num_classes_for_pairs(where: str, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"{where}: the pair term needs num_classes >= 2, got {num_classes}")


def center_optimizer(loss: nn.Module, alpha: float | None = None, *, loss_weight: float | None = None):
    """Plain SGD for the centers of a loss built with update="autograd" (the common PyTorch practice [C]).

    SGD(loss.parameters(), lr=alpha / loss_weight, momentum=0, weight_decay=0). Without momentum or weight decay,
    dividing the learning rate by the loss weight lambda is exactly the usual "rescale the center gradients by 1/lambda
    before the step": the centers move at rate alpha whatever weight the loss gets in the total. Adam on centers would
    defeat alpha; do not put loss.parameters() into the model's optimizer.

    Args:
        loss: CenterLoss, IslandLoss or CosineDistanceLoss with update="autograd".
        alpha: center learning rate; default loss.alpha (0.5, Wen et al. 2016).
        loss_weight: the weight the loss gets in the total. Default: lambda_island for CosineDistanceLoss (it applies
            that weight itself), 1.0 for CenterLoss / IslandLoss (pass the lambda you multiply them by).
    Returns:
        torch.optim.SGD over [loss.centers]. Call its zero_grad() and step() next to the model optimizer's.
    """
    where = "center_optimizer"
    if getattr(loss, "update", None) != "autograd":
        raise ValueError(
            f"{where}: {type(loss).__name__} has update={getattr(loss, 'update', None)!r}; only update='autograd' "
            "has center parameters (update='delta' moves the centers inside forward, no optimizer needed)"
        )
    alpha = loss.alpha if alpha is None else alpha
    if loss_weight is None:
        loss_weight = loss.lambda_island if isinstance(loss, CosineDistanceLoss) else 1.0
    if not alpha > 0 or not loss_weight > 0:
        raise ValueError(f"{where}: alpha and loss_weight must be > 0, got alpha={alpha}, loss_weight={loss_weight}")
    return torch.optim.SGD([loss.centers], lr=alpha / loss_weight, momentum=0.0, weight_decay=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Modules


def _register_class_vectors(module: nn.Module, margin, class_weights) -> None:
    """Per-class margins and weights as non-persistent buffers: they follow .to(device) and stay out of the state_dict
    (both are recomputed from the training set's class counts)."""
    if isinstance(margin, torch.Tensor):
        module.register_buffer("margin", margin.detach().float(), persistent=False)
    else:
        module.margin = margin
    module.register_buffer("class_weights", class_weights, persistent=False)


class CosineClassifier(nn.Module):
    """Normalised linear head without bias: cos_j = <W_j / ||W_j||, x / ||x||> (Wang et al. 2018, arXiv 1801.05599).

    Args:
        embedding_dim: D.
        num_classes: K.
    Forward: embeddings (B, D) -> cosines (B, K) in [-1, 1], float32 (float64 for float64 input), also under autocast.
    The weight (K, D) belongs to the model: give it to the model's optimizer. Inference: argmax of cosines;
    probabilities softmax(scale * cosines) with the scale of the loss; never the margin.
    """

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(
                f"CosineClassifier: embedding_dim and num_classes must be >= 1, got {embedding_dim}, {num_classes}")
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))  # (K, D)
        nn.init.xavier_uniform_(self.weight)  # any init works: only the direction of each row matters

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        where = "CosineClassifier"
        _check_matrix(where, "embeddings", embeddings, self.embedding_dim, "embedding_dim")
        _check_devices(where, embeddings=embeddings, weight=self.weight)
        if not bool(torch.isfinite(embeddings).all()):
            raise ValueError(f"{where}: embeddings has non-finite values (shape {tuple(embeddings.shape)})")
        with _fp32_region(embeddings.device):
            dtype = _compute_dtype(embeddings, self.weight)
            return cosine_similarity_matrix(embeddings.to(dtype), self.weight.to(dtype))  # (B, K)

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}"


class AMSoftmaxLoss(nn.Module):
    """AM-Softmax / CosFace loss (Wang et al. 2018, https://arxiv.org/abs/1801.05599). No parameters.

    L_i = CE(s * (cos_i - m * onehot(y_i)), y_i); margin on the target logit only, during training only.

    Args:
        scale: s, fixed. Default 30 is the face-recognition setting of the paper; the FER paper (Wu et al. 2019) tunes
            s with m = 0.35 (its Table 2) and uses s = 10 in its margin sweep (Table 1).
        margin: m, default 0.35 (both papers); or a (K,) tensor of per-class margins (ldam_margins).
        reduction: "mean" | "sum" | "none".
        label_smoothing: eps in [0, 1]; the margin stays on the target logit only.
        class_weights: None or (K,) per-class weights of each sample's loss (settable later: deferred_class_weights).
    Forward: cosines (B, K) from CosineClassifier, labels (B,) in [0, K) -> loss (0-d, or (B,) for "none").
    Inference never applies the margin: predict argmax(cosines), probs = softmax(scale * cosines).
    """

    def __init__(self, scale: float = 30.0, margin: float | torch.Tensor = 0.35, reduction: str = "mean",
                 label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        super().__init__()
        _check_reduction("AMSoftmaxLoss", reduction)
        num_classes = len(margin) if isinstance(margin, torch.Tensor) else None
        _check_am_softmax_options("AMSoftmaxLoss", num_classes, scale, margin, label_smoothing, None)
        _register_class_vectors(self, margin, class_weights)
        self.scale, self.reduction, self.label_smoothing = scale, reduction, label_smoothing

    def forward(self, cosines: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return am_softmax_loss(cosines, labels, scale=self.scale, margin=self.margin, reduction=self.reduction,
                               label_smoothing=self.label_smoothing, class_weights=self.class_weights)

    def extra_repr(self) -> str:
        return (f"scale={self.scale}, margin={self.margin}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016, https://ydwen.github.io/papers/WenECCV16.pdf). Owns centers (K, D).

    L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2. Total: L_softmax + lambda * L_C.

    Args:
        num_classes: K.
        embedding_dim: D.
        alpha: center learning rate, default 0.5 (Wen et al.).
        update: how the centers move.
            "delta" [C, the paper]: centers are a buffer. Each forward in training mode (self.training) first computes
                the loss from the current centers, then replaces them with
                c_j - alpha * sum_{i: y_i=j}(c_j - x_i)/(1 + n_j), computed from detached embeddings; classes absent
                from the batch do not move. No optimizer. Call
                .eval() on this loss (not only on the model) before computing a validation loss, or the validation
                batches move the centers. Data-parallel training: set reduce_center_stats to a function that sums a
                (K, D + 1) tensor over the processes (fer.distributed.all_reduce_sum); every process then applies the
                update of the concatenated global batch and the centers stay identical. None (default): this batch.
            "autograd" [C, common PyTorch practice]: centers are an nn.Parameter. Pass loss.parameters() to a plain
                SGD (lr = alpha / lambda, no momentum, no weight decay); center_optimizer(loss, loss_weight=lambda)
                builds it. Never to Adam with the model.
        reduction: "mean" | "sum" | "none".
    Forward: embeddings (B, D), labels (B,) in [0, K) -> loss (0-d, or (B,) for "none"); float32.
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, alpha: float = 0.5, update: str = "delta",
                 reduction: str = "mean"):
        super().__init__()
        _check_reduction("CenterLoss", reduction)
        _init_centers(self, "CenterLoss", num_classes, embedding_dim, update, alpha)
        self.reduction = reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_center_inputs("CenterLoss", embeddings, labels, self.centers)
        loss = _reduce(_center_terms(embeddings, labels, self.centers), self.reduction)
        if self.update == "delta" and self.training:
            self.centers = _delta_rule(self.centers, embeddings, labels, self.alpha, pair_weight=0.0,
                                       reduce_stats=self.reduce_center_stats)
        return loss

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, alpha={self.alpha}, "
                f"update={self.update!r}, reduction={self.reduction!r}")


class IslandLoss(nn.Module):
    """Island loss (Cai et al., FG 2018, https://arxiv.org/abs/1710.03144). Owns centers (K, D).

    L_IL = L_C + lambda1 * sum_j sum_{k != j} (cos(c_j, c_k) + 1). Total: L_softmax + lambda * L_IL (lambda = 0.01).

    Args:
        num_classes: K >= 2.
        embedding_dim: D.
        lambda1: pair-term weight, default 10; alpha: center learning rate, default 0.5 (reported by Cai et al.,
            recalled, not confirmed).
        update: which semantics moves the centers.
            "delta" [C, paper eq. 5]: centers are a buffer, moved inside forward in training mode (see CenterLoss) by
                c_j -= alpha * (sum_{i:y_i=j}(c_j - x_i)/(1 + n_j) + lambda1/(K-1) * d/dc_j sum_{k!=j} cos(c_j, c_k)).
                The pair push applies to every center, present in the batch or not. The returned loss includes the pair
                term (for logging) but its gradient reaches nothing: the centers move only by this rule. No optimizer.
            "autograd": centers are an nn.Parameter and move by autograd of the loss as written (ordered sum, so the
                pair gradient is 2(K - 1) times the paper's push: 12x for K = 7). Pass loss.parameters() to plain
                SGD via center_optimizer(loss, loss_weight=lambda).
        reduction: "mean" | "sum" | "none"; "none" adds the (per-batch) pair term to every sample (see island_loss).
    Forward: embeddings (B, D), labels (B,) in [0, K) -> loss (0-d, or (B,) for "none").
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, lambda1: float = 10.0, alpha: float = 0.5,
                 update: str = "delta", reduction: str = "mean"):
        super().__init__()
        _check_reduction("IslandLoss", reduction)
        _check_num_classes_for_pairs("IslandLoss", num_classes)
        _init_centers(self, "IslandLoss", num_classes, embedding_dim, update, alpha)
        self.lambda1, self.reduction = lambda1, reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_center_inputs("IslandLoss", embeddings, labels, self.centers)
        per_sample = _center_terms(embeddings, labels, self.centers) + self.lambda1 * _pair_terms(self.centers)
        loss = _reduce(per_sample, self.reduction)
        if self.update == "delta" and self.training:
            pair_weight = self.lambda1 / (self.num_classes - 1)
            self.centers = _delta_rule(self.centers, embeddings, labels, self.alpha, pair_weight,
                                       reduce_stats=self.reduce_center_stats)
        return loss

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, lambda1={self.lambda1}, "
                f"alpha={self.alpha}, update={self.update!r}, reduction={self.reduction!r}")


class CosineDistanceLoss(nn.Module):
    """Cosine-distance loss (Wu et al. 2019, Laser & Optoelectronics Progress 56(24):241502): AM-Softmax + Island.

    L = AMSoftmax_{s,m}(cosines, y) + lambda_island * (intra + lambda1 * sum_{j != k}(cos(c_j, c_k) + 1))   [I]

    The paper confirms the combination (on mini-Xception); the exact form is our reconstruction (docs/LOSSES.md).

    Args:
        num_classes: K >= 2; embedding_dim: D.
        scale: s, default 10 (Wu et al. Table 1 margin sweep at s = 10); margin: m, default 0.35 (Tables 1-2).
        lambda_island: weight of the island part, default 0.01; lambda1: pair weight, default 10; alpha: center
            learning rate, default 0.5 (Cai et al. 2018, recalled, not confirmed).
        intra: "euclidean" (1/2 ||x_i - c_{y_i}||^2, Wen/Cai) or "cosine" (1 - cos(x_i, c_{y_i}); the whole loss and the
            center update are then invariant to feature scale). Default "euclidean", the papers' form.
        update: "delta" (paper rule, centers move inside forward in training mode, pair push lambda1/(K-1); with
            intra="cosine" the rule pulls centers toward the unit-normalised features [I]) or "autograd" (centers are a
            Parameter: center_optimizer(loss) builds SGD with lr = alpha / lambda_island). See IslandLoss.
        reduction: "mean" | "sum" | "none"; "none" adds the per-batch pair term to every sample.
        label_smoothing, class_weights: of the AM-Softmax part only (see AMSoftmaxLoss); margin may be a (K,) tensor.
    Forward: embeddings (B, D), cosines (B, K) = CosineClassifier(embeddings), labels (B,) in [0, K) -> loss.
        A mixup/cutmix batch also passes labels_b (B,) and lam: AM-Softmax part lam * L(labels) + (1 - lam) * L(labels_b),
        each with the margin on its own target; intra term and center update on dominant_labels (see there).
    Optimizers: model + CosineClassifier parameters -> the model optimizer (e.g. Adam); centers -> nothing ("delta") or
    center_optimizer(loss) ("autograd").
    After each forward, last_parts holds the batch means as detached 0-d tensors {"am_softmax", "intra", "pair"} (pair
    unweighted); they stay on the device so that forward does not sync: call float() when logging.
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, scale: float = 10.0, margin: float | torch.Tensor = 0.35,
                 lambda_island: float = 0.01, lambda1: float = 10.0, intra: str = "euclidean", alpha: float = 0.5,
                 update: str = "delta", reduction: str = "mean", label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        where = "CosineDistanceLoss"
        _check_reduction(where, reduction)
        _check_num_classes_for_pairs(where, num_classes)
        if intra not in INTRA_TERMS:
            raise ValueError(f"{where}: unknown intra {intra!r}; expected one of {INTRA_TERMS}")
        _check_am_softmax_options(where, num_classes, scale, margin, label_smoothing, class_weights)
        _init_centers(self, where, num_classes, embedding_dim, update, alpha)
        _register_class_vectors(self, margin, class_weights)
        self.scale, self.lambda_island, self.lambda1 = scale, lambda_island, lambda1
        self.intra, self.reduction, self.label_smoothing = intra, reduction, label_smoothing
        self.last_parts: dict[str, torch.Tensor] = {}

    def forward(self, embeddings: torch.Tensor, cosines: torch.Tensor, labels: torch.Tensor,
                labels_b: torch.Tensor | None = None, lam: float = 1.0) -> torch.Tensor:
        where = "CosineDistanceLoss"
        _check_matrix(where, "embeddings", embeddings, self.embedding_dim, "embedding_dim")
        _check_matrix(where, "cosines", cosines, self.num_classes, "num_classes")
        if cosines.shape[0] != embeddings.shape[0]:
            raise ValueError(f"{where}: batch sizes differ: embeddings has shape {tuple(embeddings.shape)}, "
                             f"cosines has shape {tuple(cosines.shape)}")
        _check_labels(where, labels, embeddings.shape[0], "embeddings", tuple(embeddings.shape))
        _check_devices(where, embeddings=embeddings, cosines=cosines, labels=labels, centers=self.centers)
        _check_values(where, labels, self.num_classes, embeddings=embeddings, cosines=cosines, centers=self.centers)
        if self.class_weights is not None:
            _check_class_vector(where, "class_weights", self.class_weights, self.num_classes)

        options = (self.scale, self.margin, "none", self.label_smoothing, self.class_weights)
        am_softmax = _am_softmax_terms(cosines, labels, *options)  # (B,)
        if labels_b is not None:
            _check_labels(where, labels_b, embeddings.shape[0], "embeddings", tuple(embeddings.shape))
            _check_values(where, labels_b, self.num_classes)
            am_softmax = lam * am_softmax + (1 - lam) * _am_softmax_terms(cosines, labels_b, *options)
            labels = dominant_labels(labels, labels_b, lam)
        if self.intra == "euclidean":
            intra = _center_terms(embeddings, labels, self.centers)  # (B,)
        else:
            intra = _cosine_intra_terms(embeddings, labels, self.centers)  # (B,)
        pair = _pair_terms(self.centers)  # 0-d
        loss = _reduce(am_softmax + self.lambda_island * (intra + self.lambda1 * pair), self.reduction)
        self.last_parts = {"am_softmax": am_softmax.detach().mean(), "intra": intra.detach().mean(),
                           "pair": pair.detach()}

        if self.update == "delta" and self.training:
            targets = embeddings
            if self.intra == "cosine":
                targets = F.normalize(embeddings.detach().to(_compute_dtype(embeddings)), dim=1, eps=NORM_EPS)
            pair_weight = self.lambda1 / (self.num_classes - 1)
            self.centers = _delta_rule(self.centers, targets, labels, self.alpha, pair_weight,
                                       reduce_stats=self.reduce_center_stats)
        return loss

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, scale={self.scale}, "
                f"margin={self.margin}, lambda_island={self.lambda_island}, lambda1={self.lambda1}, "
                f"intra={self.intra!r}, alpha={self.alpha}, update={self.update!r}, reduction={self.reduction!r}")
