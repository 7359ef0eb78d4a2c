#!/usr/bin/env python
"""Recipe study: every recipe option against today's recipe at the same budget, then docs/recipe.md.

Each run is a study run (studies/common.py: same resumable runner, run.json records, evaluation protocol) of the base
config plus one option's overrides; the budget is the same epoch count for every run, and every run records its CPU
time, so the page shows what each option costs. Runs live in <root>/study/<dataset>/<variant>/seed<k>/; the
schedule-length curve of one recipe in <root>/curve-<N>ep/. Meant to run in the background:

    FER_DATA=/path/to/data nohup python studies/recipe.py --epochs 15 --budget-minutes 600 > runs/recipe.log 2>&1 &
    python studies/recipe.py --combine ema,mixup,ldam_drw --seeds 0,1,2     # the finalists together
    python studies/recipe.py --curve 10,20,40,80 --curve-recipe ema+mixup    # accuracy against schedule length
    python studies/recipe.py --curve 45 --curve-recipe softmax --model resnet_small  # a stronger model (linear softmax)
    python studies/recipe.py --dry-run                                       # the runs still to do, and their time
    python studies/recipe.py --results-only --copy-records docs/runs/recipe  # copy the records to commit
    python studies/recipe.py --results-only --root docs/runs/recipe          # rebuild docs/recipe.md from them

Selection never touches a test split: FER2013 keeps best.pt by PublicTest and reports PrivateTest; RAF-DB reports the
final-epoch weights on its carved validation part. The distillation option runs on FER2013 only: the shipped RAF-DB
model was trained on a validation carve of seed 0, so for other seeds it has seen their validation images.
"""

import argparse
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script from anywhere: the repository root holds the studies package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.checkpoint import WEIGHTS_DIR  # noqa: E402
from fer.face.model_file import sha256_of  # noqa: E402
from fer.models import MODELS  # noqa: E402
from studies import common  # noqa: E402

BASELINE = "baseline"
# The loss every cosine-distance recipe must beat: Table 3's softmax endpoint (mini-Xception's Keras head), run by
# name (--options softmax, --curve-recipe softmax) at the same budget; softmax+distill trains it with an option.
SOFTMAX = "softmax"
TEACHERS = {"fer2013": "fer2013"}  # dataset -> shipped teacher (see the module docstring for RAF-DB)
# The distillation study's teacher is pinned by hash: every distill record learned from the same `fer2013` file. When
# the shipped `fer2013` is another file, the runner takes the pinned one out of git history, so a study half done never
# changes teacher. dataset -> (sha256, commit that shipped it).
TEACHER_PINS = {"fer2013": ("330f8ae0716902d31d7008af9011eb8c348c1ef2784a321afa12a12d98de3bbd", "a8ecbbc")}
# Options that only mean something on some datasets: FER2013 is gray at source, so colour would replicate one channel.
ONLY_ON = {"colour": ("rafdb",), "colour_size100": ("rafdb",), "distill": tuple(TEACHERS)}


def recipe_options(epochs: int) -> dict[str, tuple[str, ...]]:
    """Option name -> the overrides that switch it on over the base config, for a schedule of `epochs`."""
    warmup = f"train.warmup_epochs={epochs / 10:g}"  # the first 10 % of the schedule
    drw = f"train.defer_rebalance_epoch={min(epochs - 1, max(1, round(0.8 * epochs)))}"  # the last 20 % (Cao et al. 2019)
    options = {
        BASELINE: (),
        "ema": ("train.ema_decay=0.999",),
        "mixup": ("augment.mixup=0.2",),
        "cutmix": ("augment.cutmix=1.0", "augment.mix_prob=0.5"),
        "smoothing": ("loss.label_smoothing=0.1",),
        "strong_aug": ("augment.crop_scale=0.6", "augment.brightness_contrast=0.5", "augment.erase=0.5"),
        "adamw_warmup_cosine": ("train.schedule=cosine", warmup),
        "sgd_warmup_cosine": ("train.optimizer=sgd", "train.lr=0.05", "train.weight_decay=0.0005",
                              "train.schedule=cosine", warmup),
        "ldam": ("loss.class_margins=ldam",),
        "drw": (drw,),
        "ldam_drw": ("loss.class_margins=ldam", drw),
        "distill": ("train.teacher=TEACHER",),  # filled per dataset
        # Input size and colour (RAF-DB ships 100x100 colour faces; the models' stems take any size and channels)
        "size64": ("data.image_size=64",),
        "size100": ("data.image_size=100",),
        "colour": ("data.channels=3",),
        "colour_size100": ("data.channels=3", "data.image_size=100"),
    }
    if epochs < 2:  # deferred re-weighting needs an epoch before it
        options = {name: values for name, values in options.items() if name not in ("drw", "ldam_drw")}
    return options


