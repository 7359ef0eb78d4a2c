"""fold_batchnorm(model): merge each BatchNorm2d into the Conv2d right before it, for inference.

In eval mode a BatchNorm is a fixed per-channel affine map, so conv -> bn equals one conv with rescaled weights and a
bias (torch.nn.utils.fusion.fuse_conv_bn_eval does the arithmetic). Removing the BN ops shortens every forward; it
matters most at batch 1, where per-op overhead dominates (docs/speed.md). Training never sees a folded
model; the torch Classifier folds its own copy.
"""

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every BatchNorm2d that directly follows a Conv2d in an nn.Sequential folded
    into that conv (the conv may end a nested nn.Sequential, as mini-Xception's separable convs do). The BN slot becomes
    nn.Identity, so module indices stay valid. Outputs match the original in eval mode up to float rounding."""
    folded = copy.deepcopy(model).eval()
    for sequential in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(sequential)):
            owner, index = sequential, i - 1
            while isinstance(owner[index], nn.Sequential) and len(owner[index]):  # descend to the last layer
                owner, index = owner[index], len(owner[index]) - 1
            conv, bn = owner[index], sequential[i]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                owner[index] = fuse_conv_bn_eval(conv, bn)
                sequential[i] = nn.Identity()
    return folded
