"""train(cfg): the one place optimisers and schedulers live.

run_training reads top to bottom: build_run (data -> model -> loss -> optimiser/schedule), then per epoch
train_one_epoch (progress bar, optimiser steps) and end_of_epoch (validation, metrics.csv, curves.png, best.pt by
validation accuracy, early stopping). last.pt is written atomically every `train.checkpoint_every` steps and at
each epoch end; resume=True continues from it and ends where a straight run with the same seed ends. What last.pt
carries is one table in fer/run_state.py, saved and restored the same way.
Recipe options (EMA, mixup/cutmix, distillation: fer/recipe.py; margins and re-weighting: fer/losses.py) are off by default.
Device, precision and data-parallel training (torchrun) are a few calls into fer/device.py and fer/distributed.py.
"""

import csv
import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from fer import distributed, losses, recipe
from fer.checkpoint import atomic_save, build_model, model_spec
from fer.config import Config, ConfigError, config_to_dict, model_input, save_config
from fer.data.loader import TrainBatches, class_balanced_weights, eval_batches
from fer.data.readers import FaceSet
from fer.data.splits import load_train_val, write_data_manifest
from fer.data.transforms import build_augmentation
from fer.data.view import model_view
from fer.device import autocast, cpu_state, grad_scaler, resolve_precision, to_device
from fer.objective import Objective
from fer.run_state import RunState, read_last
from fer.warmstart import check_sources, warm_start

log = logging.getLogger(__name__)


def check_compatible(cfg: Config) -> None:
    """Combinations the per-field checks cannot see."""
    if cfg.loss.name == "cosine_distance" and cfg.model.head != "cosine":
        raise ConfigError(f"'model.head' must be 'cosine' for loss 'cosine_distance', got {cfg.model.head!r}")
    if cfg.loss.name != "cosine_distance" and cfg.model.head == "cosine":
        raise ConfigError(f"'model.head' 'cosine' needs loss 'cosine_distance'; loss {cfg.loss.name!r} wants 'keras' or 'linear'")
    if cfg.loss.class_margins != "none" and cfg.loss.name != "cosine_distance":
        raise ConfigError(f"'loss.class_margins' needs loss 'cosine_distance', got {cfg.loss.name!r}")
    if cfg.train.defer_rebalance_epoch and (cfg.loss.class_weighting != "none" or cfg.train.balanced_sampling):
        raise ConfigError("'train.defer_rebalance_epoch' re-weights the late epochs itself; "
                          "drop 'loss.class_weighting' and 'train.balanced_sampling'")
    if cfg.train.defer_rebalance_epoch >= cfg.train.epochs:
        raise ConfigError(f"'train.defer_rebalance_epoch' {cfg.train.defer_rebalance_epoch} must be < 'train.epochs' "
                          f"{cfg.train.epochs}")
    if cfg.train.warmup_epochs and cfg.train.schedule == "plateau":
        raise ConfigError("'train.warmup_epochs' works with schedules onecycle, cosine and none, not 'plateau'")
    if cfg.train.warmup_epochs >= cfg.train.epochs:
        raise ConfigError(f"'train.warmup_epochs' {cfg.train.warmup_epochs} must be < 'train.epochs' {cfg.train.epochs}")
    if cfg.model.name == "mini_xception" and cfg.model.width != 1:
        raise ConfigError(f"'model.width': mini_xception has a fixed width, got {cfg.model.width}")


