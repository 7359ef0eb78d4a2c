"""dlib's face-recognition ResNet (`anet_type`, dlib examples/dnn_face_recognition_ex.cpp) as a FER backbone.

Stem: conv 7x7/2 (32 filters, no padding) -> BN -> ReLU -> max-pool 3x3/2 (no padding: dlib pools with padding only at
stride 1). Then residual blocks relu(x + BN(conv3x3(relu(BN(conv3x3(x)))))) in stages of 32 (3 blocks), 64 (4), 128 (3),
256 (3) and 256 (1) channels; each stage after the first starts with a downsampling block whose first conv is 3x3
stride 2 *without* padding and whose shortcut is a 2x2/2 average pool, added as dlib's add_prev adds tensors of
different shapes: both zero-padded (channels and the bottom/right of the map) to the larger of each dimension.
Global average pool, fc 256 -> 128 without bias: the 128-D output is dlib's face descriptor and this model's embedding.

dlib's "affine" layers (batch norms frozen into a per-channel scale and shift) are BatchNorm2d here, so fine-tuning can
re-estimate statistics; converted weights set running_mean = 0 and running_var = 1 - eps, which makes eval mode compute
exactly the affine. Input is the project's x = face_bgr / 255 * 2 - 1 (B, 3, S, S), or gray (B, 1, S, S); dlib's own
(rgb - mean) / 256 is folded into the first conv by `fold_input_normalisation` (exact: that conv has no padding).
Weights: fer/models/pretrained.py (origin, licence and sha256 in face_resnet_weights.md).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fer.losses import CosineClassifier

# (channels, blocks, the first block downsamples): dlib's alevel4 .. alevel0
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
EMBEDDING_DIM = 128
MIN_INPUT_SIZE = 112  # the smallest size tested; below 103 px the last stage's map is empty
DLIB_INPUT_SCALE = 256.0  # dlib input_rgb_image_sized: (pixel - mean) / 256


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's tt::add of two tensors of different shapes: the sum over the larger of each dimension, each operand
    zero-padded at the end of its channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    # Plain ints: the padding depends on the input size only, which an export fixes, so the ONNX graph holds constants
    # that OpenCV's dnn can read (pad_to).
    size_a, size_b = [int(n) for n in a.shape[1:]], [int(n) for n in b.shape[1:]]
    target = [max(m, n) for m, n in zip(size_a, size_b)]
    return pad_to(a, size_a, target) + pad_to(b, size_b, target)


def pad_to(t: torch.Tensor, size: list[int], target: list[int]) -> torch.Tensor:
    """t (B, C, H, W) zero-padded to (B, *target) at the end of channels, rows and columns: a 1x1 convolution by a
    fixed 0/1 matrix (channel c of the result is channel c of t, or zero: exact) padded by dh, dw on every side, with
    the top dh rows and left dw columns sliced off. Export-friendly where F.pad's graph is not."""
    if target == size:
        return t
    dh, dw = target[1] - size[1], target[2] - size[2]
    weight = torch.eye(target[0], size[0], dtype=t.dtype, device=t.device).view(target[0], size[0], 1, 1)
    return F.conv2d(t, weight, padding=(dh, dw))[:, :, dh:, dw:]


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)  # dlib's con_: no padding when strided
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()
        self.down = down
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.relu(add_padded(self.body(x), self.shortcut(x)))
        return self.relu(self.body(x) + x)


class FaceResNet(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 3, head: str = "cosine"):
        super().__init__()
        if head not in ("linear", "cosine"):
            raise ValueError(f"face_resnet: unknown head {head!r}; expected 'linear' or 'cosine'")
        if in_channels not in (1, 3):
            raise ValueError(f"face_resnet: in_channels must be 1 (gray) or 3 (BGR colour), got {in_channels!r}")
        first = STAGES[0][0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, first, 7, stride=2), nn.BatchNorm2d(first),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        layers, previous = [], first
        for channels, count, down in STAGES:
            for i in range(count):
                layers.append(ResidualBlock(previous, channels, down=down and i == 0))
                previous = channels
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(previous, EMBEDDING_DIM, bias=False)
        self.embedding_dim = EMBEDDING_DIM
        self.dropout = nn.Dropout(0.2)
        self.head_type = head
        self.head = CosineClassifier(EMBEDDING_DIM, num_classes) if head == "cosine" else \
            nn.Linear(EMBEDDING_DIM, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"face_resnet takes faces of at least {MIN_INPUT_SIZE} px, got {tuple(x.shape)}")
        # keepdim + flatten rather than mean over (2, 3): OpenCV dnn mis-shapes the latter for batches over one
        pooled = self.stages(self.stem(x)).mean(dim=(2, 3), keepdim=True).flatten(1)  # (B, 256)
        return self.fc(pooled)  # (B, 128)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.forward_features(x)
        return embeddings, self.head(self.dropout(embeddings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[1]


def fold_input_normalisation(weight: torch.Tensor, bias: torch.Tensor, means_rgb, in_channels: int = 3
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's first conv (O, 3, k, k) on (rgb - means_rgb) / 256 -> the same conv on the project's x = bgr / 255 * 2 - 1.

    pixel = (x + 1) * 127.5, so (pixel - m) / 256 = x * 127.5 / 256 + (127.5 - m) / 256: the weights scale by 127.5/256
    and flip RGB -> BGR, the bias gains sum_c (127.5 - m_c) / 256 * sum(W[:, c]). Exact because the conv has no padding
    (every output sees only real pixels). in_channels=1: the BGR weights summed, exact for a gray face replicated to
    three channels."""
    weight, bias = weight.double(), bias.double()
    means = torch.tensor([float(m) for m in means_rgb], dtype=torch.float64)
    scale = 127.5 / DLIB_INPUT_SCALE
    folded_bias = bias + (weight.sum(dim=(2, 3)) * ((127.5 - means) / DLIB_INPUT_SCALE)).sum(dim=1)
    folded = (weight * scale).flip(1)  # RGB -> BGR
    if in_channels == 1:
        folded = folded.sum(dim=1, keepdim=True)
    return folded.float().contiguous(), folded_bias.float()
