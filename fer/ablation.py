"""The paper's loss ablation (Tables 1-3): a resumable grid of training runs and the markdown that summarises them.

Every run trains one base config (same data, augmentation, optimiser, schedule and epochs) and differs only in dataset,
loss (+ head), AM-Softmax scale s / margin m and seed. Each run lives in <root>/<dataset>/<variant>/seed<k>/ and counts as
finished once its run.json exists; an interrupted run resumes from its last.pt. So the runner can be killed and started
again (nohup) at any point, and results_markdown() always reflects exactly the finished runs, no hand-typed numbers.

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

import numpy as np
import torch

from fer.config import Config, apply_overrides, config_from_dict
from fer.data.paths import REPO_ROOT
from fer.evaluate import REPORT_SPLITS, evaluate
from fer.models import MODELS
from fer.train import train

log = logging.getLogger(__name__)

# Table 3: (loss, head). The Keras head is mini-Xception's original; the linear head is the fair softmax baseline for the
# cosine head (same 128-D embedding, then one layer). Center and Island losses act on that embedding.
TABLE3_VARIANTS = (("softmax", "keras"), ("softmax", "linear"), ("center", "linear"), ("island", "linear"),
                   ("cosine_distance", "cosine"))
REFERENCE_SCALE, REFERENCE_MARGIN = 10.0, 0.35  # the paper's operating point (AM-Softmax m = 0.35, Wang et al. 2018)
DEFAULT_MARGINS = (0.0, 0.1, 0.2, 0.35, 0.5)  # Table 1, at s = REFERENCE_SCALE
DEFAULT_SCALES = (5.0, 10.0, 20.0, 30.0)  # Table 2, at m = REFERENCE_MARGIN
DATASET_TITLES = {"rafdb": "RAF-DB", "fer2013": "FER2013"}
SPLIT_TITLES = {"rafdb": "validation part", "fer2013": "PrivateTest"}  # the split each dataset is reported on
REPORTED = {"rafdb": "last", "fer2013": "best"}  # checkpoint reported: see the module docstring
TRAIN_IMAGES = {"rafdb": 11044, "fer2013": 28709}  # images per epoch (RAF-DB: 90 % of 12,271), for time estimates
EVAL_OVERHEAD_S = 20.0  # reading the data, validation and the final report per run, roughly
DEFAULT_MODEL = "mini_xception"  # the paper's model: every table runs on it
# The stronger models only run Table 3's two endpoints, softmax (linear head) vs cosine-distance: the question is
# whether the loss still helps on a bigger network, not the whole grid again.
ENDPOINT_VARIANTS = (("softmax", "linear"), ("cosine_distance", "cosine"))
# Class-balanced sampling (train.balanced_sampling) runs the same two endpoints on mini-Xception: the margin costs the
# rare classes (see the recall tables), and the question is whether drawing classes equally gives that back.
SAMPLINGS = ("natural", "balanced")
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
    recipe: str = ""  # a name for `options` (benchmarks/recipe.py), appended to the variant
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


def grid(datasets=("rafdb", "fer2013"), seeds=(0, 1, 2), tables=(1, 2, 3), margins=DEFAULT_MARGINS, scales=DEFAULT_SCALES,
         softmax_heads=("keras", "linear"), stronger_models=(), balanced_sampling=False) -> list[Run]:
    """All runs, seed-major (every variant with seed 0 first), so a budget-limited grid still fills whole tables.

    stronger_models adds, with Table 3, its two endpoints (softmax vs cosine-distance) on each of those models.
    balanced_sampling adds, with Table 3, softmax (each of softmax_heads) and cosine-distance on mini-Xception trained
    with class-balanced sampling.
    """
    for dataset in datasets:
        if dataset not in REPORTED:
            raise ValueError(f"ablation dataset {dataset!r} not supported; expected one of {', '.join(REPORTED)}")
    for head in softmax_heads:
        if head not in ("keras", "linear"):
            raise ValueError(f"softmax head {head!r}: expected 'keras' or 'linear'")
    for model in stronger_models:
        if model not in MODELS or model == DEFAULT_MODEL:
            raise ValueError(f"stronger model {model!r}: expected one of "
                             f"{', '.join(m for m in MODELS if m != DEFAULT_MODEL)}")
    unknown = set(tables) - {1, 2, 3}
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; expected 1 (margin grid), 2 (scale grid), 3 (losses)")
    runs = []
    for seed in seeds:
        for dataset in datasets:
            if 3 in tables:
                runs += [Run(dataset, loss, head, seed) for loss, head in TABLE3_VARIANTS
                         if loss != "softmax" or head in softmax_heads]
                runs += [Run(dataset, loss, head, seed, model=model) for model in stronger_models
                         for loss, head in ENDPOINT_VARIANTS]
                if balanced_sampling:
                    runs += [Run(dataset, loss, head, seed, sampling="balanced") for loss, head in TABLE3_VARIANTS
                             if loss == "cosine_distance" or (loss == "softmax" and head in softmax_heads)]
            if 1 in tables:
                runs += [Run(dataset, "cosine_distance", "cosine", seed, REFERENCE_SCALE, float(m)) for m in margins]
            if 2 in tables:
                runs += [Run(dataset, "cosine_distance", "cosine", seed, float(s), REFERENCE_MARGIN) for s in scales]
    return list(dict.fromkeys(runs))  # the (s=10, m=0.35) run serves all three tables once


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


def _recall_table(dataset: str, groups: dict) -> list[str]:
    """Mean per-class recall over seeds for each Table 3 row: where a loss wins or loses, class by class."""
    return _recall_lines([(f"{_variant_label(loss, head).split(' [')[0]} | {head}",
                           groups.get((dataset, loss, head, REFERENCE_SCALE, REFERENCE_MARGIN), []))
                          for loss, head in TABLE3_VARIANTS], "loss | head")


def _recall_lines(labelled_rows: list[tuple[str, list[dict]]], header: str) -> list[str]:
    """Markdown table of the mean per-class recall of each (label cells, runs); groups without recall are left out."""
    found = [(label, [row["recall"] for row in rows if row.get("recall")]) for label, rows in labelled_rows]
    found = [(label, recalls) for label, recalls in found if recalls]
    if not found:
        return []
    classes = list(found[0][1][0])
    lines = ["Recall per class (mean over the seeds above, %):", "",
             f"| {header} | " + " | ".join(classes) + " |",
             "|" + " --- |" * (header.count("|") + 1) + " ---: |" * len(classes)]
    for label, recalls in found:
        means = [100 * float(np.mean([recall[name] for recall in recalls])) for name in classes]
        lines.append(f"| {label} | " + " | ".join(f"{value:.1f}" for value in means) + " |")
    return lines + [""]


def estimate_seconds(run: Run, finished: list[dict], epochs: int, max_per_class: int | None,
                     images_per_s: float | None = None) -> float:
    """Expected wall time of a run, from the finished runs of the same model where there are any.

    Same dataset: their mean. Other datasets only: their mean time per training image, times this run's images.
    Neither: images x epochs at images_per_s (default: a rough per-model speed) plus overhead.
    """
    def images(dataset):
        return TRAIN_IMAGES[dataset] if not max_per_class else min(TRAIN_IMAGES[dataset], 7 * max_per_class)

    model_rows = [row for row in finished if _model(row) == run.model and "failed" not in row]
    same = [row["wall_s"] for row in model_rows if row["run"]["dataset"] == run.dataset]
    if same:
        return float(np.mean(same))
    if model_rows:
        return images(run.dataset) * float(np.mean([row["wall_s"] / images(row["run"]["dataset"]) for row in model_rows]))
    return images(run.dataset) * epochs / (images_per_s or IMAGES_PER_S.get(run.model, 500.0)) + EVAL_OVERHEAD_S


def _model(row: dict) -> str:
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


def _sampling(row: dict) -> str:
    return row["run"].get("sampling", "natural")  # likewise before balanced sampling existed


def run_grid(runs: list[Run], base: str | Path, root: str | Path, epochs: int, max_per_class: int | None = None,
             data_root=None, budget_minutes: float | None = None, threads: int = 0, command: str = "",
             results_path: str | Path | None = None) -> list[dict]:
    """Run what is not finished yet, in order, until done or the wall-clock budget would be exceeded.

    After each run the results markdown is rewritten (if results_path). Returns the run.json rows of this call's runs.
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
        if results_path:
            write_results(root, results_path)
    return done


