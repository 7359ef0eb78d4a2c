"""The paper's loss ablation (Tables 1-3): the grid of runs, the page docs/results.md, and the command that runs both.

Every run trains one base config (same data, augmentation, optimiser, schedule and epochs) and differs only in dataset,
loss (+ head), AM-Softmax scale s / margin m and seed; records and protocol as in studies/common.py. The runner can be
killed and started again (nohup) at any point, and results_markdown() always reflects exactly the finished runs.

    FER_DATA=/path/to/data nohup python studies/ablation.py --epochs 30 --budget-minutes 600 \
        > runs/ablation.log 2>&1 &

    python studies/ablation.py --dry-run                  # list the runs and the time they need
    python studies/ablation.py --results-only             # rewrite docs/results.md from the finished runs
    python studies/ablation.py --results-only --copy-records docs/runs/ablation   # copy the run records to commit
    python studies/ablation.py --results-only --root docs/runs/ablation --longer-root docs/runs/recipe/curve-45ep
                                                             # rebuild docs/results.md from committed records

Time per run: --dry-run estimates it from the finished runs; docs/results.md gives the CPU time of the committed ones.
"""

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script from anywhere: the repository root holds the studies package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.models import MODELS  # noqa: E402
from studies.common import (BALANCED_METRICS, COMPARED_METRICS, DATASET_TITLES, DEFAULT_MODEL,  # noqa: E402
                            REFERENCE_MARGIN, REFERENCE_SCALE, REPORTED, SPLIT_TITLES, Run, against, cell, collect,
                            copy_records, cpu_seconds, difference, estimate_seconds, metric, model_of,
                            numbers, row_cells, run_grid, shown_command, shown_path)
from studies.loss_question import longer_schedule_markdown  # noqa: E402

# Table 3: (loss, head). The Keras head is mini-Xception's original; the linear head is the fair softmax baseline for the
# cosine head (same 128-D embedding, then one layer). Center and Island losses act on that embedding.
TABLE3_VARIANTS = (("softmax", "keras"), ("softmax", "linear"), ("center", "linear"), ("island", "linear"),
                   ("cosine_distance", "cosine"))
DEFAULT_MARGINS = (0.0, 0.1, 0.2, 0.35, 0.5)  # Table 1, at s = REFERENCE_SCALE
DEFAULT_SCALES = (5.0, 10.0, 20.0, 30.0)  # Table 2, at m = REFERENCE_MARGIN
# The stronger models only run Table 3's two endpoints, softmax (linear head) vs cosine-distance: the question is
# whether the loss still helps on a bigger network, not the whole grid again.
ENDPOINT_VARIANTS = (("softmax", "linear"), ("cosine_distance", "cosine"))
# Class-balanced sampling (train.balanced_sampling) runs the same two endpoints on mini-Xception: the margin costs the
# rare classes (see the recall tables), and the question is whether drawing classes equally gives that back.
SAMPLINGS = ("natural", "balanced")


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


def _sampling(row: dict) -> str:
    return row["run"].get("sampling", "natural")  # run.json files written before balanced sampling lack it


# ------------------------------------------------------------------------------------------------------------ markdown


def _groups(rows: list[dict]) -> dict:
    """(dataset, loss, head, scale, margin) -> finished rows (failed ones included, flagged)."""
    groups = {}
    for row in rows:
        r = row["run"]
        groups.setdefault((r["dataset"], r["loss"], r["head"], r["scale"], r["margin"]), []).append(row)
    return groups


def _variant_label(loss: str, head: str) -> str:
    return {"softmax": "softmax", "center": "softmax + center", "island": "softmax + island",
            "cosine_distance": "cosine-distance (AM-Softmax + island)"}[loss] + f" [{head} head]"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def _reading(groups: dict, datasets: list[str]) -> list[str]:
    """Computed sentences per dataset: cosine-distance against the best other loss (accuracy and macro-F1, relative to
    the seed spread), and how both move across the margin grid."""
    sentences = []
    for dataset in datasets:
        reference = groups.get((dataset, "cosine_distance", "cosine", REFERENCE_SCALE, REFERENCE_MARGIN), [])
        others = {(loss, head): groups.get((dataset, loss, head, REFERENCE_SCALE, REFERENCE_MARGIN), [])
                  for loss, head in TABLE3_VARIANTS if loss != "cosine_distance"}
        others = {key: rows for key, rows in others.items() if metric(rows, "accuracy")}
        title = DATASET_TITLES[dataset]
        if not metric(reference, "accuracy") or not others:
            sentences.append(f"{title}: not enough finished runs to compare cosine-distance with the other losses yet.")
            continue
        (loss, head), best = max(others.items(), key=lambda item: np.mean(metric(item[1], "accuracy")))
        acc, best_acc = metric(reference, "accuracy"), metric(best, "accuracy")
        f1, best_f1 = metric(reference, "macro_f1"), metric(best, "macro_f1")
        sentences.append(f"{title}: cosine-distance (s = {REFERENCE_SCALE:g}, m = {REFERENCE_MARGIN:g}) reaches "
                         f"{cell(acc)} % accuracy ({_seeds(len(acc))}) against {cell(best_acc)} % for the best "
                         f"other loss, {_variant_label(loss, head)} ({_seeds(len(best_acc))}): "
                         f"{difference(acc, best_acc)}; macro-F1 {cell(f1)} % against {cell(best_f1)} %: "
                         f"{difference(f1, best_f1)}.")
        margins = sorted(key for key in groups if key[:4] == (dataset, "cosine_distance", "cosine", REFERENCE_SCALE)
                         and metric(groups[key], "accuracy"))
        if len(margins) > 1:
            low, high = groups[margins[0]], groups[margins[-1]]
            sentences.append(f"{title}, margin grid: from m = {margins[0][4]:g} to m = {margins[-1][4]:g} accuracy goes "
                             f"from {cell(metric(low, 'accuracy'))} to {cell(metric(high, 'accuracy'))} % and "
                             f"macro-F1 from {cell(metric(low, 'macro_f1'))} to {cell(metric(high, 'macro_f1'))} %.")
    return sentences


