"""Training images/s per model: memory format, threads, batch size, precision, device, and 1 vs N processes (DDP).

    python benchmarks/train_throughput.py [--steps 10] [--models mini_xception resnet_small resnet_medium]
    python benchmarks/train_throughput.py --device cuda --precisions fp32 bf16 --batch-sizes 64 256   # on a GPU
    python benchmarks/train_throughput.py --processes 1 2 --models mini_xception                      # DDP on the CPU

Each line: one full training step (forward, cosine-distance loss, backward, AdamW step) on 48x48 gray input, median
over --steps steps after warm-up. Run it on an otherwise idle machine; OMP_WAIT_POLICY and GOMP_SPINCOUNT are printed because
they matter when other processes share the cores (run.py sets GOMP_SPINCOUNT=10000). --processes N runs N real processes joined by gloo
(CPU) through fer/distributed.py, like torchrun: the global batch is split over them, the cores too, and images/s
counts the global batch over the slowest rank's median step.
"""

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.multiprocessing as mp

from fer import distributed
from fer.device import autocast, check_precision, grad_scaler, hardware_summary, resolve_device
from fer.losses import CosineDistanceLoss
from fer.models import create_model


def images_per_second(name: str, batch_size: int, channels_last: bool, threads: int, steps: int, compile_: bool = False,
                      device: torch.device = torch.device("cpu"), precision: str = "fp32"):
    """Global images/s of one process, or of this rank's slice of batch_size under a process group."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = distributed.wrap_model(model, device)
    forward = torch.compile(forward) if compile_ else forward
    loss_fn = CosineDistanceLoss(7, model.embedding_dim).to(device)
    loss_fn.reduce_center_stats = distributed.all_reduce_sum if distributed.is_distributed() else None
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = grad_scaler(device, precision)
    x = torch.randn(batch_size // distributed.world_size(), 1, 48, 48, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 7, (len(x),), device=device)
    times = []
    for step in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast(device, precision):
            embeddings, cosines = forward(x)
        loss = loss_fn(embeddings, cosines, labels)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - started)
    return batch_size / _slowest(statistics.median(times))


def _slowest(seconds: float) -> float:
    """The slowest rank's step time: a data-parallel step ends when the last rank's gradients arrive."""
    if not distributed.is_distributed():
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


def _rank_entry(rank, world, port, result_path, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init("cpu")
    rate = images_per_second(*args)
    if rank == 0:
        with open(result_path, "w") as f:
            f.write(str(rate))
    distributed.teardown()


def ddp_images_per_second(processes: int, name: str, batch_size: int, threads: int, steps: int) -> float:
    """Global images/s of `processes` CPU processes (gloo), each with `threads` threads and batch_size / processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rate")
        mp.spawn(_rank_entry, args=(processes, port, result, (name, batch_size, True, threads, steps)), nprocs=processes)
        return float(open(result).read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["mini_xception", "resnet_small", "resnet_medium"])
    parser.add_argument("--sweep", action="store_true", help="also sweep memory format, threads, batch size, compile")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--processes", nargs="+", type=int, default=[],
                        help="also compare these process counts on the CPU (gloo DDP), e.g. 1 2")
    args = parser.parse_args()
    cores = os.cpu_count()
    device = resolve_device(args.device, key="--device")
    for precision in args.precisions:
        check_precision(precision, device, key="--precisions")
    print(f"torch {torch.__version__}, {cores} cores, {hardware_summary(device)}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    print("model            batch  channels_last  threads  device  precision  images/s")
    for name in args.models:
        for batch in args.batch_sizes:
            for precision in args.precisions:
                rate = images_per_second(name, batch, True, cores, args.steps, device=device, precision=precision)
                print(f"{name:16} {batch:5}  {'yes':13}  {cores:7}  {device.type:6}  {precision:9}  {rate:8.0f}")
    if args.sweep:
        for name in args.models[:1]:
            for batch, channels_last, threads, compile_ in [(64, False, cores, False), (64, True, 1, False),
                                                            (32, True, cores, False), (128, True, cores, False),
                                                            (64, True, cores, True)]:
                rate = images_per_second(name, batch, channels_last, threads, args.steps, compile_)
                extra = " (torch.compile)" if compile_ else ""
                print(f"{name:16} {batch:5}  {'yes' if channels_last else 'no':13}  {threads:7}  {'cpu':6}  "
                      f"{'fp32':9}  {rate:8.0f}{extra}")
    if args.processes:
        print("\nCPU data parallel (gloo): the global batch split over the processes, the cores too")
        print("model            global batch  processes  threads/process  images/s")
        for name in args.models:
            for batch in args.batch_sizes:
                for processes in args.processes:
                    threads = max(cores // processes, 1)
                    if processes == 1:
                        rate = images_per_second(name, batch, True, threads, args.steps)
                    else:
                        rate = ddp_images_per_second(processes, name, batch, threads, args.steps)
                    print(f"{name:16} {batch:12}  {processes:9}  {threads:15}  {rate:8.0f}")


if __name__ == "__main__":
    main()