# ------------------------------------------------------------------------------------------------------------ markdown

def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = _mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def _groups(rows: list[dict]) -> dict:
    """(dataset, loss, head, scale, margin) -> finished rows (failed ones included, flagged)."""
    groups = {}
    for row in rows:
        r = row["run"]
        groups.setdefault((r["dataset"], r["loss"], r["head"], r["scale"], r["margin"]), []).append(row)
    return groups


def _row_cells(rows: list[dict]) -> list[str]:
    ok = [row for row in rows if "failed" not in row]
    failed = len(rows) - len(ok)
    seeds = ", ".join(str(row["run"]["seed"]) for row in ok) + (f" (+{failed} diverged)" if failed else "")
    return [seeds or "–", _cell([row["accuracy"] for row in ok]), _cell([row["macro_f1"] for row in ok]),
            _cell([row["balanced_accuracy"] for row in ok])]


def _variant_label(loss: str, head: str) -> str:
    return {"softmax": "softmax", "center": "softmax + center", "island": "softmax + island",
            "cosine_distance": "cosine-distance (AM-Softmax + island)"}[loss] + f" [{head} head]"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def _metric(rows: list[dict], key: str) -> list[float]:
    return [row[key] for row in rows if "failed" not in row]


def _reading(groups: dict, datasets: list[str]) -> list[str]:
    """Computed sentences per dataset: cosine-distance against the best other loss (accuracy and macro-F1, relative to
    the seed spread), and how both move across the margin grid."""
    sentences = []
    for dataset in datasets:
        reference = groups.get((dataset, "cosine_distance", "cosine", REFERENCE_SCALE, REFERENCE_MARGIN), [])
        others = {(loss, head): groups.get((dataset, loss, head, REFERENCE_SCALE, REFERENCE_MARGIN), [])
                  for loss, head in TABLE3_VARIANTS if loss != "cosine_distance"}
        others = {key: rows for key, rows in others.items() if _metric(rows, "accuracy")}
        title = DATASET_TITLES[dataset]
        if not _metric(reference, "accuracy") or not others:
            sentences.append(f"{title}: not enough finished runs to compare cosine-distance with the other losses yet.")
            continue
        (loss, head), best = max(others.items(), key=lambda item: np.mean(_metric(item[1], "accuracy")))
        acc, best_acc = _metric(reference, "accuracy"), _metric(best, "accuracy")
        f1, best_f1 = _metric(reference, "macro_f1"), _metric(best, "macro_f1")
        sentences.append(f"{title}: cosine-distance (s = {REFERENCE_SCALE:g}, m = {REFERENCE_MARGIN:g}) reaches "
                         f"{_cell(acc)} % accuracy ({_seeds(len(acc))}) against {_cell(best_acc)} % for the best "
                         f"other loss, {_variant_label(loss, head)} ({_seeds(len(best_acc))}): "
                         f"{_difference(acc, best_acc)}; macro-F1 {_cell(f1)} % against {_cell(best_f1)} %: "
                         f"{_difference(f1, best_f1)}.")
        margins = sorted(key for key in groups if key[:4] == (dataset, "cosine_distance", "cosine", REFERENCE_SCALE)
                         and _metric(groups[key], "accuracy"))
        if len(margins) > 1:
            low, high = groups[margins[0]], groups[margins[-1]]
            sentences.append(f"{title}, margin grid: from m = {margins[0][4]:g} to m = {margins[-1][4]:g} accuracy goes "
                             f"from {_cell(_metric(low, 'accuracy'))} to {_cell(_metric(high, 'accuracy'))} % and "
                             f"macro-F1 from {_cell(_metric(low, 'macro_f1'))} to {_cell(_metric(high, 'macro_f1'))} %.")
    return sentences


