"""Data-parallel training started by torchrun: process group, rank-0 helpers, sharding, cross-rank sums.

Shape modelled on pytorch/vision references/classification/utils.py (init_distributed_mode, is_main_process,
reduce_across_processes). A plain `python run.py train` (no WORLD_SIZE, or WORLD_SIZE=1) never calls torch.distributed:
every helper below is then the identity or a no-op.

What is synchronised (docs/distributed.md):
- train.batch_size is the global batch: rank r takes slice r of every batch of the one-process order (TrainBatches).
- model gradients: DistributedDataParallel (average over ranks); BatchNorm buffers: DDP broadcasts rank 0's at each
  forward, and broadcast_buffers() before validation; batch statistics per rank unless train.sync_batchnorm.
- centers, delta rule: the per-class sums and counts are summed over ranks before the update (fer/losses.py);
  autograd centers: their gradients are averaged like DDP averages the model's.
- validation: each rank a contiguous shard, per-class counts summed: every image exactly once.
"""

import datetime
import gc
import logging
import os

import torch
import torch.distributed as dist
from torch import nn

from fer.config import ConfigError
from fer.device import resolve_device

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 600  # env FER_DIST_TIMEOUT: a rank waiting longer in a collective raises instead of hanging


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or a plain process): the one that writes files, logs progress and evaluates."""
    return rank() == 0


def init(device_name: str = "auto", key: str = "train.device") -> torch.device:
    """The device of this process; under torchrun (WORLD_SIZE > 1) also joins the process group from its environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on CUDA, gloo on the CPU."""
    if env_world_size() <= 1:
        return resolve_device(device_name, key)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, key, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()):
        raise ConfigError(f"'{key}': {device_name!r} under torchrun needs the {backend} backend of torch.distributed, "
                          f"which this torch build ({torch.__version__}) lacks")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = os.environ.get("FER_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    if not timeout.replace(".", "", 1).isdigit() or float(timeout) <= 0:
        raise ConfigError(f"FER_DIST_TIMEOUT: expected seconds > 0, got {timeout!r}")
    if not is_distributed():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)))
    log.info("rank %d of %d (local rank %d) on %s, backend %s", dist.get_rank(), dist.get_world_size(), local_rank,
             device, backend)
    return device


def teardown() -> None:
    if is_distributed():
        # The DDP wrapper sits in reference cycles that hold the group; freed only at interpreter exit, gloo's threads
        # die with it and abort the process ("terminate called without an active exception"). Free them now.
        gc.collect()
        dist.destroy_process_group()


def check_world_size(batch_size: int, train_size: int) -> None:
    """The global batch must split into equal, non-empty per-rank slices; every rank needs training images."""
    world = world_size()
    if batch_size < world:
        raise ConfigError(f"'train.batch_size': {batch_size} is the global batch; split over WORLD_SIZE={world} ranks "
                          f"it gives a per-rank batch of 0 images")
    if batch_size % world:
        raise ConfigError(f"'train.batch_size': {batch_size} (the global batch) is not divisible by WORLD_SIZE={world}")
    if world > train_size:
        raise ConfigError(f"WORLD_SIZE={world} exceeds the {train_size} training images")


def shard_range(n: int) -> tuple[int, int]:
    """This rank's contiguous [start, stop) of n items; the shards cover 0..n-1 exactly once (no padding)."""
    return n * rank() // world_size(), n * (rank() + 1) // world_size()


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False):
    """The training forward (x -> (embeddings, outputs)): model.forward_both, or its DistributedDataParallel wrapper."""
    if not is_distributed():
        return model.forward_both
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("'train.sync_batchnorm': true needs CUDA (SyncBatchNorm has no CPU kernel); on the CPU "
                              "each rank normalises over its own batch_size / WORLD_SIZE images")
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers in place, same parameters
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_ForwardBoth(model), device_ids=device_ids)


class _ForwardBoth(nn.Module):
    """DDP hooks into forward(); the trainer needs forward_both."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_both(x)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (returns the tensor); the identity for one process."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def sum_over_ranks(*numbers):
    """Python numbers summed over ranks (types kept); unchanged for one process."""
    if not is_distributed():
        return numbers
    reduced = all_reduce_sum(torch.tensor(numbers, dtype=torch.float64)).tolist()
    return tuple(type(n)(r) for n, r in zip(numbers, reduced))


def average_gradients(parameters) -> None:
    """Average .grad over ranks, as DDP does for the model (used for the autograd centers, which live outside DDP)."""
    if not is_distributed():
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def broadcast_buffers(*modules: nn.Module) -> None:
    """Rank 0's buffers everywhere (BN running statistics drift per rank after the last DDP forward)."""
    if not is_distributed():
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_parameters(*modules: nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (the centers, which DDP does not see)."""
    if not is_distributed():
        return
    broadcast_buffers(*modules)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                dist.broadcast(p, src=0)


def check_in_sync(**modules: nn.Module) -> None:
    """Raise on every rank if any parameter or buffer of any rank differs bit for bit from rank 0's (one broadcast per
    tensor: a cheap guard, run once per epoch)."""
    if not is_distributed():
        return
    differing = []
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            reference = tensor.clone()
            dist.broadcast(reference, src=0)
            if not torch.equal(reference, tensor):
                differing.append(f"{name} '{key}'")
    ranks_differing = all_reduce_sum(torch.tensor([len(differing) > 0], dtype=torch.int64)).item()
    if ranks_differing:
        raise RuntimeError(f"{ranks_differing} rank(s) diverged from rank 0; rank {rank()} differs in "
                           f"{', '.join(differing[:5]) or 'nothing'}")
