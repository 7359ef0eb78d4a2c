"""What the studies share: the run record, the resumable runner, and the cells and comparisons of their tables.

A study run trains one base config plus a few overrides (dataset, loss, head, scale, margin, model, sampling, seed,
recipe options), evaluates it on its dataset's report split and writes run.json last, so a run counts as finished
once run.json exists and an interrupted run resumes from its last.pt. The pages built from the records (docs/results.md,
docs/recipe.md) therefore hold no hand-typed numbers.

Protocol (fer.evaluate.REPORT_SPLITS): FER2013 trains on Training, keeps best.pt by PublicTest accuracy and reports
PrivateTest. RAF-DB carves a stratified 10 % validation part from train (seeded by the run's seed) and reports the
final-epoch weights (last.pt) on it, so nothing is selected on the reported split.
"""

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fer.config import Config, DataConfig, apply_overrides, config_from_dict
from fer.data import registry
from fer.evaluate import REPORT_SPLITS, evaluate
from fer.train import train

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Scripts that moved since the records were written: a page shows each recorded command as it runs today.
MOVED_SCRIPTS = {"benchmarks/ablate.py": "studies/ablation.py", "benchmarks/recipe.py": "studies/recipe.py"}

REFERENCE_SCALE, REFERENCE_MARGIN = 10.0, 0.35  # the paper's operating point (AM-Softmax m = 0.35, Wang et al. 2018)
DATASET_TITLES = {"rafdb": "RAF-DB", "fer2013": "FER2013"}
SPLIT_TITLES = {"rafdb": "validation part", "fer2013": "PrivateTest"}  # the split each dataset is reported on
REPORTED = {"rafdb": "last", "fer2013": "best"}  # checkpoint reported: see the module docstring


def _train_images(dataset: str) -> int:
    """Images per epoch, for time estimates: the official train split, less the validation carve where one is made."""
    record = registry.get(dataset)
    carved = record.selection_split == "val"
    return round(record.official_sizes[record.train_split] * (1 - DataConfig().val_fraction if carved else 1))


TRAIN_IMAGES = {dataset: _train_images(dataset) for dataset in REPORTED}
EVAL_OVERHEAD_S = 20.0  # reading the data, validation and the final report per run, roughly
DEFAULT_MODEL = "mini_xception"  # the paper's model: every table runs on it
COMPARED_METRICS = (("accuracy", "accuracy"), ("macro-F1", "macro_f1"))  # (name in the text, run.json key)
BALANCED_METRICS = COMPARED_METRICS + (("balanced accuracy", "balanced_accuracy"),)  # what balanced sampling targets
IMAGES_PER_S = {DEFAULT_MODEL: 1000.0}  # rough one-thread training speed for first-run estimates; others: 500


@dataclass(frozen=True)
class Run:
    dataset: str
    loss: str
    head: str
    seed: int
    scale: float = REFERENCE_SCALE
    margin: float = REFERENCE_MARGIN
    model: str = DEFAULT_MODEL
    sampling: str = "natural"  # natural: shuffled training set; balanced: classes drawn equally often
    recipe: str = ""  # a name for `options` (studies/recipe.py), appended to the variant
    options: tuple[str, ...] = ()  # extra `section.key=value` overrides, applied after the run's own fields

    @property
    def variant(self) -> str:
        if self.loss == "cosine_distance":
            variant = f"cosine_distance-s{self.scale:g}-m{self.margin:g}"
        else:
            variant = f"{self.loss}-{self.head}"
        variant = variant if self.sampling == "natural" else f"{variant}-{self.sampling}"
        return f"{variant}-{self.recipe}" if self.recipe else variant

    @property
    def name(self) -> str:
        model = "" if self.model == DEFAULT_MODEL else f"{self.model}/"
        return f"{self.dataset}/{model}{self.variant}/seed{self.seed}"


def settings(base: str, epochs: int, max_per_class: int | None) -> dict:
    """What must match for runs to be comparable (and for a finished run to be reused)."""
    return {"base": str(base), "epochs": epochs, "max_per_class": max_per_class}


def run_config(base_raw: dict, run: Run, epochs: int, out_dir: Path, max_per_class: int | None = None,
               threads: int = 0, source: str = "ablation") -> Config:
    overrides = [f"data.dataset={run.dataset}", "data.path=null", f"data.max_per_class={max_per_class or 'null'}",
                 f"model.name={run.model}", f"model.head={run.head}",
                 f"train.balanced_sampling={'true' if run.sampling == 'balanced' else 'false'}", f"loss.name={run.loss}",
                 f"loss.scale={run.scale}", f"loss.margin={run.margin}",
                 "loss.class_margins=none",  # the paper's uniform margin, whatever the base config says; options may change it
                 f"train.seed={run.seed}", f"train.epochs={epochs}", "train.early_stop_patience=0", "train.max_steps=null",
                 f"train.threads={threads}", "train.checkpoint_every=1000", *run.options]
    cfg = config_from_dict(apply_overrides(base_raw, overrides, source), source)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir)))


