"""Tests for fer/losses.py: hand values from LOSSES.md, naive loop references, limiting cases, float64 gradcheck."""

import ast
import math
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fer.losses import (
    AMSoftmaxLoss,
    CenterLoss,
    CosineClassifier,
    CosineDistanceLoss,
    IslandLoss,
    am_softmax_logits,
    am_softmax_loss,
    center_loss,
    center_optimizer,
    cosine_intra_loss,
    deferred_class_weights,
    dominant_labels,
    island_loss,
    island_pair_term,
    ldam_margins,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
K, D, B = 7, 5, 6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def simplex(k: int = K) -> torch.Tensor:
    """Rows of I - 1/k: a regular simplex, pairwise cosine -1/(k-1)."""
    return torch.eye(k) - 1 / k


def batch(b: int = B, d: int = D, k: int = K, dtype=torch.float32):
    return torch.randn(b, d, dtype=dtype), torch.randint(0, k, (b,))


# ---------------------------------------------------------------------------------------------------------------------
# Naive loop references


def ref_am_softmax(cosines, labels, scale, margin):
    losses = []
    for i, y in enumerate(labels.tolist()):
        logits = [scale * (cosines[i, j].item() - (margin if j == y else 0.0)) for j in range(cosines.shape[1])]
        top = max(logits)
        losses.append(top + math.log(sum(math.exp(z - top) for z in logits)) - logits[y])
    return torch.tensor(losses, dtype=torch.float64)


def ref_center(embeddings, labels, centers):
    return torch.tensor([
        sum((embeddings[i, d].item() - centers[y, d].item()) ** 2 for d in range(embeddings.shape[1])) / 2
        for i, y in enumerate(labels.tolist())
    ], dtype=torch.float64)


def ref_cos(a, b):
    dot = sum(p * q for p, q in zip(a.tolist(), b.tolist()))
    return dot / (math.sqrt(sum(p * p for p in a.tolist())) * math.sqrt(sum(q * q for q in b.tolist())))


def ref_pair(centers):
    k = centers.shape[0]
    return sum(ref_cos(centers[j], centers[i]) + 1 for j in range(k) for i in range(k) if i != j)


def ref_delta(centers, embeddings, labels, alpha):
    new = centers.clone()
    for j in range(centers.shape[0]):
        members = [i for i, y in enumerate(labels.tolist()) if y == j]
        if not members:
            continue
        step = sum(centers[j] - embeddings[i] for i in members) / (1 + len(members))
        new[j] = centers[j] - alpha * step
    return new


# ---------------------------------------------------------------------------------------------------------------------
# Center loss


def test_center_loss_hand_value_and_zero_at_centers():
    x, y, c = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]), torch.zeros(2, 2)
    assert center_loss(x, y, c).item() == pytest.approx(1.25), "x=[[1,0],[0,2]], c=0 must give 1.25"
    centers = torch.randn(K, D)
    labels = torch.randint(0, K, (B,))
    assert center_loss(centers[labels], labels, centers).item() == 0.0, "x_i = c_{y_i} must give 0"


def test_center_loss_gradient_is_difference_over_batch():
    x, y = batch()
    c = torch.randn(K, D)
    x.requires_grad_(True)
    center_loss(x, y, c).backward()
    torch.testing.assert_close(x.grad, (x.detach() - c[y]) / B)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_center_and_intra_match_naive_loops(reduction):
    x, y = batch(dtype=torch.float64)
    c = torch.randn(K, D, dtype=torch.float64)
    expected = ref_center(x, y, c)
    expected_cos = torch.tensor([1 - ref_cos(x[i], c[t]) for i, t in enumerate(y.tolist())], dtype=torch.float64)
    reduce = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}[reduction]
    torch.testing.assert_close(center_loss(x, y, c, reduction=reduction), reduce(expected))
    torch.testing.assert_close(cosine_intra_loss(x, y, c, reduction=reduction), reduce(expected_cos))


# ---------------------------------------------------------------------------------------------------------------------
# Island pair term


@pytest.mark.parametrize("centers, expected", [
    ([[1.0, 0.0], [-1.0, 0.0]], 0.0),  # K=2 opposite
    ([[1.0, 0.0], [0.0, 1.0]], 2.0),  # K=2 orthogonal
    ([[1.0, 0.0], [3 * math.cos(2 * math.pi / 3), 3 * math.sin(2 * math.pi / 3)],
      [0.2 * math.cos(4 * math.pi / 3), 0.2 * math.sin(4 * math.pi / 3)]], 3.0),  # K=3 at 120 deg, any norms
    (simplex().tolist(), 35.0),  # K=7 simplex: the minimum K(K-2)
])
def test_island_pair_hand_values(centers, expected):
    value = island_pair_term(torch.tensor(centers)).item()
    assert value == pytest.approx(expected, abs=1e-5), f"pair term {value}, expected {expected}"