def _difference(reference: list[float], other: list[float]) -> str:
    """'+1.23 pp, <how that compares with the seed spread>' for mean(reference) - mean(other)."""
    ref_mean, ref_std = _mean_std(reference)
    other_mean, other_std = _mean_std(other)
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


def _against(rows: list[dict], reference: list[dict], metrics) -> str:
    """'accuracy 70.00 ± 1.00 % against 68.00 ± 0.50 %: +2.00 pp, <verdict>; macro-F1 ...' for each (name, key)."""
    return "; ".join(f"{name} {_cell(_metric(rows, key))} % against {_cell(_metric(reference, key))} %: "
                     f"{_difference(_metric(rows, key), _metric(reference, key))}" for name, key in metrics)


def _stronger_models(rows: list[dict]) -> list[str]:
    """Table and one sentence per (dataset, model) for the endpoint runs on models other than mini-Xception."""
    models = sorted({_model(row) for row in rows})
    if not models:
        return []
    lines = ["## Table 3 endpoints on stronger models", "",
             "Only softmax (linear head) and cosine-distance (s = 10, m = 0.35), same data, settings and seeds as above; "
             "only the network differs.", ""]
    sentences = []
    for dataset in REPORTED:
        for model in models:
            found = {(loss, head): [row for row in rows if _model(row) == model and row["run"]["dataset"] == dataset
                                    and (row["run"]["loss"], row["run"]["head"]) == (loss, head)]
                     for loss, head in ENDPOINT_VARIANTS}
            if not any(found.values()):
                continue
            lines += [f"### {DATASET_TITLES[dataset]} ({SPLIT_TITLES[dataset]}), {model}", "",
                      "| loss | head | seeds | accuracy | macro-F1 | balanced accuracy |",
                      "| --- | --- | --- | ---: | ---: | ---: |"]
            lines += [f"| {_variant_label(loss, head).split(' [')[0]} | {head} | " + " | ".join(_row_cells(r)) + " |"
                      for (loss, head), r in found.items() if r]
            lines.append("")
            cosine, softmax = found[ENDPOINT_VARIANTS[1]], found[ENDPOINT_VARIANTS[0]]
            if _metric(cosine, "accuracy") and _metric(softmax, "accuracy"):
                sentences.append(f"{DATASET_TITLES[dataset]}, {model}, cosine-distance against softmax: "
                                 + _against(cosine, softmax, COMPARED_METRICS) + ".")
    return lines + sentences + [""] if sentences else lines