def combined(names: list[str], options: dict) -> tuple[str, tuple[str, ...]]:
    """'a+b' and the overrides of a, then b (a later option wins on a shared key)."""
    unknown = [name for name in names if name not in options]
    if unknown:
        raise ValueError(f"unknown recipe option(s) {', '.join(unknown)}; known: {', '.join(options)}")
    return "+".join(names), tuple(o for name in names for o in options[name])


def pinned_teacher(dataset: str, folder: Path, weights_dir: Path = WEIGHTS_DIR, pins: dict | None = None) -> str:
    """The train.teacher value of the distillation runs on dataset: the shipped name while its file is the pinned one,
    else the pinned file, taken out of git history into folder once and checked against its hash."""
    name, (sha, commit) = TEACHERS[dataset], (pins or TEACHER_PINS)[dataset]
    shipped = Path(weights_dir) / f"{name}.pt"
    if shipped.is_file() and sha256_of(shipped) == sha:
        return name
    pinned = Path(folder) / f"{name}-{sha[:12]}.pt"
    if not pinned.is_file():
        source = f"{commit}:fer/weights/{name}.pt"
        shown = subprocess.run(["git", "show", source], cwd=Path(__file__).resolve().parents[1], capture_output=True)
        if shown.returncode != 0:
            raise ValueError(f"the distillation study's teacher for {dataset} is {name} at sha256 {sha[:12]}... "
                             f"(commit {commit}) and the shipped {shipped} is another file; git show {source} failed "
                             f"({shown.stderr.decode().strip()}): put that file at {pinned}")
        pinned.parent.mkdir(parents=True, exist_ok=True)
        pinned.write_bytes(shown.stdout)
    found = sha256_of(pinned)
    if found != sha:
        raise ValueError(f"{pinned}: sha256 {found[:12]}..., the distillation study's teacher for {dataset} "
                         f"is {sha[:12]}... ({name} at commit {commit})")
    return str(pinned)


def grid(datasets, seeds, epochs: int, names=None, combine=(), model: str = common.DEFAULT_MODEL,
         teachers: dict | None = None) -> list[common.Run]:
    """Seed-major runs of the base loss (cosine-distance) with each option (names: None = all) and each combination.

    model: mini-Xception (the paper's, whose softmax reference keeps the Keras head) or a stronger model, whose softmax
    reference is a linear head on the same embedding (as the loss ablation's Table 3 endpoints). A combination that
    starts with softmax (softmax+distill) trains that reference with the options, so the loss can be compared with the
    recipe held fixed. teachers: dataset -> train.teacher of the distillation runs (default the shipped names).
    """
    teachers = teachers or TEACHERS
    options = recipe_options(epochs)
    names = list(options) if names is None else list(names)
    missing = [name for name in names if name not in options and name != SOFTMAX]
    if missing:
        raise ValueError(f"unknown recipe option(s) {', '.join(missing)}; known: {', '.join(options)}")
    chosen = [(name, options[name]) for name in names if name != SOFTMAX]
    chosen += [combined(list(parts), options) for parts in combine if parts[0] != SOFTMAX]
    softmax_chosen = [("", ())] if SOFTMAX in names else []
    softmax_chosen += [_softmax_recipe(list(parts[1:]), options) for parts in combine if parts[0] == SOFTMAX]
    head = "keras" if model == common.DEFAULT_MODEL else "linear"
    runs = []
    for seed in seeds:
        for dataset in datasets:
            for loss, loss_head, recipes in (("softmax", head, softmax_chosen), ("cosine_distance", "cosine", chosen)):
                for name, overrides in recipes:
                    if dataset not in ONLY_ON.get(name, (dataset,)):
                        continue
                    overrides = tuple(o.replace("TEACHER", teachers[dataset]) if o.startswith("train.teacher=") else o
                                      for o in overrides)
                    runs.append(common.Run(dataset, loss, loss_head, seed, model=model,
                                             recipe="" if name == BASELINE else name, options=overrides))
    return list(dict.fromkeys(runs))


def _softmax_recipe(names: list[str], options: dict) -> tuple[str, tuple[str, ...]]:
    """The options of softmax+a+b; class-aware margins are refused: softmax has no margin to make class-aware."""
    if not names:
        raise ValueError("softmax+: name the options to train the softmax reference with, e.g. softmax+distill")
    name, overrides = combined(names, options)
    if any(o.startswith("loss.class_margins=") for o in overrides):
        raise ValueError(f"softmax+{name}: class-aware margins belong to the cosine-distance loss; softmax has no margin")
    return name, overrides


