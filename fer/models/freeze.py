"""freeze_for_cpu(model, size, channels): forward_both as a frozen TorchScript graph, for CPU inference.

Why: a frozen graph lets oneDNN fuse each convolution with its bias, ReLU and residual add and pre-pack the weights,
which eager mode cannot. It matters for the face_resnet at batch 1 (2 threads: eager 5.6 ms, frozen 4.5 ms per face,
benchmarks/inference.py); the small 48 px networks gain less, since their time is mostly per-op overhead.
The trace is taken at one batch size and fixed face size; a traced graph of convolutions serves any batch size, and
tests/test_models.py checks that its outputs equal eager mode at several. Python-side checks inside forward (the cosine
head's finite-embedding guard, face_resnet's shape comparisons, which depend on the face size only) are evaluated once
at trace time.
"""

import warnings

import torch
from torch import nn


class _ForwardBoth(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_both(x)


def freeze_for_cpu(model: nn.Module, size: int, channels: int):
    """model in eval mode (batch norms already folded) -> a callable x (B, C, S, S) -> (embeddings, outputs)."""
    example = torch.zeros(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks above, constant for one face size
        # TorchScript is deprecated in favour of torch.compile, which needs a C++ compiler and tens of seconds per
        # model: too much for `predict` on a laptop. Where a later torch drops it, Classifier falls back to eager.
        warnings.simplefilter("ignore", DeprecationWarning)
        frozen = torch.jit.freeze(torch.jit.trace(_ForwardBoth(model).eval(), example, check_trace=False))
        for _ in range(2):  # the profiling executor optimises the graph on its first calls; pay that here
            frozen(example)
    return frozen