def _balanced_sampling(natural: list[dict], balanced: list[dict]) -> list[str]:
    """Tables and sentences comparing mini-Xception runs with class-balanced sampling against the natural ones."""
    if not balanced:
        return []
    lines = ["## Class-balanced sampling (mini-Xception)", "",
             "The same losses trained with every class drawn equally often (`train.balanced_sampling: true`: as many "
             "images per epoch as the training set, drawn with replacement in inverse proportion to class frequency), "
             "next to their natural-frequency rows from Table 3; data, settings and seeds are otherwise the same.", ""]
    variants = list(dict.fromkeys((row["run"]["loss"], row["run"]["head"]) for row in
                                  sorted(balanced, key=lambda row: row["run"]["loss"] != "softmax")))
    groups = {"natural": _groups(natural), "balanced": _groups(balanced)}
    sentences = []
    for dataset in REPORTED:
        found = {(loss, head, sampling): groups[sampling].get((dataset, loss, head, REFERENCE_SCALE, REFERENCE_MARGIN),
                                                              [])
                 for loss, head in variants for sampling in SAMPLINGS}
        if not any(found[(loss, head, "balanced")] for loss, head in variants):
            continue
        lines += [f"### {DATASET_TITLES[dataset]} ({SPLIT_TITLES[dataset]})", "",
                  "| loss | head | sampling | seeds | accuracy | macro-F1 | balanced accuracy |",
                  "| --- | --- | --- | --- | ---: | ---: | ---: |"]
        labelled = [(f"{_variant_label(loss, head).split(' [')[0]} | {head} | {sampling}", rows)
                    for (loss, head, sampling), rows in found.items() if rows]
        lines += [f"| {label} | " + " | ".join(_row_cells(rows)) + " |" for label, rows in labelled]
        lines += [""] + _recall_lines(labelled, "loss | head | sampling")
        for loss, head in variants:
            before, after = found[(loss, head, "natural")], found[(loss, head, "balanced")]
            if _metric(before, "accuracy") and _metric(after, "accuracy"):
                sentences.append(f"{DATASET_TITLES[dataset]}, {_variant_label(loss, head)}, balanced against natural "
                                 "sampling: " + _against(after, before, BALANCED_METRICS) + ".")
        cosine = found.get(("cosine_distance", "cosine", "balanced"), [])
        softmax = next((found[(loss, head, "balanced")] for loss, head in variants if loss == "softmax"), [])
        if _metric(cosine, "accuracy") and _metric(softmax, "accuracy"):
            parts = [f"{name} {_difference(_metric(cosine, key), _metric(softmax, key))}"
                     for name, key in BALANCED_METRICS]
            sentences.append(f"{DATASET_TITLES[dataset]}, both balanced, cosine-distance against softmax: "
                             + "; ".join(parts) + ".")
    return lines + sentences + [""]


