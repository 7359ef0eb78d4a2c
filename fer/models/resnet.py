"""A small ResNet for 40-112 px gray or colour faces (48 px gray by default): the stronger CPU model.

Stem 3x3 at full resolution, then four stages of basic residual blocks (He et al. 2016) at 1/2, 1/4, 1/8, 1/16 of the
input, channels 32w, 64w, 128w, 256w; embedding = global average pool (256w). Sized by accuracy per CPU-minute
against mini-Xception (CHANGELOG.md, the first shipped `fer2013`; training speeds in docs/speed.md).
"""

import torch
from torch import nn

from fer.losses import CosineClassifier


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 1, head: str = "cosine", width: int = 1,
                 blocks: tuple[int, ...] = (1, 1, 1, 1)):
        super().__init__()
        if head not in ("linear", "cosine"):
            raise ValueError(f"resnet: unknown head {head!r}; expected 'linear' or 'cosine'")
        channels = [32 * width * 2**i for i in range(len(blocks))]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels[0] // 2, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0] // 2), nn.ReLU(inplace=True))
        layers, previous = [], channels[0] // 2
        for out_channels, count in zip(channels, blocks):
            for i in range(count):
                layers.append(BasicBlock(previous, out_channels, stride=2 if i == 0 else 1))
                previous = out_channels
        self.stages = nn.Sequential(*layers)
        self.embedding_dim = previous
        self.dropout = nn.Dropout(0.2)
        self.head_type = head
        self.head = CosineClassifier(previous, num_classes) if head == "cosine" else nn.Linear(previous, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, D)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.forward_features(x)
        return embeddings, self.head(self.dropout(embeddings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[1]