def run_one(run: Run, cfg: Config, run_settings: dict, data_root=None, command: str = "") -> dict:
    """Train (resuming if a last.pt exists), evaluate on the report split, write run.json last; returns its content."""
    out = Path(cfg.train.out_dir)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    info = {"name": run.name, "run": dataclasses.asdict(run), "settings": run_settings, "command": command,
            "threads": torch.get_num_threads() if not cfg.train.threads else cfg.train.threads}
    try:
        result = train(cfg, data_root=data_root, resume=(out / "last.pt").is_file(), progress=False)
    except FloatingPointError as error:  # a diverged run is a result too: record it instead of retrying forever
        info.update(failed=str(error), cpu_s=time.process_time() - cpu_started, wall_s=time.perf_counter() - wall_started)
        log.warning("%s diverged: %s", run.name, error)
    else:
        checkpoint = result[REPORTED[run.dataset]]
        report = evaluate(checkpoint, cfg.data, REPORT_SPLITS[run.dataset], out / "eval", data_root=data_root,
                          seed=cfg.train.seed)
        info.update(checkpoint=REPORTED[run.dataset], split=REPORT_SPLITS[run.dataset], epochs=result["epochs"],
                    steps=result["steps"], best_val_acc=result["best_val_acc"], train_seconds=result["seconds"],
                    accuracy=report["accuracy"], macro_f1=report["macro_f1"],
                    balanced_accuracy=report["balanced_accuracy"], n_samples=report["n_samples"],
                    cpu_s=time.process_time() - cpu_started, wall_s=time.perf_counter() - wall_started)
    (out / "run.json").write_text(json.dumps(info, indent=2))
    return info


def collect(root: str | Path) -> list[dict]:
    """run.json of every finished run under root, sorted by name, with the per-class recall of its eval/report.json."""
    rows = []
    for path in Path(root).rglob("run.json"):
        row = json.loads(path.read_text())
        report = path.parent / "eval" / "report.json"
        if report.is_file():
            per_class = json.loads(report.read_text())["per_class"]
            row["recall"] = {name: values["recall"] for name, values in per_class.items()}
        rows.append(row)
    return sorted(rows, key=lambda row: row["name"])


def copy_records(root: str | Path, dest: str | Path) -> int:
    """Copy each finished run's run.json and eval/report.json (a few kB, no weights) from root to dest, same layout.

    dest can be committed: results_markdown(collect(dest)) then rebuilds the results without the training runs.
    Returns the number of runs copied.
    """
    root, dest = Path(root), Path(dest)
    count = 0
    for path in sorted(root.rglob("run.json")):
        run_dir = path.parent.relative_to(root)
        for name in ("run.json", "eval/report.json"):
            source = root / run_dir / name
            if source.is_file():
                target = dest / run_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
        count += 1
    return count


def estimate_seconds(run: Run, finished: list[dict], epochs: int, max_per_class: int | None,
                     images_per_s: float | None = None) -> float:
    """Expected wall time of a run, from the finished runs of the same model where there are any.

    Same dataset: their mean. Other datasets only: their mean time per training image, times this run's images.
    Neither: images x epochs at images_per_s (default: a rough per-model speed) plus overhead.
    """
    def images(dataset):
        return TRAIN_IMAGES[dataset] if not max_per_class else min(TRAIN_IMAGES[dataset], 7 * max_per_class)

    model_rows = [row for row in finished if model_of(row) == run.model and "failed" not in row]
    same = [row["wall_s"] for row in model_rows if row["run"]["dataset"] == run.dataset]
    if same:
        return float(np.mean(same))
    if model_rows:
        return images(run.dataset) * float(np.mean([row["wall_s"] / images(row["run"]["dataset"]) for row in model_rows]))
    return images(run.dataset) * epochs / (images_per_s or IMAGES_PER_S.get(run.model, 500.0)) + EVAL_OVERHEAD_S


def model_of(row: dict) -> str:
    return row["run"].get("model", DEFAULT_MODEL)  # run.json files written before stronger models existed lack it


def resumed(row: dict) -> bool:
    """A resumed run's training clock (kept in its checkpoint) ran longer than the process that finished it."""
    return row.get("train_seconds", 0.0) > row["wall_s"]


def cpu_seconds(row: dict) -> float:
    """CPU seconds of the whole run: a resumed run's record holds the finishing process's only, so the training time
    before the resume is added: training clock minus that process's wall time, times its threads (short by that
    process's loading and evaluation, some seconds)."""
    before = (row["train_seconds"] - row["wall_s"]) * row.get("threads", 1) if resumed(row) else 0.0
    return row["cpu_s"] + before