def _stronger_models(rows: list[dict]) -> list[str]:
    """Table and one sentence per (dataset, model) for the endpoint runs on models other than mini-Xception."""
    models = sorted({model_of(row) for row in rows})
    if not models:
        return []
    lines = ["## Table 3 endpoints on stronger models", "",
             "Only softmax (linear head) and cosine-distance (s = 10, m = 0.35), same data, settings and seeds as above; "
             "only the network differs.", ""]
    sentences = []
    for dataset in REPORTED:
        for model in models:
            found = {(loss, head): [row for row in rows if model_of(row) == model and row["run"]["dataset"] == dataset
                                    and (row["run"]["loss"], row["run"]["head"]) == (loss, head)]
                     for loss, head in ENDPOINT_VARIANTS}
            if not any(found.values()):
                continue
            lines += [f"### {DATASET_TITLES[dataset]} ({SPLIT_TITLES[dataset]}), {model}", "",
                      "| loss | head | seeds | accuracy | macro-F1 | balanced accuracy |",
                      "| --- | --- | --- | ---: | ---: | ---: |"]
            lines += [f"| {_variant_label(loss, head).split(' [')[0]} | {head} | " + " | ".join(row_cells(r)) + " |"
                      for (loss, head), r in found.items() if r]
            lines.append("")
            cosine, softmax = found[ENDPOINT_VARIANTS[1]], found[ENDPOINT_VARIANTS[0]]
            if metric(cosine, "accuracy") and metric(softmax, "accuracy"):
                sentences.append(f"{DATASET_TITLES[dataset]}, {model}, cosine-distance against softmax: "
                                 + against(cosine, softmax, COMPARED_METRICS) + ".")
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
        lines += [f"| {label} | " + " | ".join(row_cells(rows)) + " |" for label, rows in labelled]
        lines += [""] + _recall_lines(labelled, "loss | head | sampling")
        for loss, head in variants:
            before, after = found[(loss, head, "natural")], found[(loss, head, "balanced")]
            if metric(before, "accuracy") and metric(after, "accuracy"):
                sentences.append(f"{DATASET_TITLES[dataset]}, {_variant_label(loss, head)}, balanced against natural "
                                 "sampling: " + against(after, before, BALANCED_METRICS) + ".")
        cosine = found.get(("cosine_distance", "cosine", "balanced"), [])
        softmax = next((found[(loss, head, "balanced")] for loss, head in variants if loss == "softmax"), [])
        if metric(cosine, "accuracy") and metric(softmax, "accuracy"):
            parts = [f"{name} {difference(metric(cosine, key), metric(softmax, key))}"
                     for name, key in BALANCED_METRICS]
            sentences.append(f"{DATASET_TITLES[dataset]}, both balanced, cosine-distance against softmax: "
                             + "; ".join(parts) + ".")
    return lines + sentences + [""]


def results_markdown(rows: list[dict], root: str | Path = "runs/ablation", longer: list[str] = ()) -> str:
    """longer: the section on the loss at a longer schedule (studies.loss_question), in place of the pointer to it."""
    stronger = [row for row in rows if model_of(row) != DEFAULT_MODEL]
    balanced = [row for row in rows if model_of(row) == DEFAULT_MODEL and _sampling(row) == "balanced"]
    natural = [row for row in rows if model_of(row) == DEFAULT_MODEL and _sampling(row) == "natural"]
    groups = _groups(natural)
    datasets = [d for d in REPORTED if any(key[0] == d for key in groups)]
    all_settings = {json.dumps(row["settings"], sort_keys=True) for row in rows}
    commands = sorted({shown_command(row["command"]) for row in rows if row.get("command")})
    cpu, wall = sum(cpu_seconds(row) for row in rows), sum(row["wall_s"] for row in rows)
    lines = ["# Results: loss ablation on mini-Xception (paper Tables 1-3)" + (", endpoints on stronger models"
                                                                              if stronger else ""), "",
             f"Generated by `studies/ablation.py` from {len(rows)} finished run(s) under `{root}`; do not edit by "
             "hand. Rerun the command(s) below (finished runs are skipped) or `python studies/ablation.py --results-only`"
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
        for model in sorted({model_of(row) for row in rows}, key=lambda m: (m != DEFAULT_MODEL, m)):
            these = [row for row in rows if row["run"]["dataset"] == dataset and model_of(row) == model]
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
                lines.append(f"| {name} | {head} | " + " | ".join(row_cells(found)) + " |")
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
            lines += [f"| {key[index[axis]]:g} | " + " | ".join(row_cells(groups[key])) + " |" for key in keys]
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
                              "(`studies/recipe.py --curve 45`).", ""]
    return "\n".join(lines)


