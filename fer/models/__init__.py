"""create_model(name, ...): every model exposes forward_features (B, D), forward_both and forward (B, K)."""

from torch import nn

from fer.models.mini_xception import MiniXception
from fer.models.resnet import SmallResNet

MODELS = ("mini_xception", "resnet_small", "resnet_medium")


def create_model(name: str, num_classes: int = 7, head: str = "cosine", width: int = 1) -> nn.Module:
    if name == "mini_xception":
        return MiniXception(num_classes, head=head)
    if name == "resnet_small":
        return SmallResNet(num_classes, head=head, width=width, blocks=(1, 1, 1, 1))
    if name == "resnet_medium":
        return SmallResNet(num_classes, head=head, width=width, blocks=(2, 2, 2, 2))
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