def run_grid(runs: list[Run], base: str | Path, root: str | Path, epochs: int, max_per_class: int | None = None,
             data_root=None, budget_minutes: float | None = None, threads: int = 0, command: str = "",
             after_each: Callable[[], object] | None = None) -> list[dict]:
    """Run what is not finished yet, in order, until done or the wall-clock budget would be exceeded.

    after_each() runs after each finished run (a study rewrites its page there). Returns this call's run.json rows.
    """
    import yaml

    base, root = Path(base), Path(root)
    base_raw = yaml.safe_load(base.read_text()) or {}
    config_from_dict(base_raw, str(base))  # a bad base config fails here, not after hours
    wanted = settings(base, epochs, max_per_class)
    started, done = time.perf_counter(), []
    for number, run in enumerate(runs, start=1):
        out = root / run.name
        if (out / "run.json").is_file():
            previous = json.loads((out / "run.json").read_text())
            if previous["settings"] != wanted:
                raise ValueError(f"{out}/run.json was made with {previous['settings']}, this grid uses {wanted}; "
                                 f"use another --root for other settings")
            log.info("[%d/%d] %s: finished earlier, skipped", number, len(runs), run.name)
            continue
        finished = collect(root)
        estimate = estimate_seconds(run, finished, epochs, max_per_class)
        elapsed = time.perf_counter() - started
        if budget_minutes is not None and elapsed + estimate > budget_minutes * 60:
            log.info("budget: %.0f of %.0f min used, next run needs about %.0f min; stopping (rerun to continue)",
                     elapsed / 60, budget_minutes, estimate / 60)
            break
        log.info("[%d/%d] %s: starting (about %.0f min)", number, len(runs), run.name, estimate / 60)
        cfg = run_config(base_raw, run, epochs, out, max_per_class, threads, f"{base} for {run.name}")
        info = run_one(run, cfg, wanted, data_root, command)
        done.append(info)
        log.info("[%d/%d] %s: accuracy %s, %.0f CPU-s, %.0f wall-s", number, len(runs), run.name,
                 f"{info['accuracy']:.4f}" if "accuracy" in info else "n/a (diverged)", info["cpu_s"], info["wall_s"])
        if after_each is not None:
            after_each()
    return done


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def row_cells(rows: list[dict]) -> list[str]:
    ok = [row for row in rows if "failed" not in row]
    failed = len(rows) - len(ok)
    seeds = ", ".join(str(row["run"]["seed"]) for row in ok) + (f" (+{failed} diverged)" if failed else "")
    return [seeds or "–", cell([row["accuracy"] for row in ok]), cell([row["macro_f1"] for row in ok]),
            cell([row["balanced_accuracy"] for row in ok])]


def metric(rows: list[dict], key: str) -> list[float]:
    return [row[key] for row in rows if "failed" not in row]


def difference(reference: list[float], other: list[float]) -> str:
    """'+1.23 pp, <how that compares with the seed spread>' for mean(reference) - mean(other)."""
    ref_mean, ref_std = mean_std(reference)
    other_mean, other_std = mean_std(other)
    delta = 100 * (ref_mean - other_mean)
    spread = 100 * max(ref_std, other_std)
    if math.isnan(spread):
        verdict = "with a single seed on one side the seed spread is unknown, so this says nothing yet"
    elif abs(delta) > 2 * spread:
        verdict = f"more than twice the larger seed standard deviation ({spread:.2f} pp)"
    elif abs(delta) > spread:
        verdict = f"larger than the seed standard deviation ({spread:.2f} pp) but less than twice it"
    else:
        verdict = f"within the seed standard deviation ({spread:.2f} pp), i.e. no measurable effect"
    return f"{delta:+.2f} pp, {verdict}"


def against(rows: list[dict], reference: list[dict], metrics) -> str:
    """'accuracy 70.00 ± 1.00 % against 68.00 ± 0.50 %: +2.00 pp, <verdict>; macro-F1 ...' for each (name, key)."""
    return "; ".join(f"{name} {cell(metric(rows, key))} % against {cell(metric(reference, key))} %: "
                     f"{difference(metric(rows, key), metric(reference, key))}" for name, key in metrics)



def shown_command(command: str) -> str:
    """A recorded command as it runs today: a moved script under its current path."""
    for old, new in MOVED_SCRIPTS.items():
        command = command.replace(old, new)
    return command


def shown_path(path: str | Path) -> str:
    """A path as the repository names it (relative to its root) wherever the page is built, else as given."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else str(path)


def numbers(kind):
    """argparse type for a comma-separated list: numbers(int)("0,1,2") -> (0, 1, 2)."""
    return lambda text: tuple(kind(part) for part in text.split(",") if part.strip())