def longer_schedule(longer_root: str | Path | None) -> list[str]:
    """The loss question's section from the recipe study's runs of one schedule length under longer_root ([] if None)."""
    if longer_root is None:
        return []
    rows = collect(longer_root)
    epochs = sorted({row["settings"]["epochs"] for row in rows})
    if len(epochs) > 1:
        raise ValueError(f"{longer_root}: runs of several schedule lengths ({epochs}); give one curve-<N>ep folder")
    return longer_schedule_markdown(rows, epochs[0], shown_path(longer_root)) if rows else []


def write_results(root: str | Path, path: str | Path, longer_root: str | Path | None = None) -> str:
    text = results_markdown(collect(root), root, longer_schedule(longer_root))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/ablation", help="one folder per run below this")
    p.add_argument("--base", default="configs/fer2013_mini_xception_cosine.yaml",
                   help="base config: augmentation, optimiser, schedule, batch size shared by every run")
    p.add_argument("--datasets", type=lambda t: tuple(t.split(",")), default=("rafdb", "fer2013"))
    p.add_argument("--seeds", type=numbers(int), default=(0, 1, 2))
    p.add_argument("--tables", type=numbers(int), default=(1, 2, 3), help="3: losses, 1: margin grid, 2: scale grid")
    p.add_argument("--margins", type=numbers(float), default=DEFAULT_MARGINS, help="Table 1 grid at s = 10")
    p.add_argument("--scales", type=numbers(float), default=DEFAULT_SCALES, help="Table 2 grid at m = 0.35")
    p.add_argument("--softmax-heads", type=lambda t: tuple(t.split(",")), default=("keras", "linear"))
    p.add_argument("--stronger-models", type=lambda t: tuple(m for m in t.split(",") if m), default=(),
                   help="also run Table 3's endpoints (softmax vs cosine-distance) on these models, e.g. resnet_small")
    p.add_argument("--balanced-sampling", action="store_true",
                   help="also run softmax and cosine-distance on mini-Xception with class-balanced sampling (Table 3)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (the same for every run)")
    p.add_argument("--max-per-class", type=int, help="cap training images per class (smoke runs)")
    p.add_argument("--only", help="run only the runs whose name contains this text, e.g. 'rafdb/' or 'seed0'")
    p.add_argument("--budget-minutes", type=float, help="do not start a run that would end after this much wall time")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    p.add_argument("--results", default="docs/results.md", help="markdown written after every run")
    p.add_argument("--results-only", action="store_true", help="only rewrite the results markdown")
    p.add_argument("--longer-root", help="the recipe study's runs at a longer schedule (one curve-<N>ep folder, e.g. "
                   "docs/runs/recipe/curve-45ep): adds the loss at that length to the results")
    p.add_argument("--copy-records", metavar="DIR",
                   help="after the runs, copy each run's run.json and eval/report.json to DIR (to commit them)")
    p.add_argument("--dry-run", action="store_true", help="list the runs still to do and their estimated time")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    if args.results_only:
        if args.copy_records:
            copy_records(args.root, args.copy_records)
        write_results(args.root, args.results, args.longer_root)
        print(f"wrote {args.results} from {len(collect(args.root))} finished run(s) under {args.root}")
        return 0
    runs = grid(args.datasets, args.seeds, args.tables, args.margins, args.scales, args.softmax_heads,
                         args.stronger_models, args.balanced_sampling)
    if args.only:
        runs = [run for run in runs if args.only in run.name]
    if args.dry_run:
        finished = collect(args.root)
        done = {row["name"] for row in finished}
        todo = [run for run in runs if run.name not in done]
        seconds = [estimate_seconds(run, finished, args.epochs, args.max_per_class) for run in todo]
        for run, s in zip(todo, seconds):
            print(f"{run.name:55s} ~{s / 60:5.1f} min")
        print(f"{len(todo)} of {len(runs)} runs to do, about {sum(seconds) / 3600:.1f} wall-hours")
        return 0
    command = "python studies/ablation.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    run_grid(runs, args.base, args.root, args.epochs, args.max_per_class, args.data_root, args.budget_minutes,
             args.threads, command, after_each=lambda: write_results(args.root, args.results))
    if args.copy_records:
        copy_records(args.root, args.copy_records)
    write_results(args.root, args.results, args.longer_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