# ------------------------------------------------------------------------------------------------------------ markdown


def _recipe(row: dict) -> str:
    if row["run"]["loss"] == "softmax":
        return "+".join([SOFTMAX] + ([row["run"]["recipe"]] if row["run"].get("recipe") else []))
    return row["run"].get("recipe") or BASELINE


def _home_as_tilde(command: str) -> str:
    """Records (and the page built from them) show commands anyone can paste: this machine's home folder as ~."""
    return command.replace(str(Path.home()) + "/", "~/")


def _cpu_minutes(rows: list[dict]) -> str:
    if not rows:
        return "–"
    mean_minutes = np.mean([common.cpu_seconds(row) for row in rows]) / 60
    return f"{mean_minutes:.1f}" + ("*" if any(map(common.resumed, rows)) else "")


def _models(rows: list[dict]) -> list[str]:
    """The models in rows, the paper's mini-Xception first."""
    return sorted({common.model_of(row) for row in rows}, key=lambda model: (model != common.DEFAULT_MODEL, model))


def _study_table(rows: list[dict], dataset: str, model: str) -> list[str]:
    these = [row for row in rows if row["run"]["dataset"] == dataset and common.model_of(row) == model]
    by_recipe = {}
    for row in these:
        by_recipe.setdefault(_recipe(row), []).append(row)
    baseline = by_recipe.get(BASELINE, [])
    title = f"{common.DATASET_TITLES[dataset]} ({common.SPLIT_TITLES[dataset]})"
    lines = [f"### {title}" + ("" if model == common.DEFAULT_MODEL else f", {model}"), "",
             "| recipe | seeds | accuracy | macro-F1 | balanced accuracy | CPU min per run |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    order = sorted(by_recipe, key=lambda name: (name != BASELINE, "+" in name, name))
    lines += [f"| {name} | " + " | ".join(common.row_cells(by_recipe[name])) + f" | {_cpu_minutes(by_recipe[name])} |"
              for name in order]
    lines.append("")
    if common.metric(baseline, "accuracy"):
        for name in order:
            found = by_recipe[name]
            if name != BASELINE and common.metric(found, "accuracy"):
                lines.append(f"- {name} against the baseline: "
                             + common.against(found, baseline, common.BALANCED_METRICS) + ".")
        lines.append("")
    lines += _combination_lines(by_recipe, order)
    return lines


def _combination_lines(by_recipe: dict[str, list[dict]], order: list[str]) -> list[str]:
    """Each a+b combination against each of its parts: combining pays only if it beats the better part alone."""
    lines = []
    for name in order:
        for part in name.split("+") if "+" in name else ():
            if common.metric(by_recipe.get(part, []), "accuracy") and common.metric(by_recipe[name], "accuracy"):
                lines.append(f"- {name} against {part} alone: "
                             + common.against(by_recipe[name], by_recipe[part], common.BALANCED_METRICS) + ". "
                             + _paired(by_recipe[name], by_recipe[part]) + ".")
    return lines + [""] if lines else []


def _curve_table(curves: dict[int, list[dict]]) -> list[str]:
    if not curves:
        return []
    recipes = sorted({_recipe(row) for rows in curves.values() for row in rows})
    lines = ["## Schedule length", "",
             f"Recipe(s): {', '.join(recipes)}; one root per epoch count (the study's budget: its own runs).", "",
             "| dataset | model | recipe | epochs | seeds | accuracy | macro-F1 | balanced accuracy | CPU min per run |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    cells = {}  # (dataset, model, recipe, epochs) -> its runs: the table's rows and the comparisons' sides
    for epochs, rows in curves.items():
        for row in rows:
            cells.setdefault((row["run"]["dataset"], common.model_of(row), _recipe(row), epochs), []).append(row)
    models = _models([row for rows in curves.values() for row in rows])
    for dataset in common.REPORTED:
        for model in models:
            for name in recipes:
                for epochs in sorted(curves):
                    found = cells.get((dataset, model, name, epochs))
                    if found:
                        lines.append(f"| {common.DATASET_TITLES[dataset]} | {model} | {name} | {epochs} | "
                                     + " | ".join(common.row_cells(found)) + f" | {_cpu_minutes(found)} |")
    lines.append("")
    for epochs in sorted(curves):  # the loss question: each cosine-distance recipe against softmax, same model, schedule
        for dataset in common.REPORTED:
            for model in models:
                for name in recipes:
                    found = cells.get((dataset, model, name, epochs))
                    if name.split("+")[0] == SOFTMAX or not found:
                        continue
                    # plain softmax, and softmax trained with the same recipe (the loss alone changes) where it ran
                    for reference in dict.fromkeys([SOFTMAX, SOFTMAX if name == BASELINE else f"{SOFTMAX}+{name}"]):
                        softmax = cells.get((dataset, model, reference, epochs))
                        if softmax:
                            lines.append(f"- {common.DATASET_TITLES[dataset]}, {model}, {epochs} epochs, "
                                         f"cosine-distance {name} against {reference}: "
                                         + common.against(found, softmax, common.BALANCED_METRICS)
                                         + ". " + _paired(found, softmax) + ".")
    return lines + [""]


def _paired(rows: list[dict], reference: list[dict]) -> str:
    """Per-seed differences: a seed fixes the validation carve and the data order, so the same seed on both sides
    takes the split-to-split part out of the spread the unpaired comparison has to beat."""
    by_seed = {row["run"]["seed"]: row for row in reference if "failed" not in row}
    pairs = [(row, by_seed[row["run"]["seed"]]) for row in rows if "failed" not in row and row["run"]["seed"] in by_seed]
    if not pairs:
        return "No seed on both sides, so no paired comparison"
    parts = []
    for name, key in common.BALANCED_METRICS:
        deltas = [100 * (a[key] - b[key]) for a, b in pairs]
        parts.append(f"{name} {', '.join(f'{d:+.2f}' for d in deltas)} pp (higher in {sum(d > 0 for d in deltas)} "
                     f"of {len(deltas)})")
    return f"Paired by seed ({', '.join(str(a['run']['seed']) for a, _ in pairs)}): " + "; ".join(parts)


def recipe_markdown(study: list[dict], curves: dict[int, list[dict]], root: str) -> str:
    rows = study + [row for found in curves.values() for row in found]
    lines = ["# Recipe study: each option against today's recipe at the same budget", "",
             f"Generated by `studies/recipe.py` from {len(rows)} finished run(s) under `{root}`; do not edit by hand. "
             "Rebuild: `python studies/recipe.py --results-only --root docs/runs/recipe`.", ""]
    if not rows:
        return "\n".join(lines + ["No finished runs yet.", ""])
    commands = sorted({common.shown_command(row["command"]) for row in rows if row.get("command")})
    lines += ["Commands (each skips the runs already finished):", ""] + [f"- `{c}`" for c in commands] + [""]
    for text in sorted({json.dumps(row["settings"], sort_keys=True) for row in study}):
        s = json.loads(text)
        lines.append(f"Settings: base config `{s['base']}`, {s['epochs']} epoch(s) per run (the budget), training images "
                     f"per class {'capped at ' + str(s['max_per_class']) if s['max_per_class'] else 'not capped'}.")
    if any(row["settings"]["max_per_class"] or row["settings"]["epochs"] < 5 for row in rows):
        lines.append("**Smoke settings (capped training set or under 5 epochs): these numbers show that the pipeline "
                     "works, they say nothing about the options.**")
    cpu = sum(common.cpu_seconds(row) for row in rows)
    threads = sorted({row.get("threads") for row in rows if row.get("threads")})
    lines += ["", f"CPU time: {cpu / 3600:.2f} CPU-hours over {len(rows)} runs on "
              f"{', '.join(map(str, threads)) or '?'} torch thread(s). Every run has the same epoch count; the CPU "
              "minutes per run show what an option costs on top (distillation runs a teacher forward per batch). "
              "* marks a cell with a run resumed after an interruption: its CPU time is the finishing process's plus "
              "the training time before the resume (from the checkpoint's training clock).", "",
              "Protocol: as the loss ablation (docs/results.md): FER2013 keeps the best-PublicTest epoch and reports "
              "PrivateTest; RAF-DB reports the final-epoch weights on the validation part carved with the run's seed. "
              "Loss: cosine-distance (s = 10, m = 0.35), except the softmax reference (Keras head on mini-Xception, a "
              "linear head on the same embedding for a stronger model). "
              "Values: mean ± sample standard deviation over seeds, in %. "
              "Option overrides: `studies/recipe.py recipe_options`.", ""]
    if study:
        lines += ["## Options against the baseline", ""]
        for dataset in common.REPORTED:
            for model in _models([row for row in study if row["run"]["dataset"] == dataset]):
                lines += _study_table(study, dataset, model)
    return "\n".join(lines + _curve_table(curve_points(study, curves)))


def curve_points(study: list[dict], curves: dict[int, list[dict]]) -> dict[int, list[dict]]:
    """The curve roots' runs, plus the study's runs of the same recipes as the point at the study's budget."""
    recipes = {(common.model_of(row), _recipe(row)) for rows in curves.values() for row in rows}
    points = dict(curves)
    for row in study:
        epochs = row["settings"]["epochs"]
        if (common.model_of(row), _recipe(row)) in recipes and epochs not in curves:
            points.setdefault(epochs, []).append(row)
    return dict(sorted(points.items()))


def curve_roots(root: Path) -> dict[int, Path]:
    return {int(path.name[len("curve-"):-len("ep")]): path for path in sorted(root.glob("curve-*ep")) if path.is_dir()}


def collect_study(root: str | Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """(finished study runs, {epochs: finished curve runs}) under root."""
    root = Path(root)
    curves = {epochs: common.collect(folder) for epochs, folder in curve_roots(root).items()}
    return (common.collect(root / "study") if (root / "study").is_dir() else []), curves


def write_markdown(root: str | Path, path: str | Path) -> str:
    text = recipe_markdown(*collect_study(root), str(root))
    Path(path).write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/recipe")
    p.add_argument("--base", default="configs/fer2013_mini_xception_cosine.yaml", help="today's recipe")
    p.add_argument("--model", default=common.DEFAULT_MODEL, choices=sorted(MODELS),
                   help="the network of every run (the paper's mini-Xception by default)")
    p.add_argument("--datasets", type=lambda t: tuple(t.split(",")), default=("fer2013", "rafdb"))
    p.add_argument("--seeds", type=common.numbers(int), default=(0, 1, 2))
    p.add_argument("--epochs", type=int, default=15, help="the budget: epochs of every study run")
    p.add_argument("--options", type=lambda t: [n for n in t.split(",") if n], help="only these options (default all)")
    p.add_argument("--combine", action="append", default=[], type=lambda t: t.split(","),
                   help="also run these options together, e.g. ema,mixup (repeatable); names them ema+mixup")
    p.add_argument("--curve", type=common.numbers(int), default=(), help="epoch counts of the schedule-length curve")
    p.add_argument("--curve-recipe", default=BASELINE, help="the option (or a+b combination) the curve runs")
    p.add_argument("--max-per-class", type=int, help="cap training images per class (smoke runs)")
    p.add_argument("--budget-minutes", type=float, help="do not start a run that would end after this much wall time")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data-root")
    p.add_argument("--results", default="docs/recipe.md")
    p.add_argument("--results-only", action="store_true")
    p.add_argument("--copy-records", metavar="DIR", help="copy each run's run.json and eval/report.json to DIR")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    root = Path(args.root)
    if not args.results_only:
        asked = args.curve_recipe.split("+") if args.curve else args.options or list(recipe_options(args.epochs))
        teachers = None
        if "distill" in asked + [name for parts in args.combine for name in parts]:
            teachers = {dataset: pinned_teacher(dataset, root / "teachers") for dataset in TEACHERS}
        if args.curve:  # one recipe (an option or an a+b combination) at each schedule length
            parts = args.curve_recipe.split("+")
            names, combine = (parts, []) if len(parts) == 1 else ([], [parts])
            jobs = [(root / f"curve-{n}ep", n, grid(args.datasets, args.seeds, n, names, combine, args.model, teachers))
                    for n in args.curve]
        else:
            jobs = [(root / "study", args.epochs, grid(args.datasets, args.seeds, args.epochs, args.options,
                                                       args.combine, args.model, teachers))]
        command = _home_as_tilde("python studies/recipe.py "
                                 + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
        for folder, epochs, runs in jobs:
            if args.dry_run:
                finished = common.collect(folder) if folder.is_dir() else []
                done = {row["name"] for row in finished}
                todo = [run for run in runs if run.name not in done]
                seconds = [common.estimate_seconds(run, finished, epochs, args.max_per_class) for run in todo]
                for run, s in zip(todo, seconds):
                    print(f"{folder.name}/{run.name:60s} ~{s / 60:5.1f} min")
                print(f"{folder.name}: {len(todo)} of {len(runs)} runs to do, about {sum(seconds) / 3600:.1f} wall-hours")
                continue
            common.run_grid(runs, args.base, folder, epochs, args.max_per_class, args.data_root, args.budget_minutes,
                              args.threads, command)
        if args.dry_run:
            return 0
    if args.copy_records:
        common.copy_records(root, args.copy_records)
    write_markdown(root, args.results)
    print(f"wrote {args.results} from the finished runs under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
