#!/usr/bin/env python
"""Loss ablation (paper Tables 1-3): train the grid of runs not finished yet, then write docs/results.md.

Resumable: finished runs (<root>/<dataset>/<variant>/seed<k>/run.json) are skipped, an interrupted run resumes from its
last.pt. Meant to run in the background:

    FER_DATA=/path/to/data nohup python benchmarks/ablate.py --epochs 30 --budget-minutes 600 \
        > runs/ablation.log 2>&1 &

    python benchmarks/ablate.py --dry-run                  # list the runs and the time they need
    python benchmarks/ablate.py --results-only             # rewrite docs/results.md from the finished runs
    python benchmarks/ablate.py --results-only --copy-records docs/runs/ablation   # copy the run records to commit
    python benchmarks/ablate.py --results-only --root docs/runs/ablation --longer-root docs/runs/recipe/curve-45ep
                                                              # rebuild docs/results.md from committed records

Time per run, one torch thread per run, two runs side by side on 2 cores: mini-Xception ~34 s per FER2013 epoch and
~13 s per RAF-DB epoch; resnet_small ~20 s per RAF-DB epoch and ~50 s per FER2013 epoch; plus ~20 s of data reading and evaluation.
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer import ablation  # noqa: E402


def numbers(kind):
    return lambda text: tuple(kind(part) for part in text.split(",") if part.strip())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/ablation", help="one folder per run below this")
    p.add_argument("--base", default="configs/fer2013_mini_xception_cosine.yaml",
                   help="base config: augmentation, optimiser, schedule, batch size shared by every run")
    p.add_argument("--datasets", type=lambda t: tuple(t.split(",")), default=("rafdb", "fer2013"))
    p.add_argument("--seeds", type=numbers(int), default=(0, 1, 2))
    p.add_argument("--tables", type=numbers(int), default=(1, 2, 3), help="3: losses, 1: margin grid, 2: scale grid")
    p.add_argument("--margins", type=numbers(float), default=ablation.DEFAULT_MARGINS, help="Table 1 grid at s = 10")
    p.add_argument("--scales", type=numbers(float), default=ablation.DEFAULT_SCALES, help="Table 2 grid at m = 0.35")
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
            ablation.copy_records(args.root, args.copy_records)
        ablation.write_results(args.root, args.results, args.longer_root)
        print(f"wrote {args.results} from {len(ablation.collect(args.root))} finished run(s) under {args.root}")
        return 0
    runs = ablation.grid(args.datasets, args.seeds, args.tables, args.margins, args.scales, args.softmax_heads,
                         args.stronger_models, args.balanced_sampling)
    if args.only:
        runs = [run for run in runs if args.only in run.name]
    if args.dry_run:
        finished = ablation.collect(args.root)
        done = {row["name"] for row in finished}
        todo = [run for run in runs if run.name not in done]
        seconds = [ablation.estimate_seconds(run, finished, args.epochs, args.max_per_class) for run in todo]
        for run, s in zip(todo, seconds):
            print(f"{run.name:55s} ~{s / 60:5.1f} min")
        print(f"{len(todo)} of {len(runs)} runs to do, about {sum(seconds) / 3600:.1f} wall-hours")
        return 0
    command = "python benchmarks/ablate.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    ablation.run_grid(runs, args.base, args.root, args.epochs, args.max_per_class, args.data_root, args.budget_minutes,
                      args.threads, command, args.results)
    if args.copy_records:
        ablation.copy_records(args.root, args.copy_records)
    ablation.write_results(args.root, args.results, args.longer_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
