"""The resumable state of a training run, saved into last.pt and restored from it through one table.

Every part a resumed run needs (weights, EMA copy, loss centers, optimisers, schedule, loss scaler, random generators,
progress counters) is one row of `RunState.parts`: its key in the file, whether this run has it, how to save it and how
to restore it. Saving and restoring walk the same rows, so a part added to one cannot be missing from the other.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from fer.checkpoint import read_checkpoint
from fer.device import cpu_state

log = logging.getLogger(__name__)

RESUME_ADVICE = "move it away to train from the start, or point train.out_dir at a run with a readable last.pt"


def fresh_progress() -> dict:
    """Where a run stands: epoch and batch within it, optimiser steps, best validation accuracy so far, epochs without
    improvement, one metrics row per finished epoch, seconds trained."""
    return {"epoch": 0, "batch": 0, "step": 0, "best_val_acc": -1.0, "bad_epochs": 0, "history": [], "seconds": 0.0}


@dataclass(frozen=True)
class Part:
    key: str  # its key in last.pt
    present: bool  # whether this run has the part (an EMA copy, a center optimiser, a loss scaler, a GPU generator)
    save: Callable[[], Any]
    restore: Callable[[Any], None]
    required: bool = True  # False: a last.pt written without it still resumes (a CPU run's file has no CUDA generator)


class RunState:
    """The parts of a run that last.pt carries, and `progress` (see fresh_progress), which training updates in place."""

    def __init__(self, model, objective, optimizer, device: torch.device, ema=None, center_optimizer=None, schedule=None,
                 scaler=None):
        self.model, self.objective, self.optimizer, self.device = model, objective, optimizer, device
        self.ema, self.center_optimizer, self.schedule, self.scaler = ema, center_optimizer, schedule, scaler
        self.progress = fresh_progress()

    def parts(self) -> list[Part]:
        ema, center_optimizer, schedule, scaler = self.ema, self.center_optimizer, self.schedule, self.scaler
        cuda = self.device.type == "cuda"
        return [
            # with EMA, "state_dict" holds the averaged (shipped) weights and the trained ones go beside them
            Part("train_state_dict" if ema is not None else "state_dict", True,
                 lambda: cpu_state(self.model.state_dict()), self.model.load_state_dict),
            Part("ema", ema is not None, lambda: cpu_state(ema.state_dict()), lambda s: ema.load_state_dict(s)),
            Part("objective", True, lambda: cpu_state(self.objective.state_dict()), self.objective.load_state_dict),
            Part("optimizer", True, lambda: cpu_state(self.optimizer.state_dict()), self.optimizer.load_state_dict),
            # written as {} when the run has none, so every last.pt carries the key
            Part("schedule", True, lambda: schedule.state_dict() if schedule is not None else {},
                 lambda s: schedule.load_state_dict(s) if schedule is not None else None),
            Part("center_optimizer", True, lambda: center_optimizer.state_dict() if center_optimizer is not None else {},
                 lambda s: center_optimizer.load_state_dict(s) if center_optimizer is not None else None),
            Part("scaler", scaler is not None and scaler.is_enabled(), lambda: scaler.state_dict(),
                 lambda s: scaler.load_state_dict(s)),
            Part("torch_rng", True, torch.get_rng_state, torch.set_rng_state),
            Part("cuda_rng", cuda, lambda: torch.cuda.get_rng_state(self.device),
                 lambda s: torch.cuda.set_rng_state(s, self.device), required=False),
            Part("train_state", True, lambda: self.progress, self._set_progress),
        ]

    def _set_progress(self, progress: dict) -> None:
        self.progress = progress

    def state_dict(self) -> dict:
        return {part.key: part.save() for part in self.parts() if part.present}

    def load_state_dict(self, saved: dict, path: Path | str = "last.pt") -> None:
        """Restore every part this run has from saved; a missing or ill-fitting part is a one-line ValueError naming
        path and the part."""
        for part in self.parts():
            if not part.present:
                continue
            if part.key not in saved:
                if part.required:
                    raise ValueError(f"--resume: {path}: has no '{part.key}', which this run's config needs; "
                                     f"{RESUME_ADVICE}")
                continue
            try:
                part.restore(saved[part.key])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ValueError(f"--resume: {path}: its '{part.key}' does not fit this run's config ({first}); "
                                 f"{RESUME_ADVICE}") from None

    def resume(self, path: Path, saved: dict) -> None:
        """Restore from saved, the content of last.pt at path as read_last returned it (read before the data)."""
        self.load_state_dict(saved, path)
        p = self.progress
        log.info("resumed from %s at epoch %d batch %d (step %d)", path, p["epoch"], p["batch"], p["step"])


def read_last(path: Path) -> dict:
    """The run state in last.pt, or one line saying which file cannot be resumed and what to do; the file stays as it was."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {path}")
    try:
        saved = read_checkpoint(path)
    except ValueError as error:
        raise ValueError(f"--resume: {error}; {RESUME_ADVICE}") from None
    if not isinstance(saved, dict) or "train_state" not in saved:
        raise ValueError(f"--resume: {path}: not a resumable last.pt (no train_state); {RESUME_ADVICE}")
    return saved