def test_island_pair_matches_loop_scale_invariant_and_tangential():
    c = torch.randn(K, D, dtype=torch.float64, requires_grad=True)
    value = island_pair_term(c)
    assert value.item() == pytest.approx(ref_pair(c.detach()), rel=1e-12)
    scales = torch.rand(K, 1, dtype=torch.float64) * 10 + 0.1
    assert island_pair_term(c.detach() * scales).item() == pytest.approx(value.item(), rel=1e-12), "not norm invariant"
    value.backward()
    radial = (c.grad * c.detach()).sum(1)
    assert radial.abs().max().item() < 1e-10, f"pair gradient has a radial part: {radial}"


def test_island_zero_center_is_finite():
    c = torch.randn(K, D)
    c[2] = 0
    c.requires_grad_(True)
    value = island_pair_term(c)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(c.grad).all(), "a zero center must give finite loss and gradient"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_island_lambda1_zero_is_center_loss_and_pair_is_added(reduction):
    x, y = batch()
    c = torch.randn(K, D)
    torch.testing.assert_close(island_loss(x, y, c, lambda1=0.0, reduction=reduction),
                               center_loss(x, y, c, reduction=reduction))
    per_sample = island_loss(x, y, c, lambda1=10.0, reduction="none")
    torch.testing.assert_close(per_sample, center_loss(x, y, c, reduction="none") + 10.0 * island_pair_term(c))


# ---------------------------------------------------------------------------------------------------------------------
# AM-Softmax and the cosine classifier


def test_am_softmax_simplex_hand_value():
    classifier = CosineClassifier(K, K)
    with torch.no_grad():
        classifier.weight.copy_(simplex())
    cosines = classifier(simplex())  # x_i = W_i
    value = am_softmax_loss(cosines, torch.arange(K), scale=10.0, margin=0.35).item()
    closed_form = math.log1p((K - 1) * math.exp(10 * (-1 / (K - 1)) - 10 * (1 - 0.35)))
    assert closed_form == pytest.approx(0.001702, abs=5e-7), f"closed form {closed_form}"
    assert value == pytest.approx(closed_form, rel=1e-4), f"simplex value {value}, expected {closed_form}"


def test_am_softmax_margin_zero_is_scaled_cross_entropy_and_logits():
    cosines = torch.rand(B, K) * 2 - 1
    y = torch.randint(0, K, (B,))
    torch.testing.assert_close(am_softmax_loss(cosines, y, scale=10.0, margin=0.0),
                               F.cross_entropy(10.0 * cosines, y))
    logits = am_softmax_logits(cosines, y, scale=10.0, margin=0.35)
    target = F.one_hot(y, K).bool()
    assert torch.equal(logits[~target], (10.0 * cosines)[~target]), "non-target logits must be exactly s * cos_j"
    torch.testing.assert_close(logits[target], 10.0 * (cosines[target] - 0.35))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_am_softmax_matches_naive_loop(reduction):
    cosines = torch.rand(B, K, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, K, (B,))
    expected = ref_am_softmax(cosines, y, 30.0, 0.35)
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    loss = AMSoftmaxLoss(reduction=reduction)
    torch.testing.assert_close(loss(cosines, y), expected)
    assert list(loss.parameters()) == [], "AMSoftmaxLoss must have no parameters"


def test_am_softmax_strictly_increasing_in_margin():
    cosines, y = torch.rand(B, K) * 2 - 1, torch.randint(0, K, (B,))
    values = [am_softmax_loss(cosines, y, scale=10.0, margin=m).item() for m in (0.0, 0.1, 0.2, 0.35, 0.5)]
    assert all(a < b for a, b in zip(values, values[1:])), f"not increasing in m: {values}"


def test_cosine_classifier_scale_invariance_and_radial_gradient():
    classifier = CosineClassifier(D, K)
    x, y = batch()
    base = classifier(x)
    assert base.shape == (B, K) and base.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(classifier(x * torch.rand(B, 1) * 50 + 0.01 * x), base, msg="not invariant to x scale")
    scaled = CosineClassifier(D, K)
    with torch.no_grad():
        scaled.weight.copy_(classifier.weight * (torch.rand(K, 1) * 20 + 0.05))
    torch.testing.assert_close(scaled(x), base, msg="not invariant to W_j scale")
    x.requires_grad_(True)
    am_softmax_loss(classifier(x), y, scale=10.0, margin=0.35).backward()
    radial = (x.grad * x.detach()).sum(1)
    assert radial.abs().max().item() < 1e-5, f"x . grad_x should be 0, got {radial}"


# ---------------------------------------------------------------------------------------------------------------------
# Reductions of the modules


