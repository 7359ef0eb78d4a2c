"""Training images/s per model on this CPU, and what memory format, threads and batch size do to it.

    python benchmarks/train_throughput.py [--steps 10] [--models mini_xception resnet_small resnet_medium]

Each line: one full training step (forward, cosine-distance loss, backward, AdamW step) on 48x48 gray input, median
over --steps steps after warm-up. Run it on an otherwise idle machine; OMP_WAIT_POLICY is printed because it matters
when other processes share the cores (run.py sets PASSIVE).
"""

import argparse
import os
import statistics
import time

import torch

from fer.losses import CosineDistanceLoss
from fer.models import create_model


def images_per_second(name: str, batch_size: int, channels_last: bool, threads: int, steps: int, compile_: bool = False):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model.forward_both) if compile_ else model.forward_both
    loss_fn = CosineDistanceLoss(7, model.embedding_dim)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch_size, 1, 48, 48)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 7, (batch_size,))
    times = []
    for step in range(steps + 3):
        started = time.perf_counter()
        embeddings, cosines = forward(x)
        loss = loss_fn(embeddings, cosines, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - started)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["mini_xception", "resnet_small", "resnet_medium"])
    parser.add_argument("--sweep", action="store_true", help="also sweep memory format, threads, batch size, compile")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print("model            batch  channels_last  threads  images/s")
    for name in args.models:
        print(f"{name:16} {64:5}  {'yes':13}  {cores:7}  {images_per_second(name, 64, True, cores, args.steps):8.0f}")
    if args.sweep:
        for name in args.models[:1]:
            for batch, channels_last, threads, compile_ in [(64, False, cores, False), (64, True, 1, False),
                                                            (32, True, cores, False), (128, True, cores, False),
                                                            (64, True, cores, True)]:
                rate = images_per_second(name, batch, channels_last, threads, args.steps, compile_)
                extra = " (torch.compile)" if compile_ else ""
                print(f"{name:16} {batch:5}  {'yes' if channels_last else 'no':13}  {threads:7}  {rate:8.0f}{extra}")


if __name__ == "__main__":
    main()
