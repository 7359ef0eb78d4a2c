"""Time one training step (forward + backward + Adam step) with plain softmax CE vs CosineDistanceLoss.

Batch 64 of 1x48x48 input, 128-d embeddings, 2 CPU threads, channels_last. The two set-ups alternate step by step, so
load from other processes hits both alike; the report is the median over the timed steps. On a shared machine the
full-step difference is noisy; the last line times head + loss alone on fixed embeddings, which is what the loss adds.

    python benchmarks/loss_overhead.py [--steps 30] [--warmup 5] [--batch-size 64]
"""

import argparse
import copy
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere without installing fer

from fer.losses import CosineClassifier, CosineDistanceLoss  # noqa: E402

NUM_CLASSES, EMBEDDING_DIM, IMAGE_SIZE = 7, 128, 48


class LocalConvNet(nn.Module):
    """Fallback backbone when fer.models is not importable: 4 conv stages to a 128-d global average pool."""

    def __init__(self):
        super().__init__()
        layers, in_channels = [], 1
        for out_channels in (16, 32, 64, EMBEDDING_DIM):
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # (B, 128)


def make_backbone() -> tuple[nn.Module, str]:
    try:
        from fer.models import create_model
    except ImportError as error:
        return LocalConvNet(), f"local 4-stage conv net (fer.models not importable: {error})"
    return create_model("mini_xception", num_classes=NUM_CLASSES), "fer.models.create_model('mini_xception')"


class Setup:
    """Backbone + head + loss + Adam; step() runs one timed training step."""

    def __init__(self, backbone: nn.Module, cosine: bool):
        self.backbone = backbone.to(memory_format=torch.channels_last).train()
        if cosine:
            self.head = CosineClassifier(EMBEDDING_DIM, NUM_CLASSES)
            self.criterion = CosineDistanceLoss(NUM_CLASSES, EMBEDDING_DIM)  # delta-rule centers, no optimizer
        else:
            self.head = nn.Linear(EMBEDDING_DIM, NUM_CLASSES)
            self.criterion = None
        self.optimizer = torch.optim.Adam([*self.backbone.parameters(), *self.head.parameters()], lr=1e-3)

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        start = time.perf_counter()
        embeddings = self.backbone.forward_features(x)  # (B, 128)
        outputs = self.head(embeddings)  # (B, K): logits or cosines
        if self.criterion is None:
            loss = F.cross_entropy(outputs, labels)
        else:
            loss = self.criterion(embeddings, outputs, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def head_and_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
        """Forward + backward of head and loss alone on fixed embeddings: the cost the loss really adds."""
        start = time.perf_counter()
        outputs = self.head(embeddings)
        if self.criterion is None:
            loss = F.cross_entropy(outputs, labels)
        else:
            loss = self.criterion(embeddings, outputs, labels)
        loss.backward()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(0)
    backbone, description = make_backbone()
    print(f"model: {description}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}")
    setups = {"softmax CE": Setup(copy.deepcopy(backbone), cosine=False),
              "CosineDistanceLoss": Setup(copy.deepcopy(backbone), cosine=True)}
    x = torch.randn(args.batch_size, 1, IMAGE_SIZE, IMAGE_SIZE).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,))

    times = {name: [] for name in setups}
    for step in range(args.warmup + args.steps):
        order = list(setups.items())
        for name, setup in order if step % 2 else order[::-1]:  # alternate (and swap who goes first): load hits both
            elapsed = setup.step(x, labels)
            if step >= args.warmup:
                times[name].append(elapsed)

    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, median in medians.items():
        spread = statistics.quantiles(times[name], n=4)
        print(f"{name:>20}: {median:7.2f} ms/step (median of {args.steps}; "
              f"quartiles {spread[0] * 1000:.2f}-{spread[2] * 1000:.2f})")
    base, ours = medians["softmax CE"], medians["CosineDistanceLoss"]
    print(f"{'overhead':>20}: {ours - base:+7.2f} ms/step ({(ours / base - 1) * 100:+.1f} %) from the medians")
    # adjacent steps see similar background load, so their difference is the steadier estimate on a shared machine
    paired = statistics.median(b - a for a, b in zip(times["softmax CE"], times["CosineDistanceLoss"])) * 1000
    print(f"{'paired overhead':>20}: {paired:+7.2f} ms/step ({paired / base * 100:+.1f} %), "
          "median of step-by-step differences")

    embeddings = torch.randn(args.batch_size, EMBEDDING_DIM, requires_grad=True)
    alone = {name: [] for name in setups}
    for _ in range(20 * (args.warmup + args.steps)):  # cheap: sub-millisecond calls
        for name, setup in setups.items():
            alone[name].append(setup.head_and_loss(embeddings, labels))
    alone = {name: statistics.median(values) * 1000 for name, values in alone.items()}
    extra = alone["CosineDistanceLoss"] - alone["softmax CE"]
    print(f"{'head + loss alone':>20}: softmax CE {alone['softmax CE']:.3f} ms, CosineDistanceLoss "
          f"{alone['CosineDistanceLoss']:.3f} ms: {extra:+.3f} ms/step ({extra / base * 100:+.2f} % of a softmax step)")


if __name__ == "__main__":
    main()
