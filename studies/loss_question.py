"""The loss question at a longer schedule: each cosine-distance variant against softmax, and whether one wins.

Reads the recipe study's schedule-length runs (studies/recipe.py --curve N, one run.json per run) and writes the
section of docs/results.md that answers the loss question's aim: a cosine-distance configuration above softmax on
accuracy and on macro-F1, on both datasets, by more than the seed spread. A variant is compared with softmax trained
the same way: the loss variants (margins, deferred re-weighting) with plain softmax, a training option (distillation)
with softmax plus that option.
"""

import numpy as np

from studies.common import (BALANCED_METRICS, COMPARED_METRICS, DATASET_TITLES, DEFAULT_MODEL, REPORTED, SPLIT_TITLES,
                            against, metric, model_of, row_cells)

# Recipe names that change only the loss or its class balance, so plain softmax is their reference
LOSS_VARIANTS = {"": "uniform margin (the paper's)", "ldam": "class-aware margins (ldam)", "drw": "deferred re-weighting",
                 "ldam_drw": "class-aware margins + deferred re-weighting"}


def _label(row: dict) -> str:
    recipe = row["run"].get("recipe", "")
    if row["run"]["loss"] == "softmax":
        return "softmax" + (f" + {recipe}" if recipe else "")
    return "cosine-distance, " + LOSS_VARIANTS.get(recipe, recipe)


def _beats(rows: list[dict], reference: list[dict]) -> bool | None:
    """Mean accuracy and macro-F1 both above the reference's by more than the larger seed standard deviation; None
    when a side has a single seed (no spread to judge by)."""
    verdicts = []
    for _, key in COMPARED_METRICS:
        ours, theirs = metric(rows, key), metric(reference, key)
        if len(ours) < 2 or len(theirs) < 2:
            return None
        spread = max(np.std(ours, ddof=1), np.std(theirs, ddof=1))
        verdicts.append(float(np.mean(ours) - np.mean(theirs)) > spread)
    return all(verdicts)


def _state(by_dataset: dict) -> str:
    missing = [DATASET_TITLES[d] for d in REPORTED if d not in by_dataset]
    unknown = [DATASET_TITLES[d] for d, wins in by_dataset.items() if wins is None]
    short = [DATASET_TITLES[d] for d, wins in by_dataset.items() if wins is False]
    if short:
        return f"not met (short on {', '.join(short)})"
    reasons = ([f"not measured on {', '.join(missing)}"] if missing else []) + (
        [f"a single seed on {', '.join(unknown)}"] if unknown else [])
    return f"not known yet ({'; '.join(reasons)})" if reasons else "met"


def longer_schedule_markdown(rows: list[dict], epochs: int, source: str) -> list[str]:
    """Markdown lines: the table, a comparison per variant, and the verdict on the aim per model."""
    if not rows:
        return []
    cells = {}  # (dataset, model, recipe, loss) -> runs
    for row in rows:
        r = row["run"]
        cells.setdefault((r["dataset"], model_of(row), r.get("recipe", ""), r["loss"]), []).append(row)
    models = sorted({key[1] for key in cells}, key=lambda model: (model != DEFAULT_MODEL, model))
    lines = [f"## Table 3 at {epochs} epochs: softmax against the cosine-distance variants", "",
             f"The endpoints again at {epochs} epochs, with the recipe study's loss variants (records `{source}`, "
             f"`studies/recipe.py --curve {epochs}`; the full comparison, per-seed pairs and CPU time in "
             "`docs/recipe.md`, section Schedule length). Same protocol as above; mean ± standard deviation over seeds.", "",
             "| dataset | model | loss | seeds | accuracy | macro-F1 | balanced accuracy |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    ordered = sorted(cells, key=lambda k: (list(REPORTED).index(k[0]), models.index(k[1]), k[3] != "softmax", k[2]))
    lines += [f"| {DATASET_TITLES[d]} ({SPLIT_TITLES[d]}) | {m} | {_label(cells[(d, m, r, l)][0])} | "
              + " | ".join(row_cells(cells[(d, m, r, l)])) + " |" for d, m, r, l in ordered]
    lines.append("")
    verdicts = {}  # (model, variant label) -> {dataset: beats on accuracy and macro-F1}
    for dataset, model, recipe, loss in ordered:
        if loss != "cosine_distance":
            continue
        reference_recipe = "" if recipe in LOSS_VARIANTS else recipe
        softmax = cells.get((dataset, model, reference_recipe, "softmax"))
        if not softmax:
            continue
        ours = cells[(dataset, model, recipe, loss)]
        label = _label(ours[0])
        wins = _beats(ours, softmax)
        verdicts.setdefault((model, label), {})[dataset] = wins
        answer = {True: "yes", False: "no", None: "not known (a single seed)"}[wins]
        lines.append(f"- {DATASET_TITLES[dataset]}, {model}, {label} against {_label(softmax[0])}: "
                     + against(ours, softmax, BALANCED_METRICS)
                     + f". Above it on accuracy and macro-F1 by more than the spread: {answer}.")
    lines += ["", "**The aim** (a cosine-distance configuration above softmax on accuracy and on macro-F1, on both "
              "datasets, by more than the seed spread):", ""]
    lines += [f"- {model}, {label}: {_state(by_dataset)}." for (model, label), by_dataset in verdicts.items()]
    return lines + [""]
