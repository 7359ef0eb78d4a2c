"""Start a face_resnet from dlib's face-recognition weights, ready to fine-tune.

dlib folds each batch norm into a fixed per-channel scale and shift ("affine"). Fine-tuning those as plain trainable
scale/shift diverges (gradient norms in the hundreds, collapse to the majority class: the probe in docs/models.md),
so the port keeps them as BatchNorm2d layers and this module re-parametrises each one on the statistics of real
training faces: running mean and variance become the channel statistics of the layer's input, and weight and bias are
rescaled so that the layer computes exactly the same function. The network's output is then unchanged in eval mode,
and in train mode (batch statistics) it is the same function up to the batch's deviation from those statistics.
"""

import torch
from torch import nn


@torch.no_grad()
def reparametrise_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> int:
    """Set every BatchNorm2d's running statistics to its input's channel mean/variance on x (B, C, S, S), keeping the
    eval-mode function: y = A x + B with A = w / sqrt(v + eps), B = b - m A before and after. Returns the layer count."""
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {m: [0.0, 0.0, 0] for m in layers}

    def record(module, inputs, _output):
        value = inputs[0].float()
        stats = sums[module]
        stats[0] = stats[0] + value.sum(dim=(0, 2, 3))
        stats[1] = stats[1] + (value * value).sum(dim=(0, 2, 3))
        stats[2] += value.numel() // value.shape[1]

    hooks = [m.register_forward_hook(record) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for m in layers:
        total, squares, count = sums[m]
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        scale = m.weight / torch.sqrt(m.running_var + m.eps)  # A
        shift = m.bias - m.running_mean * scale  # B
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.weight.copy_(scale * torch.sqrt(var + m.eps))
        m.bias.copy_(shift + scale * mean)
    return len(layers)


def init_from_backbone(model: nn.Module, x: torch.Tensor | None = None, cached: dict | None = None) -> dict:
    """Load the converted dlib weights into a face_resnet (all but its head), then re-parametrise its batch norms on
    x, normalised training faces (B, C, S, S) (None: keep dlib's folded statistics). cached: the weights already read
    (face_resnet_state_dict()), else the cache is read here. Returns the run's provenance."""
    from fer.models.pretrained import CACHE_NAME, face_resnet_state_dict

    in_channels = model.stem[0].in_channels  # a gray model takes the first conv summed over B, G and R
    try:
        missing, unexpected = model.load_state_dict(face_resnet_state_dict(in_channels, cached), strict=False)
    except RuntimeError as error:  # shapes differ: not a face_resnet
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ValueError(f"face_resnet: the backbone's weights do not fit the model ({first})") from None
    stray = [key for key in missing if not key.startswith("head.")] + list(unexpected)
    if stray:
        raise ValueError(f"face_resnet: the backbone's weights do not fit the model (first: {stray[0]!r})")
    layers = reparametrise_batchnorm(model, x) if x is not None else 0
    return {"source": CACHE_NAME, "datasets": [], "batchnorm_reparametrised": layers,
            "faces_for_statistics": 0 if x is None else len(x)}
