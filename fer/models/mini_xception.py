"""mini-Xception (Arriaga et al. 2017, arXiv 1710.07557; oarriaga/face_classification src/models/cnn.py).

Faithful to the Keras original: 56,951 trainable parameters with the Keras head for 7 classes on gray input (3-channel
input adds 144 weights to the first convolution). Fully convolutional with global average pooling, so any input size from
40 px up works: the two unpadded 3x3 convolutions take 4 px, each of the four modules halves the rest (rounding up).
Keras BatchNormalization defaults (momentum 0.99, eps 1e-3) map to PyTorch momentum=0.01, eps=1e-3.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fer.losses import CosineClassifier


# oneDNN (torch 2.13 CPU) crashes (SIGSEGV) in the backward pass of a channels-last 1x1 stride-2 convolution with few
# input channels (4-8) on maps of 56 px and more: module 1 for inputs of 60 px and up. Larger maps take the identical
# 1x1 convolution of the subsampled map instead; maps up to this side (all of them at 48 px input) keep the strided
# convolution, so 48 px runs compute exactly what they did before.
STRIDED_SHORTCUT_MAX_SIDE = 54


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SeparableConv(nn.Sequential):
    """Keras SeparableConv2D without bias: depthwise 3x3 then pointwise 1x1, nothing between."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class XceptionModule(nn.Module):
    """Residual 1x1 stride-2 conv + (SepConv-BN-ReLU-SepConv-BN-MaxPool); no ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False), batch_norm(out_channels))
        self.main = nn.Sequential(
            SeparableConv(in_channels, out_channels),
            batch_norm(out_channels),
            nn.ReLU(inplace=True),
            SeparableConv(out_channels, out_channels),
            batch_norm(out_channels),
            # Keras MaxPool 'same' on even sizes pads asymmetrically; padding=1 gives the same output sizes.
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) <= STRIDED_SHORTCUT_MAX_SIDE:
            return self.residual(x)
        conv, bn = self.residual
        # = conv(x): 1x1, stride 2, no padding; the bias is None unless fold_batchnorm merged bn into conv
        return bn(F.conv2d(x[:, :, ::2, ::2], conv.weight, conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """mini-Xception backbone with one of three heads.

    head="keras": Conv 3x3 (K channels, bias) -> global average pool, as in the paper (logits).
    head="linear": global average pool (embedding, D=128) -> Linear(D, K) (logits).
    head="cosine": global average pool (embedding, D=128) -> CosineClassifier (cosines, for AM-Softmax).
    """

    embedding_dim = 128

    def __init__(self, num_classes: int = 7, in_channels: int = 1, head: str = "keras"):
        super().__init__()
        if head not in ("keras", "linear", "cosine"):
            raise ValueError(f"mini_xception: unknown head {head!r}; expected 'keras', 'linear' or 'cosine'")
        self.head_type = head
        self.base = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, bias=False), batch_norm(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, bias=False), batch_norm(8), nn.ReLU(inplace=True),
        )
        self.modules_ = nn.Sequential(*[XceptionModule(c_in, c_out) for c_in, c_out in ((8, 16), (16, 32), (32, 64), (64, 128))])
        if head == "keras":
            self.head = nn.Conv2d(128, num_classes, 3, padding=1)
        elif head == "linear":
            self.head = nn.Linear(128, num_classes)
        else:
            self.head = CosineClassifier(128, num_classes)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) -> embeddings (B, 128), outputs (B, K): logits, or cosines for the cosine head."""
        feature_map = self.modules_(self.base(x))  # (B, 128, S/16, S/16)
        embeddings = feature_map.mean(dim=(2, 3))  # (B, 128)
        if self.head_type == "keras":
            return embeddings, self.head(feature_map).mean(dim=(2, 3))
        return embeddings, self.head(embeddings)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules_(self.base(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[1]