def make_loss(name: str, **kwargs):
    if name == "center":
        return CenterLoss(K, D, **kwargs)
    if name == "island":
        return IslandLoss(K, D, **kwargs)
    return CosineDistanceLoss(K, D, **kwargs)


def call(loss, x, y, classifier=None):
    if isinstance(loss, CosineDistanceLoss):
        return loss(x, classifier(x), y)
    return loss(x, y)


@pytest.mark.parametrize("name", ["center", "island", "cosine_distance"])
def test_reduction_none_matches_mean_and_sum(name):
    x, y = batch()
    classifier = CosineClassifier(D, K)
    values = {}
    for reduction in ("mean", "sum", "none"):
        loss = make_loss(name, reduction=reduction)
        loss.eval()
        with torch.no_grad():
            loss.centers.copy_(torch.arange(K * D, dtype=torch.float32).reshape(K, D).sin())
        values[reduction] = call(loss, x, y, classifier)
    assert values["none"].shape == (B,)
    torch.testing.assert_close(values["none"].mean(), values["mean"])
    torch.testing.assert_close(values["none"].sum(), values["sum"])


# ---------------------------------------------------------------------------------------------------------------------
# Delta rule


def test_delta_rule_hand_value_absent_classes_and_old_centers_for_loss():
    loss = CenterLoss(3, 2, alpha=0.5)
    with torch.no_grad():
        loss.centers.zero_()
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    value = loss(x, y)
    assert value.item() == pytest.approx((1 + 9) / 2 / 2), "loss must use the centers before the update"
    # dc_0 = (2 * 0 - 4) / 3; c_0 = 0 - 0.5 * dc_0 = 2/3
    torch.testing.assert_close(loss.centers, torch.tensor([[2 / 3, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    value.backward()  # the graph must not have seen the update
    torch.testing.assert_close(x.grad, x.detach() / 2)


def test_delta_rule_matches_loop_and_ignores_batch_order():
    x, y = torch.randn(12, D), torch.tensor([0, 1, 1, 3, 3, 3, 0, 1, 3, 0, 0, 1])  # classes 2, 4, 5, 6 absent
    loss = CenterLoss(K, D, alpha=0.5)
    old = loss.centers.clone()
    loss(x, y)
    torch.testing.assert_close(loss.centers, ref_delta(old, x, y, 0.5))
    assert torch.equal(loss.centers[[2, 4, 5, 6]], old[[2, 4, 5, 6]]), "absent classes moved"
    shuffled = CenterLoss(K, D, alpha=0.5)
    shuffled.centers = old.clone()
    order = torch.randperm(12)
    shuffled(x[order], y[order])
    torch.testing.assert_close(shuffled.centers, loss.centers, msg="batch order changed the update")


def test_delta_rule_moves_centers_toward_features_and_not_in_eval():
    x = torch.randn(4, D) * 3
    y = torch.arange(4)
    loss = CenterLoss(K, D)
    distances = []
    for _ in range(5):
        loss(x, y)
        distances.append((loss.centers[:4] - x).norm().item())
    assert all(a > b for a, b in zip(distances, distances[1:])), f"centers do not approach features: {distances}"
    assert list(loss.parameters()) == [] and "centers" in dict(loss.named_buffers())
    loss.eval()
    before = loss.centers.clone()
    loss(x, y)
    assert torch.equal(loss.centers, before), "eval mode must not move the centers"


def test_island_delta_rule_is_paper_update():
    x, y = batch()
    lambda1, alpha = 10.0, 0.5
    loss = IslandLoss(K, D, lambda1=lambda1, alpha=alpha)
    old = loss.centers.clone()
    value = loss(x, y)
    torch.testing.assert_close(value, island_loss(x, y, old, lambda1=lambda1), msg="value must include the pair term")
    leaf = old.clone().requires_grad_(True)
    (pair_grad,) = torch.autograd.grad(island_pair_term(leaf), leaf)
    # paper: one-sided derivative (half the ordered-sum gradient) scaled by lambda1 / (K - 1)
    expected = ref_delta(old, x, y, alpha) - alpha * lambda1 / (K - 1) * pair_grad / 2
    torch.testing.assert_close(loss.centers, expected)

    plain, no_pair = CenterLoss(K, D), IslandLoss(K, D, lambda1=0.0)
    plain.centers, no_pair.centers = old.clone(), old.clone()
    plain(x, y), no_pair(x, y)
    torch.testing.assert_close(no_pair.centers, plain.centers, msg="lambda1=0 must reduce to the center update")


# ---------------------------------------------------------------------------------------------------------------------
# Autograd mode and the helper optimizer


def test_autograd_mode_centers_move_under_helper_optimizer():
    weight = 0.01
    loss = CenterLoss(K, D, update="autograd")
    assert [p is loss.centers for p in loss.parameters()] == [True], "centers must be the only parameter"
    optimizer = center_optimizer(loss, loss_weight=weight)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and group["lr"] == pytest.approx(0.5 / weight)
    assert group["momentum"] == 0 and group["weight_decay"] == 0
    x, y = torch.randn(4, D) * 3, torch.arange(4)
    old = loss.centers.detach().clone()
    # lr = alpha / lambda on lambda * L equals the usual step of alpha on L: c -= alpha * dL/dc
    (weight * loss(x, y)).backward()
    optimizer.step()
    torch.testing.assert_close(loss.centers.detach(), old - 0.5 * (old - torch.cat([x, torch.zeros(K - 4, D)])) * (
        torch.arange(K) < 4).float()[:, None] / 4)
    distances = []
    for _ in range(5):
        optimizer.zero_grad()
        (weight * loss(x, y)).backward()
        optimizer.step()
        distances.append((loss.centers.detach()[:4] - x).norm().item())
    assert all(a > b for a, b in zip(distances, distances[1:])), f"centers do not approach features: {distances}"


def test_center_optimizer_defaults_and_delta_mode_rejected():
    combined = CosineDistanceLoss(K, D, update="autograd", lambda_island=0.02)
    assert center_optimizer(combined).param_groups[0]["lr"] == pytest.approx(0.5 / 0.02)
    assert center_optimizer(IslandLoss(K, D, update="autograd"), 0.1).param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="delta"):
        center_optimizer(CenterLoss(K, D))


def test_island_autograd_mode_moves_centers_by_autograd():
    loss = IslandLoss(K, D, update="autograd")
    x, y = batch()
    old = loss.centers.detach().clone()
    leaf = old.clone().requires_grad_(True)
    (expected_grad,) = torch.autograd.grad(island_loss(x, y, leaf, lambda1=10.0), leaf)
    loss(x, y).backward()
    torch.testing.assert_close(loss.centers.grad, expected_grad)


# ---------------------------------------------------------------------------------------------------------------------
# The combined loss


@pytest.mark.parametrize("intra", ["euclidean", "cosine"])
def test_cosine_distance_parts_equal_standalone_losses(intra):
    x, y = batch()
    classifier = CosineClassifier(D, K)
    cosines = classifier(x)
    loss = CosineDistanceLoss(K, D, intra=intra, lambda_island=0.05).eval()
    c = loss.centers
    total = loss(x, cosines, y)
    am = AMSoftmaxLoss(scale=10.0, margin=0.35)(cosines, y)
    intra_value = center_loss(x, y, c) if intra == "euclidean" else cosine_intra_loss(x, y, c)
    parts = loss.last_parts
    torch.testing.assert_close(parts["am_softmax"], am.detach())
    torch.testing.assert_close(parts["intra"], intra_value)
    torch.testing.assert_close(parts["pair"], island_pair_term(c))
    torch.testing.assert_close(total, am + 0.05 * (intra_value + 10.0 * island_pair_term(c)))
    if intra == "euclidean":
        island = IslandLoss(K, D).eval()
        island.centers = c.clone()
        torch.testing.assert_close(total, am + 0.05 * island(x, y))
    assert all(not v.requires_grad for v in parts.values())


def test_cosine_distance_lambda_zero_is_am_softmax():
    x, y = batch()
    x.requires_grad_(True)
    classifier = CosineClassifier(D, K)
    combined = CosineDistanceLoss(K, D, lambda_island=0.0)(x, classifier(x), y)
    (grad_combined,) = torch.autograd.grad(combined, x)
    plain = am_softmax_loss(classifier(x), y, scale=10.0, margin=0.35)
    (grad_plain,) = torch.autograd.grad(plain, x)
    torch.testing.assert_close(combined, plain)
    torch.testing.assert_close(grad_combined, grad_plain)


@pytest.mark.parametrize("update", ["delta", "autograd"])
def test_cosine_intra_makes_the_loss_scale_invariant(update):
    x, y = batch()
    classifier = CosineClassifier(D, K)
    small = CosineDistanceLoss(K, D, intra="cosine", update=update)
    large = CosineDistanceLoss(K, D, intra="cosine", update=update)
    large.load_state_dict(small.state_dict())
    feature_scale = torch.rand(B, 1) * 100 + 0.01
    torch.testing.assert_close(large(x * feature_scale, classifier(x * feature_scale), y), small(x, classifier(x), y))
    torch.testing.assert_close(large.centers, small.centers, msg="the delta update must not depend on feature scale")


def test_cosine_distance_delta_mode_moves_centers_only_by_rule():
    x, y = batch()
    x.requires_grad_(True)
    classifier = CosineClassifier(D, K)
    loss = CosineDistanceLoss(K, D)
    old = loss.centers.clone()
    loss(x, classifier(x), y).backward()
    expected = ref_delta(old, x.detach(), y, 0.5)
    leaf = old.clone().requires_grad_(True)
    (pair_grad,) = torch.autograd.grad(island_pair_term(leaf), leaf)
    torch.testing.assert_close(loss.centers, expected - 0.5 * 10.0 / (K - 1) * pair_grad / 2)
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------------------------------
# gradcheck (float64)


def test_gradcheck_functional_forms():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(K, 3, dtype=torch.float64, requires_grad=True)
    cosines = (torch.rand(4, K, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    y = torch.tensor([0, 2, 2, 6])
    checks = {
        "am_softmax_loss": (lambda cos: am_softmax_loss(cos, y, scale=10.0, margin=0.35), (cosines,)),
        "center_loss": (lambda a, b: center_loss(a, y, b), (x, c)),
        "cosine_intra_loss": (lambda a, b: cosine_intra_loss(a, y, b, reduction="none"), (x, c)),
        "island_pair_term": (island_pair_term, (c,)),
        "island_loss": (lambda a, b: island_loss(a, y, b, lambda1=10.0, reduction="sum"), (x, c)),
    }
    for name, (fn, inputs) in checks.items():
        assert torch.autograd.gradcheck(fn, inputs), name


@pytest.mark.parametrize("intra", ["euclidean", "cosine"])
def test_gradcheck_classifier_and_combined_loss(intra):
    classifier = CosineClassifier(3, K).double()
    loss = CosineDistanceLoss(K, 3, intra=intra, update="autograd", lambda_island=0.1).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weight = classifier.weight.detach().clone().requires_grad_(True)
    centers = loss.centers.detach().clone().requires_grad_(True)
    y = torch.tensor([1, 0, 6, 1])

    def total(x, weight, centers):
        cosines = functional_call(classifier, {"weight": weight}, (x,))
        return functional_call(loss, {"centers": centers}, (x, cosines, y))

    # fast_mode checks random projections of the Jacobian: the full check costs seconds on two shared cores
    assert torch.autograd.gradcheck(total, (x, weight, centers), fast_mode=True)


# ---------------------------------------------------------------------------------------------------------------------
# Low precision and degenerate input


def test_fp16_and_zero_features_stay_finite():
    classifier = CosineClassifier(D, K).half()
    loss = CosineDistanceLoss(K, D).half()
    x = (torch.randn(B, D) * 200).half()  # |x|^2 overflows fp16; the loss computes in float32
    x[0] = 0
    x.requires_grad_(True)
    cosines = classifier(x)
    assert cosines.dtype == torch.float32 and torch.isfinite(cosines).all()
    assert torch.equal(cosines[0], torch.zeros(K)), "a zero feature has cosine 0 with every class"
    value = loss(x, cosines, torch.randint(0, K, (B,)))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value), f"loss {value}"
    assert torch.isfinite(x.grad.float()).all() and torch.isfinite(loss.centers).all()
    zero = torch.zeros(B, D, requires_grad=True)
    am = am_softmax_loss(CosineClassifier(D, K)(zero), torch.randint(0, K, (B,)), scale=30.0, margin=0.35)
    am.backward()
    assert torch.isfinite(am) and torch.isfinite(zero.grad).all()


def test_autocast_computes_in_float32():
    classifier, loss = CosineClassifier(D, K), CosineDistanceLoss(K, D)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cosines = classifier(x)
        value = loss(x, cosines, y)
    assert cosines.dtype == torch.float32 and value.dtype == torch.float32
    torch.testing.assert_close(cosines, CosineClassifier.forward(classifier, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_under_autocast():
    x, y = batch()
    classifier, loss = CosineClassifier(D, K), CosineDistanceLoss(K, D).eval()
    expected = loss(x, classifier(x), y)
    classifier, loss = classifier.cuda(), loss.cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        value = loss(x.cuda(), classifier(x.cuda()), y.cuda())
    torch.testing.assert_close(value.cpu(), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Boundary checks


def bad_call(target: str, x, y, cosines=None):
    if target == "classifier":
        return CosineClassifier(D, K)(x)
    if target == "am_softmax":
        return AMSoftmaxLoss()(cosines if cosines is not None else torch.rand(x.shape[0], K), y)
    loss = {"center": CenterLoss(K, D), "island": IslandLoss(K, D), "cosine_distance": CosineDistanceLoss(K, D)}[target]
    if target == "cosine_distance":
        return loss(x, cosines if cosines is not None else torch.rand(x.shape[0], K), y)
    return loss(x, y)


LOSS_TARGETS = ["center", "island", "cosine_distance", "am_softmax"]
FEATURE_TARGETS = ["center", "island", "cosine_distance", "classifier"]
LABELS_OK = torch.arange(B) % K


@pytest.mark.parametrize("target", LOSS_TARGETS)
@pytest.mark.parametrize("labels, match", [
    (torch.arange(B + 1) % K, "batch sizes differ"),
    (torch.zeros(B, 1, dtype=torch.long), "1-D"),
    (torch.zeros(B), "integer"),
    (torch.zeros(B, dtype=torch.bool), "integer"),
    (torch.full((B,), K), r"\[0, 7\), found \[7\]"),
    (torch.full((B,), -1), r"\[0, 7\), found \[-1\]"),
])
def test_bad_labels_raise(target, labels, match):
    with pytest.raises(ValueError, match=match):
        bad_call(target, torch.randn(B, D), labels)


@pytest.mark.parametrize("target", FEATURE_TARGETS)
def test_bad_embeddings_raise(target):
    with pytest.raises(ValueError, match=r"shape \(6, 4\)"):
        bad_call(target, torch.randn(B, D - 1), LABELS_OK)
    with pytest.raises(ValueError, match="2-D"):
        bad_call(target, torch.randn(B, D, 1), LABELS_OK)
    nan = torch.randn(B, D)
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="embeddings has non-finite"):
        bad_call(target, nan, LABELS_OK)


@pytest.mark.parametrize("target", ["am_softmax", "cosine_distance"])
def test_bad_cosines_raise(target):
    inf = torch.rand(B, K)
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="cosines has non-finite"):
        bad_call(target, torch.randn(B, D), LABELS_OK, inf)
    with pytest.raises(ValueError, match="batch sizes differ"):
        bad_call(target, torch.randn(B, D), LABELS_OK, torch.rand(B - 1, K))
    if target == "cosine_distance":
        with pytest.raises(ValueError, match="num_classes is 7"):
            bad_call(target, torch.randn(B, D), LABELS_OK, torch.rand(B, K + 1))


def test_empty_batch_and_bad_centers_raise():
    with pytest.raises(ValueError, match="empty batch"):
        CenterLoss(K, D)(torch.zeros(0, D), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="centers has non-finite"):
        island_pair_term(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="embedding dim of centers"):
        center_loss(torch.randn(B, D), LABELS_OK, torch.randn(K, D + 1))


@pytest.mark.parametrize("build", [
    lambda: AMSoftmaxLoss(reduction="avg"),
    lambda: CenterLoss(K, D, reduction="avg"),
    lambda: IslandLoss(K, D, reduction="avg"),
    lambda: CosineDistanceLoss(K, D, reduction="avg"),
    lambda: center_loss(torch.randn(B, D), LABELS_OK, torch.randn(K, D), reduction="avg"),
    lambda: am_softmax_loss(torch.rand(B, K), LABELS_OK, scale=10.0, margin=0.35, reduction="avg"),
])
def test_unknown_reduction_raises(build):
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        build()


@pytest.mark.parametrize("build, match", [
    (lambda: CenterLoss(K, D, update="adam"), "unknown update 'adam'"),
    (lambda: IslandLoss(K, D, update="sgd"), "unknown update 'sgd'"),
    (lambda: CosineDistanceLoss(K, D, update="x"), "unknown update 'x'"),
    (lambda: CosineDistanceLoss(K, D, intra="l1"), "unknown intra 'l1'"),
    (lambda: IslandLoss(1, D), "num_classes >= 2"),
    (lambda: AMSoftmaxLoss(scale=0.0), "scale must be > 0"),
])
def test_bad_options_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ---------------------------------------------------------------------------------------------------------------------
# Import weight and the documented snippet


def test_losses_module_imports_torch_only():
    tree = ast.parse((REPO / "fer" / "losses.py").read_text())
    imported = {alias.name.split(".")[0]
                for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"torch", "contextlib"}, f"fer/losses.py imports {imported}"


def test_import_without_cv2_albumentations_sklearn():
    child = (
        "import sys\n"
        "BLOCKED = {'cv2', 'albumentations', 'sklearn'}\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError('blocked for this test: ' + name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "import fer.losses\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)\n"
        "assert not loaded, loaded\n"
        "print(fer.losses.__file__)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"import fer.losses failed without cv2/albumentations/sklearn:\n{result.stderr}"
    assert str(REPO / "fer" / "losses.py") in result.stdout


@pytest.mark.parametrize("doc", ["README.md", "docs/losses.md"])
def test_docs_snippet_runs(doc):
    text = (REPO / doc).read_text()
    start, end = text.index("<!-- snippet:start -->"), text.index("<!-- snippet:end -->")
    snippet = text[start:end].split("```python\n", 1)[1].rsplit("```", 1)[0]
    namespace = {"__name__": "docs_snippet"}
    exec(compile(snippet, doc, "exec"), namespace)
    probs = namespace["probs"]
    assert probs.shape == (32, K) and torch.allclose(probs.sum(1), torch.ones(32))


# ---------------------------------------------------------------------------------------------------------------------
# Recipe options: label smoothing, per-class margins (LDAM), class weights (DRW), mixed labels


def naive_am_softmax(cosines, labels, scale, margins, eps=0.0, weights=None):
    """Loop reference: per sample, smoothed cross-entropy against s * (cos - m_y at the target)."""
    k = cosines.shape[1]
    margins = margins if isinstance(margins, torch.Tensor) else torch.full((k,), float(margins))
    weights = torch.ones(k) if weights is None else weights
    total = 0.0
    for i in range(len(labels)):
        y = int(labels[i])
        logits = [scale * (float(cosines[i, j]) - (float(margins[y]) if j == y else 0.0)) for j in range(k)]
        log_z = math.log(sum(math.exp(v) for v in logits))
        target = [(1 - eps) * (j == y) + eps / k for j in range(k)]
        total += float(weights[y]) * -sum(t * (v - log_z) for t, v in zip(target, logits))
    return total / len(labels)


def random_cosines(b=B, k=K):
    return torch.rand(b, k) * 2 - 1, torch.randint(0, k, (b,))


def test_am_softmax_label_smoothing_matches_the_naive_reference():
    cosines, labels = random_cosines()
    for eps in (0.0, 0.1, 0.4):
        got = am_softmax_loss(cosines, labels, scale=10.0, margin=0.35, label_smoothing=eps)
        assert got.item() == pytest.approx(naive_am_softmax(cosines, labels, 10.0, 0.35, eps), rel=1e-5), eps
    plain = am_softmax_loss(cosines, labels, scale=10.0, margin=0.35)
    assert torch.equal(am_softmax_loss(cosines, labels, scale=10.0, margin=0.35, label_smoothing=0.0), plain)
    smoothed = am_softmax_loss(cosines, labels, scale=10.0, margin=0.35, label_smoothing=0.1)
    assert not torch.equal(smoothed, plain), "smoothing changes the loss"


def test_per_class_margins_and_class_weights_match_the_naive_reference():
    cosines, labels = random_cosines(12)
    margins, weights = torch.rand(K) * 0.5, torch.rand(K) * 2
    got = am_softmax_loss(cosines, labels, scale=10.0, margin=margins, label_smoothing=0.1, class_weights=weights)
    assert got.item() == pytest.approx(naive_am_softmax(cosines, labels, 10.0, margins, 0.1, weights), rel=1e-5)
    # limiting cases: a uniform margin tensor is the float margin, weights of ones are the unweighted loss
    plain = am_softmax_loss(cosines, labels, scale=10.0, margin=0.35, reduction="none")
    uniform = am_softmax_loss(cosines, labels, scale=10.0, margin=torch.full((K,), 0.35), reduction="none")
    ones = am_softmax_loss(cosines, labels, scale=10.0, margin=0.35, reduction="none", class_weights=torch.ones(K))
    assert torch.allclose(uniform, plain, atol=1e-6) and torch.allclose(ones, plain, atol=1e-6)
    module = AMSoftmaxLoss(scale=10.0, margin=margins, label_smoothing=0.1, class_weights=weights)
    assert torch.allclose(module(cosines, labels), got)


def test_margin_stays_on_the_target_logit_under_smoothing():
    cosines, labels = random_cosines()
    logits = am_softmax_logits(cosines, labels, scale=10.0, margin=torch.linspace(0.1, 0.7, K))
    expected = 10.0 * cosines
    expected[torch.arange(B), labels] -= 10.0 * torch.linspace(0.1, 0.7, K)[labels]
    assert torch.allclose(logits, expected, atol=1e-6)


def test_am_softmax_options_gradcheck_float64():
    cosines = (torch.rand(4, K, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = torch.randint(0, K, (4,))
    margins, weights = torch.rand(K, dtype=torch.float64) * 0.4, torch.rand(K, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda c: am_softmax_loss(c, labels, scale=5.0, margin=margins, label_smoothing=0.2,
                                                              class_weights=weights), (cosines,))


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin=torch.ones(K + 1)), r"margin must be a \(K,\)"),
    (dict(class_weights=-torch.ones(K)), "class_weights must be finite, non-negative"),
    (dict(label_smoothing=1.5), "label_smoothing must be in"),
])
def test_am_softmax_option_errors(kwargs, message):
    cosines, labels = random_cosines()
    options = {"margin": 0.35, **kwargs}
    with pytest.raises(ValueError, match=message):
        am_softmax_loss(cosines, labels, scale=10.0, **options)


def test_ldam_margins():
    counts = [4000, 430, 4100, 7200, 4800, 3200, 5000]  # FER2013-like imbalance
    margins = ldam_margins(counts, 0.35)
    naive = [0.35 * (430 / n) ** 0.25 for n in counts]
    assert margins.tolist() == pytest.approx(naive, rel=1e-6)
    assert margins.max().item() == pytest.approx(0.35) and margins.argmax().item() == 1, "the rarest class gets m"
    ratio = (margins[1] / margins[3]).item()
    assert ratio == pytest.approx((7200 / 430) ** 0.25, rel=1e-6), "m_j proportional to n_j^(-1/4)"
    assert torch.allclose(ldam_margins([50] * K, 0.35), torch.full((K,), 0.35)), "uniform counts: margin m everywhere"
    with pytest.raises(ValueError, match="positive counts"):
        ldam_margins([10, 0, 5], 0.35)


def test_deferred_class_weights():
    counts = [4000, 430, 4100, 7200, 4800, 3200, 5000]
    assert deferred_class_weights(counts, epoch=9, start_epoch=10) is None, "no weights before the deferred epoch"
    weights = deferred_class_weights(counts, epoch=10, start_epoch=10)
    naive = torch.tensor([(1 - 0.9999) / (1 - 0.9999 ** n) for n in counts], dtype=torch.float64)
    assert weights.tolist() == pytest.approx((naive / naive.sum() * K).tolist(), rel=1e-6)
    assert weights.sum().item() == pytest.approx(K) and weights.argmax().item() == 1, "rare classes weigh more"
    assert torch.allclose(deferred_class_weights([80] * K, 3, 1), torch.ones(K)), "uniform counts: weights of ones"
    assert torch.allclose(deferred_class_weights(counts, 3, 1, beta=0.0), torch.ones(K)), "beta 0: weights of ones"


def test_cosine_distance_loss_passes_smoothing_margins_and_weights_to_its_am_softmax_part():
    embeddings, labels = torch.randn(B, D), torch.randint(0, K, (B,))
    cosines = torch.rand(B, K) * 2 - 1
    margins, weights = ldam_margins([30, 5, 30, 60, 40, 30, 40], 0.35), torch.rand(K) + 0.5
    loss = CosineDistanceLoss(K, D, margin=margins, label_smoothing=0.1, class_weights=weights).eval()
    plain = CosineDistanceLoss(K, D).eval()
    plain.centers.copy_(loss.centers)
    island_part = plain(embeddings, cosines, labels) - am_softmax_loss(cosines, labels, scale=10.0, margin=0.35)
    expected = am_softmax_loss(cosines, labels, scale=10.0, margin=margins, label_smoothing=0.1, class_weights=weights)
    assert torch.allclose(loss(embeddings, cosines, labels), expected + island_part, atol=1e-6)
    assert "margin" not in loss.state_dict() and "class_weights" not in loss.state_dict(), "recomputed, not saved"
    loss.class_weights = None  # deferred re-weighting switches weights on and off
    expected = am_softmax_loss(cosines, labels, scale=10.0, margin=margins, label_smoothing=0.1)
    assert torch.allclose(loss(embeddings, cosines, labels), expected + island_part, atol=1e-6)


def test_dominant_labels():
    a, b = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    assert dominant_labels(a, None, 1.0) is a
    assert torch.equal(dominant_labels(a, b, 0.7), a) and torch.equal(dominant_labels(a, b, 0.5), a)
    assert torch.equal(dominant_labels(a, b, 0.3), b)


@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_cosine_distance_loss_mixed_labels_rule(lam):
    """AM-Softmax part lam-weighted over both labels (margin on each term's target); intra and delta rule on the
    dominant label only."""
    embeddings, cosines = torch.randn(B, D), torch.rand(B, K) * 2 - 1
    labels_a, labels_b = torch.randint(0, K, (B,)), torch.randint(0, K, (B,))
    dominant = labels_a if lam >= 0.5 else labels_b
    mixed, reference = CosineDistanceLoss(K, D), CosineDistanceLoss(K, D)
    reference.centers.copy_(mixed.centers)
    got = mixed(embeddings, cosines, labels_a, labels_b, lam)
    on_dominant = reference(embeddings, cosines, dominant)  # moves its centers with the dominant labels
    am = lambda y: am_softmax_loss(cosines, y, scale=10.0, margin=0.35)  # noqa: E731
    expected = on_dominant - am(dominant) + lam * am(labels_a) + (1 - lam) * am(labels_b)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(mixed.centers, reference.centers), "the delta rule used the dominant labels"
    unmixed = CosineDistanceLoss(K, D)
    unmixed.centers.copy_(reference.centers)
    again = CosineDistanceLoss(K, D)
    again.centers.copy_(reference.centers)
    assert torch.equal(unmixed(embeddings, cosines, labels_a, labels_b, 1.0), again(embeddings, cosines, labels_a))