def results_markdown(rows: list[dict], root: str | Path = "runs/ablation", longer: list[str] = ()) -> str:
    """longer: the section on the loss at a longer schedule (fer.loss_question), in place of the pointer to it."""
    stronger = [row for row in rows if _model(row) != DEFAULT_MODEL]
    balanced = [row for row in rows if _model(row) == DEFAULT_MODEL and _sampling(row) == "balanced"]
    natural = [row for row in rows if _model(row) == DEFAULT_MODEL and _sampling(row) == "natural"]
    groups = _groups(natural)
    datasets = [d for d in REPORTED if any(key[0] == d for key in groups)]
    all_settings = {json.dumps(row["settings"], sort_keys=True) for row in rows}
    commands = sorted({row["command"] for row in rows if row.get("command")})
    cpu, wall = sum(cpu_seconds(row) for row in rows), sum(row["wall_s"] for row in rows)
    lines = ["# Results: loss ablation on mini-Xception (paper Tables 1-3)" + (", endpoints on stronger models"
                                                                              if stronger else ""), "",
             f"Generated by `fer.ablation.write_results` from {len(rows)} finished run(s) under `{root}`; do not edit by "
             "hand. Rerun the command(s) below (finished runs are skipped) or `python benchmarks/ablate.py --results-only`"
             + (" (with `--longer-root docs/runs/recipe/curve-45ep` for the last section)." if longer else "."), ""]
    if not rows:
        return "\n".join(lines + ["No finished runs yet.", ""])
    if len(commands) > 1:  # the grid was filled by several (partial, possibly parallel) invocations
        lines += ["Commands (each skips the runs already finished):", ""] + [f"- `{c}`" for c in commands] + [""]
    else:
        lines += ["Command: " + (f"`{commands[0]}`" if commands else "not recorded"), ""]
    for text in sorted(all_settings):
        s = json.loads(text)
        lines.append(f"Settings: base config `{s['base']}`, {s['epochs']} epoch(s) per run, training images per class "
                     f"{'capped at ' + str(s['max_per_class']) if s['max_per_class'] else 'not capped (full training sets)'}.")
    if len(all_settings) > 1:
        lines.append("**Warning: these runs mix settings; their numbers are not comparable.**")
    if any(json.loads(t)["max_per_class"] or json.loads(t)["epochs"] < 5 for t in all_settings):
        lines.append("**Smoke settings (capped training set or under 5 epochs): these numbers show that the pipeline "
                     "works, they say nothing about the losses.**")
    per_dataset = []
    for dataset in REPORTED:
        for model in sorted({_model(row) for row in rows}, key=lambda m: (m != DEFAULT_MODEL, m)):
            these = [row for row in rows if row["run"]["dataset"] == dataset and _model(row) == model]
            if these:
                per_dataset.append(f"{DATASET_TITLES[dataset]} {model} {np.mean([cpu_seconds(r) for r in these]):.0f} "
                                   f"CPU-s ({np.mean([r['wall_s'] for r in these]):.0f} wall-s)")
    threads = sorted({row.get("threads") for row in rows if row.get("threads")})
    lines += ["", f"CPU time: {cpu / 3600:.2f} CPU-hours ({wall / 3600:.2f} wall-hours) over {len(rows)} runs on "
              f"{', '.join(map(str, threads)) or '?'} torch thread(s); mean per run: {'; '.join(per_dataset)}. "
              "CPU time counts all threads of the process (a resumed run adds its training before the resume, from the "
              "checkpoint's training clock).",
              "", "Protocol: FER2013 trains on Training, keeps the epoch with the best PublicTest accuracy and reports "
              "PrivateTest (3,589 faces). RAF-DB reports the final-epoch weights on a stratified 10 % validation part "
              "carved from its train set with the run's seed (its official test images are held out), so no model is "
              "selected on the split it is reported on. Values are mean ± sample standard deviation over seeds, in %; "
              "macro-F1 averages the per-class F1 of the 7 classes.", ""]

    lines += ["## Table 3: loss functions", ""]
    for dataset in datasets:
        lines += [f"### {DATASET_TITLES[dataset]} ({SPLIT_TITLES[dataset]})", "",
                  "| loss | head | seeds | accuracy | macro-F1 | balanced accuracy |", "| --- | --- | --- | ---: | ---: | ---: |"]
        for loss, head in TABLE3_VARIANTS:
            found = groups.get((dataset, loss, head, REFERENCE_SCALE, REFERENCE_MARGIN))
            if found:
                name = _variant_label(loss, head).split(" [")[0]
                if loss == "cosine_distance":
                    name += f", s = {REFERENCE_SCALE:g}, m = {REFERENCE_MARGIN:g}"
                lines.append(f"| {name} | {head} | " + " | ".join(_row_cells(found)) + " |")
        lines.append("")
        lines += _recall_table(dataset, groups)

    for table, title, axis, fixed in ((1, "margin m at s = 10", "margin", ("scale", REFERENCE_SCALE)),
                                      (2, "scale s at m = 0.35", "scale", ("margin", REFERENCE_MARGIN))):
        index = {"scale": 3, "margin": 4}
        lines += [f"## Table {table}: cosine-distance loss, {title}", ""]
        for dataset in datasets:
            keys = sorted(key for key in groups if key[0] == dataset and key[1] == "cosine_distance"
                          and key[index[fixed[0]]] == fixed[1])
            if len(keys) < 2:
                continue
            values = ", ".join(f"{key[index[axis]]:g}" for key in keys)
            lines += [f"### {DATASET_TITLES[dataset]}: {axis} grid run: {values}", "",
                      f"| {axis} | seeds | accuracy | macro-F1 | balanced accuracy |", "| ---: | --- | ---: | ---: | ---: |"]
            lines += [f"| {key[index[axis]]:g} | " + " | ".join(_row_cells(groups[key])) + " |" for key in keys]
            lines.append("")
        if lines[-2].startswith("## Table"):
            lines += ["Not run yet (needs at least two values of the grid).", ""]

    lines += _stronger_models(stronger)
    lines += _balanced_sampling(natural, balanced)
    max_seeds = max((len([r for r in found if "failed" not in r]) for found in groups.values()), default=0)
    lines += ["## Reading", "",
              " ".join(_reading(groups, datasets)) + " Differences are judged against the seed-to-seed standard "
              f"deviation, the only noise estimate available here; with {max_seeds} seed(s) per row that estimate is itself "
              "rough. These runs use the epoch count above on a 2-core CPU, far shorter than the paper's schedules, so absolute accuracies "
              "are lower than published ones and the ranking may change with longer training.", ""]
    lines += list(longer) or ["Softmax against cosine-distance at 45 epochs (3x this schedule), with the class-aware-"
                              "margin and deferred-re-balancing variants: `docs/recipe.md`, section Schedule length "
                              "(`benchmarks/recipe.py --curve 45`).", ""]
    return "\n".join(lines)


def longer_schedule(longer_root: str | Path | None) -> list[str]:
    """The loss question's section from the recipe study's runs of one schedule length under longer_root ([] if None)."""
    if longer_root is None:
        return []
    from fer.loss_question import longer_schedule_markdown  # imported here: it builds on this module's helpers
    rows = collect(longer_root)
    epochs = sorted({row["settings"]["epochs"] for row in rows})
    if len(epochs) > 1:
        raise ValueError(f"{longer_root}: runs of several schedule lengths ({epochs}); give one curve-<N>ep folder")
    shown = Path(longer_root).resolve()  # the page names the records as the repository does, wherever it is built
    shown = shown.relative_to(REPO_ROOT).as_posix() if shown.is_relative_to(REPO_ROOT) else str(longer_root)
    return longer_schedule_markdown(rows, epochs[0], shown) if rows else []


def write_results(root: str | Path, path: str | Path, longer_root: str | Path | None = None) -> str:
    text = results_markdown(collect(root), root, longer_schedule(longer_root))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text
