"""create_model(name, ...): every model exposes forward_features (B, D), forward_both and forward (B, K)."""

from torch import nn

from fer.models.face_resnet import MIN_INPUT_SIZE as FACE_RESNET_MIN_SIZE
from fer.models.face_resnet import FaceResNet
from fer.models.mini_xception import MiniXception
from fer.models.resnet import SmallResNet

MODELS = ("mini_xception", "resnet_small", "resnet_medium", "face_resnet")
MIN_INPUT_SIZE = {"face_resnet": FACE_RESNET_MIN_SIZE}  # the smallest face side a model takes; the others: 40 px


def create_model(name: str, num_classes: int = 7, head: str = "cosine", width: int = 1, in_channels: int = 1) -> nn.Module:
    """in_channels: 1 for gray faces, 3 for BGR colour; only the stem's first convolution depends on it."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (gray) or 3 (BGR colour), got {in_channels!r}")
    if name == "mini_xception":
        return MiniXception(num_classes, in_channels=in_channels, head=head)
    if name == "resnet_small":
        return SmallResNet(num_classes, in_channels=in_channels, head=head, width=width, blocks=(1, 1, 1, 1))
    if name == "resnet_medium":
        return SmallResNet(num_classes, in_channels=in_channels, head=head, width=width, blocks=(2, 2, 2, 2))
    if name == "face_resnet":  # dlib's face-recognition ResNet, >= 112 px; weights: fer.models.pretrained
        if width != 1:
            raise ValueError(f"face_resnet has a fixed width (dlib's network), got width {width}")
        return FaceResNet(num_classes, in_channels=in_channels, head=head)
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