def warmup_factor(step: int, warmup_steps: int, total_steps: int, decay: bool) -> float:
    """lr factor: linear warm-up over warmup_steps (1/W .. 1), then cosine decay to 0 (decay) or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1)
    return 0.5 * (1 + math.cos(math.pi * progress)) if decay else 1.0


def make_schedule(cfg, optimizer, total_steps: int):
    t = cfg.train
    warmup_steps = round(t.warmup_epochs * total_steps / t.epochs)
    if t.schedule == "onecycle":  # its rising phase is the warm-up
        pct_start = warmup_steps / total_steps if warmup_steps else 0.15
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=total_steps, pct_start=pct_start)
    if warmup_steps:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_factor(step, warmup_steps, total_steps, decay=t.schedule == "cosine"))
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1))))
    if t.schedule == "plateau":  # the mini-Xception reference: ReduceLROnPlateau(0.1, patience 12)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=12)
    return None


def make_optimizer(cfg, model):
    t = cfg.train
    params = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": t.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]  # no decay on BN / biases
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=True)
    return (torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam)(params, lr=t.lr)


@torch.inference_mode()
def validation_counts(model, faces, batch_size: int, channels_last: bool, device=torch.device("cpu"), view=None):
    """(correct per class, images per class) over the whole split, int64 (K,): each rank predicts its contiguous shard
    and the counts are summed over ranks, so every image counts exactly once. view: the model's view of a batch
    (fer.data.view), None when the model takes the data as it is."""
    model.eval()
    num_classes = len(faces.class_names)
    correct, seen = torch.zeros(num_classes, dtype=torch.int64), torch.zeros(num_classes, dtype=torch.int64)
    for x, labels in eval_batches(faces, batch_size, *distributed.shard_range(len(faces))):
        x = to_device(x, device)
        if view is not None:
            x = view(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        predicted = model(x).argmax(1).cpu()
        correct += torch.bincount(labels[predicted == labels], minlength=num_classes)
        seen += torch.bincount(labels, minlength=num_classes)
    correct, seen = distributed.all_reduce_sum(correct).numpy(), distributed.all_reduce_sum(seen).numpy()
    if seen.sum() != len(faces):
        raise RuntimeError(f"validation saw {seen.sum()} of {len(faces)} images")
    return correct, seen


def validate(model, faces, batch_size: int, channels_last: bool, device=torch.device("cpu"), view=None) -> dict:
    correct, seen = validation_counts(model, faces, batch_size, channels_last, device, view)
    recalls = [correct[k] / seen[k] for k in range(len(seen)) if seen[k]]
    return {"val_acc": int(correct.sum()) / max(len(faces), 1), "val_balanced_acc": float(np.mean(recalls))}


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    ax_loss.set_xlabel("epoch"), ax_loss.legend()
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], label="train acc (augmented)")
    ax_acc.plot(epochs, [r["val_acc"] for r in rows], label="validation acc")
    ax_acc.set_xlabel("epoch"), ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: Config, data_root=None, resume: bool = False, progress: bool = True) -> dict:
    """Train under cfg; returns {'best': path, 'last': path, 'best_val_acc': float, 'epochs': int, 'seconds': float,
    'model': the trained nn.Module, 'objective': its Objective}. Under torchrun every rank calls this; rank 0 writes."""
    check_compatible(cfg)
    device = distributed.init(cfg.train.device)  # joins the process group under torchrun only
    try:
        return run_training(cfg, device, data_root, resume, progress)
    finally:
        distributed.teardown()


def run_training(cfg: Config, device: torch.device, data_root, resume: bool, progress: bool) -> dict:
    t = cfg.train
    last_path = Path(t.out_dir) / "last.pt"
    saved = read_last(last_path) if resume else None  # a missing or damaged last.pt fails before any data is read
    loaded = check_sources(t.init, t.teacher)  # so do bad train.init and train.teacher files
    run = build_run(cfg, device, data_root, loaded)
    if resume:
        run.state.resume(last_path, saved)
    state = run.state.progress
    stop = bool((t.max_steps and state["step"] >= t.max_steps)
                or (t.early_stop_patience and state["bad_epochs"] >= t.early_stop_patience))
    while run.state.progress["epoch"] < t.epochs and not stop:
        stop = train_one_epoch(run, progress)
        if stop and run.state.progress["batch"] < len(run.batches):  # train.max_steps reached mid-epoch
            if run.ema is not None:
                recipe.recalibrate_bn(run.ema.module, run.train_faces, t.eval_batch_size, device)
            write_checkpoint(run, run.last_path)
            break
        stop = end_of_epoch(run) or stop

    distributed.broadcast_buffers(run.model)  # a run stopped mid-epoch: every rank returns rank 0's BN statistics
    state = run.state.progress
    return {"best": str(run.best_path), "last": str(run.last_path), "best_val_acc": state["best_val_acc"],
            "epochs": state["epoch"], "steps": state["step"], "seconds": state["seconds"], "model": run.model,
            "objective": run.objective}


@dataclass
class Run:
    """The objects of one training run; `state` is what last.pt saves and --resume restores."""
    cfg: Config
    device: torch.device
    precision: str
    out: Path
    train_faces: FaceSet
    val_faces: FaceSet
    batches: TrainBatches
    spec: dict
    model: torch.nn.Module
    forward_both: Callable  # (x) -> (embeddings, outputs); DDP-wrapped under torchrun
    objective: Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: RunState
    class_counts: np.ndarray
    ema: torch.nn.Module | None = None  # validation, best.pt and export use the EMA copy when on
    teacher: recipe.Teacher | None = None
    center_optimizer: torch.optim.Optimizer | None = None
    schedule: object | None = None
    warm: dict | None = None  # where the weights started (train.init): the run's provenance
    view: Callable | None = None  # the model's view of a batch when it takes smaller or gray input (fer.data.view)

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def shipped(self) -> torch.nn.Module:
        """The weights evaluate and export use: the EMA copy when on."""
        return self.model if self.ema is None else self.ema.module


def build_run(cfg: Config, device: torch.device, data_root, loaded: dict | None = None) -> Run:
    """Data, model, loss, optimisers and schedule of cfg, in the order that makes a seed reproduce a run. loaded: the
    train.init / train.teacher checkpoints already read, by source (fer.warmstart.check_sources)."""
    loaded = loaded or {}
    t = cfg.train
    precision = resolve_precision(t.precision, device)  # 'auto' -> bf16 where the hardware has it, else fp32
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    main = distributed.is_main_process()
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        save_config(cfg, out / "config.yaml")

    train_faces, val_faces = load_train_val(cfg.data, seed=t.seed, root=data_root)
    num_classes = len(train_faces.class_names)
    log.info("train %d images %s, validation %d images", len(train_faces), train_faces.class_counts(), len(val_faces))
    if main:  # what was trained and selected on, with everything left out or re-aligned, counted
        write_data_manifest(out / "data.json", {"train": train_faces, "val": val_faces})
    distributed.check_world_size(t.batch_size, len(train_faces))
    batches = TrainBatches(train_faces, t.batch_size, build_augmentation(cfg.augment, cfg.data.image_size), t.seed,
                           t.balanced_sampling, distributed.rank(), distributed.world_size())
    if len(batches) == 0:
        raise ValueError(f"train set has {len(train_faces)} images, fewer than one batch of {t.batch_size}")

    input_size, input_channels = model_input(cfg)
    spec = model_spec(cfg.model.name, num_classes, cfg.model.head, cfg.model.width, input_size,
                      cfg.loss.scale if cfg.model.head == "cosine" else 1.0, input_channels)
    view = None
    if (input_size, input_channels) != (cfg.data.image_size, cfg.data.channels):
        view = functools.partial(model_view, size=input_size, channels=input_channels)
    model = build_model(spec)
    warm = warm_start(model, spec, list(train_faces.class_names), t.init, faces=train_faces,
                      checkpoint=loaded.get(t.init)) if t.init else None
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    class_weights = None
    if cfg.loss.class_weighting == "balanced":
        class_weights = torch.tensor(class_balanced_weights(train_faces.labels, num_classes), dtype=torch.float32)
    class_counts = np.bincount(train_faces.labels, minlength=num_classes)
    objective = Objective(cfg, num_classes, model.embedding_dim, class_weights, class_counts).to(device)
    forward_both = distributed.wrap_model(model, device, t.sync_batchnorm)  # DDP under torchrun
    if distributed.is_distributed():
        distributed.broadcast_parameters(objective)  # the centers start equal; DDP does the same for the model
        if cfg.loss.name != "softmax":
            objective.centers.reduce_center_stats = distributed.all_reduce_sum  # delta rule on the global batch
    ema = recipe.make_ema(model, t.ema_decay)
    teacher = (recipe.Teacher(t.teacher, train_faces.class_names, cfg.data.image_size, cfg.data.channels, loaded)
               if t.teacher else None)
    optimizer = make_optimizer(cfg, model)
    scaler = grad_scaler(device, precision)  # fp16 only; otherwise a pass-through
    center_optimizer = None
    if cfg.loss.name != "softmax" and cfg.loss.center_update == "autograd":
        weight = None if cfg.loss.name == "cosine_distance" else cfg.loss.lambda_island  # cosine_distance weighs itself
        center_optimizer = losses.center_optimizer(objective.centers, cfg.loss.alpha, loss_weight=weight)
    schedule = make_schedule(cfg, optimizer, t.epochs * len(batches))
    state = RunState(model, objective, optimizer, device, ema=ema, center_optimizer=center_optimizer, schedule=schedule,
                     scaler=scaler)
    return Run(cfg, device, precision, out, train_faces, val_faces, batches, spec, model, forward_both, objective,
               optimizer, scaler, state, class_counts, ema, teacher, center_optimizer, schedule, warm, view)


def train_one_epoch(run: Run, progress: bool = True) -> bool:
    """The batches of the current epoch from where run.state.progress stands (mid-epoch after a resume); last.pt every
    train.checkpoint_every steps. Returns True when train.max_steps is reached."""
    cfg, t, device, state = run.cfg, run.cfg.train, run.device, run.state.progress
    epoch, started = state["epoch"], time.perf_counter()
    run.model.train()
    run.objective.train()
    totals = state.setdefault("epoch_totals", {"loss": 0.0, "correct": 0, "seen": 0})
    if t.defer_rebalance_epoch:
        run.objective.rebalance(losses.deferred_class_weights(run.class_counts, epoch, t.defer_rebalance_epoch))
    first_batch, epoch_started = state["batch"], time.perf_counter()
    main = distributed.is_main_process()
    bar = tqdm(run.batches.epoch(epoch, state["batch"]), total=len(run.batches), initial=state["batch"],
               desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (progress and main), leave=False)
    stop = False
    for x, labels in bar:
        x, labels = to_device(x, device), to_device(labels, device)
        x, labels_b, lam = recipe.mix_batch(x, labels, cfg.augment, t.seed, epoch, state["batch"])
        x_model = x if run.view is None else run.view(x)  # the teacher sees x, the model its view of x
        if t.channels_last:
            x_model = x_model.contiguous(memory_format=torch.channels_last)
        with autocast(device, run.precision):
            embeddings, outputs = run.forward_both(x_model)
        loss = run.objective(embeddings, outputs, labels, labels_b, lam)  # float32 (the losses switch autocast off)
        if run.teacher is not None:  # student logits as the teacher's: prob_scale * outputs (s * cos, no margin)
            student_logits = outputs * run.spec["prob_scale"]
            loss = loss + t.distill_weight * recipe.distillation_loss(
                student_logits, run.teacher.probs(x, t.distill_temperature), t.distill_temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {state['step']}; lower train.lr")
        optimizer_step(run, loss)
        state["step"] += 1
        state["batch"] += 1
        loss_sum, correct, seen = distributed.sum_over_ranks(loss.item() * len(labels),
                                                             (outputs.argmax(1) == labels).sum().item(), len(labels))
        totals["loss"] += loss_sum
        totals["correct"] += correct
        totals["seen"] += seen
        images_per_s = (state["batch"] - first_batch) * t.batch_size / max(time.perf_counter() - epoch_started, 1e-9)
        bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.3f}", acc=f"{totals['correct'] / totals['seen']:.3f}",
                        img_s=f"{images_per_s:.0f}")
        if t.max_steps and state["step"] >= t.max_steps:
            stop = True
            break
        if state["step"] % t.checkpoint_every == 0:
            state["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            write_checkpoint(run, run.last_path)
    bar.close()
    state["seconds"] += time.perf_counter() - started
    return stop


def optimizer_step(run: Run, loss: torch.Tensor) -> None:
    """Backward, the model's and the centers' optimiser steps (through the fp16 loss scaler), EMA, per-step schedule."""
    optimizer, center_optimizer, scaler = run.optimizer, run.center_optimizer, run.scaler
    optimizer.zero_grad(set_to_none=True)
    if center_optimizer is not None:
        center_optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    if center_optimizer is not None:
        distributed.average_gradients(run.objective.parameters())  # the centers live outside DDP
        scaler.step(center_optimizer)
    scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    if run.schedule is not None and run.cfg.train.schedule != "plateau":
        run.schedule.step()


def end_of_epoch(run: Run) -> bool:
    """Validation, the metrics row, best.pt on a better validation accuracy, last.pt, metrics.csv and curves.png.
    Returns True when early stopping ends the run."""
    t, state = run.cfg.train, run.state.progress
    epoch, totals = state["epoch"], state["epoch_totals"]
    distributed.broadcast_buffers(run.model)  # BN running statistics: rank 0's, as DDP's next forward would
    if run.ema is not None:  # BN statistics of the averaged weights themselves (recipe.recalibrate_bn says why)
        recipe.recalibrate_bn(run.ema.module, run.train_faces, t.eval_batch_size, run.device)
        distributed.broadcast_buffers(run.ema.module)  # bit-identical on every rank
    distributed.check_in_sync(model=run.model, objective=run.objective)
    metrics = validate(run.shipped, run.val_faces, t.eval_batch_size, t.channels_last, run.device, run.view)
    row = {"epoch": epoch + 1, "step": state["step"], "train_loss": totals["loss"] / max(totals["seen"], 1),
           "train_acc": totals["correct"] / max(totals["seen"], 1), **metrics,
           "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(state["seconds"], 1)}
    state["history"].append(row)
    log.info("epoch %d: train loss %.4f acc %.4f, val acc %.4f (balanced %.4f), %.0f s", row["epoch"], row["train_loss"],
             row["train_acc"], row["val_acc"], row["val_balanced_acc"], row["seconds"])
    if run.schedule is not None and t.schedule == "plateau":
        run.schedule.step(metrics["val_acc"])
    if metrics["val_acc"] > state["best_val_acc"]:
        state["best_val_acc"], state["bad_epochs"] = metrics["val_acc"], 0
        write_checkpoint(run, run.best_path, row, resumable=False)
    else:
        state["bad_epochs"] += 1
    state.update(epoch=epoch + 1, batch=0, epoch_totals={"loss": 0.0, "correct": 0, "seen": 0})
    stop = bool(t.early_stop_patience and state["bad_epochs"] >= t.early_stop_patience)
    if stop:
        log.info("early stop: no validation improvement for %d epochs", state["bad_epochs"])
    write_checkpoint(run, run.last_path)
    if distributed.is_main_process():
        write_history(state["history"], run.out)
    return stop


def write_checkpoint(run: Run, path: Path, metrics: dict | None = None, resumable: bool = True) -> None:
    """The shipped weights with what rebuilds and explains them; resumable adds the run state (fer/run_state.py).
    Rank 0 writes; the other ranks return."""
    if not distributed.is_main_process():
        return
    payload = {"state_dict": cpu_state(run.shipped.state_dict()), "model_spec": run.spec,
               "class_names": list(run.train_faces.class_names), "config": config_to_dict(run.cfg),
               "metrics": metrics or {}}
    if run.warm is not None:
        payload["warm_start"] = run.warm
    if run.teacher is not None:
        payload["teachers"] = run.teacher.provenance  # what the weights learned from besides the labels
    if resumable:
        payload.update(run.state.state_dict())
    atomic_save(payload, path)


def write_history(rows: list[dict], out: Path) -> None:
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, out / "curves.png")
