"""Training throughput of several jobs sharing the cores: does bf16 (or a wait policy) survive oversubscription?

    python benchmarks/concurrent_training.py --jobs 2 --threads 2 --precision bf16   # 4 OpenMP threads on 2 cores
    python benchmarks/concurrent_training.py --jobs 2 --threads 1 --precision bf16   # threads add up to the cores

Starts --jobs real processes at once; each runs resnet_small training steps (forward, cosine-distance loss, backward,
AdamW) on a 48x48 gray batch of 64 with --threads torch threads and prints its median images/s. The environment is
passed on, so OMP_WAIT_POLICY / GOMP_SPINCOUNT can be compared (run.py sets GOMP_SPINCOUNT=10000).
"""

import argparse
import os
import subprocess
import sys
import time


def one_job(precision: str, threads: int, steps: int) -> float:
    import torch

    from fer import losses
    from fer.models import create_model

    torch.set_num_threads(threads)
    model = create_model("resnet_small", 7, head="cosine").to(memory_format=torch.channels_last)
    criterion = losses.CosineDistanceLoss(7, model.embedding_dim)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(64, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 7, (64,))
    seconds = []
    for _ in range(steps + 4):  # 4 warm-up steps
        started = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            embeddings, cosines = model.forward_both(x)
        loss = criterion(embeddings.float(), cosines.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    median = sorted(seconds[4:])[steps // 2]
    return 64 / median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)  # internal: run one job and print
    args = p.parse_args()
    if args.job:
        print(f"{one_job(args.precision, args.threads, args.steps):.0f}")
        return
    command = [sys.executable, __file__, "--job", "--threads", str(args.threads), "--precision", args.precision,
               "--steps", str(args.steps)]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.jobs)]
    rates = [job.communicate()[0].strip() for job in jobs]
    policy = {k: os.environ.get(k, "unset") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    print(f"{args.jobs} jobs x {args.threads} threads, {args.precision}, {os.cpu_count()} cores, {policy}: "
          f"images/s per job {', '.join(rates)}")


if __name__ == "__main__":
    main()
