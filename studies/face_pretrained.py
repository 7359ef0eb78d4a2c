"""Face-pretrained backbone vs training from scratch, and the loss in the fine-tuning regime: docs/face-pretrained.md.

Reads only committed records, so the page rebuilds byte-identically (tests/test_face_pretrained_study.py):
  docs/runs/face_resnet/gpu_call*/records.json   scripts/gpu_campaign.py runs (face_resnet fine-tunes on one GPU)
  docs/runs/face_resnet/cpu_*/records.json       the same script's jobs that the GPU budget skipped, run on 2 CPU cores
  docs/runs/face_resnet/eval_*/report.json       `run.py evaluate` of the kept checkpoints, on the CPU
  docs/runs/recipe/curve-45ep/rafdb/resnet_small the from-scratch small ResNet's 45-epoch runs (studies/recipe.py)
  docs/runs/face_resnet/baselines/               the from-scratch models' matrix cells (studies/matrix.py) as they were
                                                 before face_resnet replaced any of them

    python studies/face_pretrained.py      # rewrite docs/face-pretrained.md from the records
"""

import csv
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.common import TRAIN_IMAGES, cell  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS = REPO_ROOT / "docs" / "runs"
PAGE = REPO_ROOT / "docs" / "face-pretrained.md"
METRICS = (("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("balanced", "balanced_accuracy"))
LOSS_TITLES = {"cosine_distance": "cosine-distance (AM-Softmax + Island)", "softmax": "softmax"}
LOSS_DATASETS = {"rafdb": "RAF-DB", "ferplus": "FER+"}  # where the loss comparison ran: dataset -> title


def campaign_records(root: Path = RUNS) -> list[dict]:
    records = []
    paths = [*sorted((root / "face_resnet").glob("gpu_call*/records.json")),
             *sorted((root / "face_resnet").glob("cpu_*/records.json"))]
    for path in paths:
        for name, record in json.loads(path.read_text()).items():
            records.append(record | {"name": name, "call": path.parent.name})
    return records


def scratch_records(root: Path = RUNS) -> dict[str, list[dict]]:
    """The from-scratch small ResNet on the RAF-DB carve, 45 epochs, 3 seeds per loss: {loss: [run.json, ...]}."""
    found = {}
    for path in sorted((root / "recipe" / "curve-45ep" / "rafdb" / "resnet_small").glob("*/seed*/run.json")):
        loss = "cosine_distance" if path.parts[-3].startswith("cosine_distance") else "softmax"
        found.setdefault(loss, []).append(json.loads(path.read_text()))
    return found


def on_gpu(record: dict) -> bool:
    return not record["device"].startswith("cpu")


def time_text(runs: list[dict]) -> str:
    """Mean wall time per run (validation included), per device: '48 s each on one H200; 1,371 s on 2 CPU cores'."""
    by_device: dict[str, list[float]] = {}
    for r in runs:
        device = (f"one {r['device'].removeprefix('NVIDIA ')}" if on_gpu(r)
                  else f"the CPU ({r['device'].removeprefix('cpu, ')}, {r.get('precision', 'fp32')})")
        by_device.setdefault(device, []).append(r["last"]["seconds"])
    return "; ".join(f"{sum(v) / len(v):,.0f} s {'each ' if len(v) > 1 else ''}on {device}"
                     for device, v in by_device.items()) + ", validation included"


def forward_gflops(name: str, size: int, channels: int) -> float:
    """Forward FLOPs of one face (torch's FlopCounterMode: 2 per multiply-add), a machine-independent cost."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fer.models import create_model

    model = create_model(name, 7, in_channels=channels).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    return counter.get_total_flops() / 1e9


def training_tflop(images: int, gflops: float) -> float:
    return images * 3 * gflops / 1e3  # forward + backward ~ 3 forwards


def percent_cells(values: dict[str, list[float]]) -> list[str]:
    return [cell(values[key]) if values[key] else "-" for _, key in METRICS]


def comparison_table(records: list[dict], scratch: dict[str, list[dict]]) -> list[str]:
    small, backbone = forward_gflops("resnet_small", 48, 1), forward_gflops("face_resnet", 112, 3)
    lines = ["| route | input | epochs | seeds | training compute | training time | "
             + " | ".join(t for t, _ in METRICS) + " |", "|---|---|---:|---:|---:|---|" + "---:|" * len(METRICS)]
    for loss, runs in sorted(scratch.items()):
        values = {key: [r[key] for r in runs] for _, key in METRICS}
        cpu = sum(r["cpu_s"] for r in runs) / len(runs) / 60
        compute = training_tflop(runs[0]["epochs"] * TRAIN_IMAGES["rafdb"], small)
        lines.append(f"| small ResNet from scratch, {LOSS_TITLES[loss]} | 48 px gray | {runs[0]['epochs']} | "
                     f"{len(runs)} | {compute:.0f} TFLOP | {cpu:.0f} CPU-min each (1 thread) | "
                     + " | ".join(percent_cells(values)) + " |")
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["job"]["dataset"] == "rafdb":
            groups.setdefault((r["job"]["loss"], r["job"]["lr"]), []).append(r)
    for (loss, lr), runs in sorted(groups.items()):
        values = {key: [r["last"][key] for r in runs] for _, key in METRICS}
        compute = training_tflop(runs[0]["job"]["epochs"] * runs[0]["n_train"], backbone)
        lines.append(f"| face_resnet from dlib's weights, {LOSS_TITLES[loss]}, lr {lr:g} | 112 px colour | "
                     f"{runs[0]['job']['epochs']} | {len(runs)} | {compute:.0f} TFLOP | {time_text(runs)} | "
                     + " | ".join(percent_cells(values)) + " |")
    # the same compute as the from-scratch schedule: the face_resnet runs' validation at that epoch (mid-schedule)
    budget = training_tflop(max(r["epochs"] for runs in scratch.values() for r in runs) * TRAIN_IMAGES["rafdb"], small)
    lines += ["", "At the from-scratch schedule's compute (" + f"{budget:.0f} TFLOP" + "), the face_resnet runs were at"
              " epoch " + ", ".join(sorted({str(max(1, round(budget / training_tflop(r['n_train'], backbone))))
                                            for r in records if r["job"]["dataset"] == "rafdb"}))
              + " of their 30, with validation accuracy "
              + "; ".join(f"{r['name']} {100 * r['history'][max(1, round(budget / training_tflop(r['n_train'], backbone))) - 1]['accuracy']:.2f} %"
                          for r in records if r["job"]["dataset"] == "rafdb")
              + " (mid-schedule, learning rate still high: a lower bound for a schedule of that length, not measured)."]
    return lines


def compared_runs(records: list[dict], dataset: str) -> dict[str, list[dict]]:
    """{loss: its runs} of the loss comparison: every seed at the learning rate the seeds after 0 repeated."""
    lr = {r["job"]["lr"] for r in records if r["job"]["dataset"] == dataset and r["job"]["seed"] > 0}
    return {loss: [r for r in records if r["job"]["dataset"] == dataset and r["job"]["loss"] == loss
                   and r["job"]["lr"] in lr] for loss in LOSS_TITLES}


def loss_table(records: list[dict], dataset: str, split: str) -> list[str]:
    lines = [f"| loss | seeds | {split}: " + " | ".join(t for t, _ in METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for loss, runs in compared_runs(records, dataset).items():
        values = {key: [r["last"][key] for r in runs] for _, key in METRICS}
        lines.append(f"| {LOSS_TITLES[loss]} | {len(runs)} | " + " | ".join(percent_cells(values)) + " |")
    return lines


SHIPPED_PAIRS = (  # (row, face_resnet report under docs/runs/face_resnet, the from-scratch model's cell in baselines/)
    ("rafdb, carve", "eval_rafdb_val", "rafdb_rafdb_val"),
    ("ferplus, PrivateTest", "eval_ferplus_private", "ferplus_ferplus_private"),
    ("fer2013, PrivateTest", "eval_fer2013_private", "fer2013_fer2013_private"),
    ("default, FER+ PrivateTest (7 classes)", "default_cpu/eval_ferplus_private", "default_ferplus_private"),
    ("default, RAF-DB carve re-detected", "default_cpu/eval_rafdb_val_detect", "default_rafdb_val"),
)


def loss_gaps(records: list[dict], dataset: str) -> dict[str, tuple[float, float]]:
    """{metric title: (cosine-distance minus softmax in points, the largest seed-to-seed range of either loss)}."""
    gaps, compared = {}, compared_runs(records, dataset)
    for title, key in METRICS[:2]:  # accuracy and macro-F1
        values = {loss: [r["last"][key] for r in runs] for loss, runs in compared.items()}
        mean = {loss: sum(v) / len(v) for loss, v in values.items()}
        gaps[title] = (100 * (mean["cosine_distance"] - mean["softmax"]), 100 * max(max(v) - min(v) for v in values.values()))
    return gaps


def loss_verdict(gaps_by_dataset: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """Each difference against its seed range, then what they say about the paper's claim (worked out, not typed)."""
    lines, clear = [], []
    for dataset, gaps in gaps_by_dataset.items():
        parts = []
        for metric, (gap, spread) in gaps.items():
            outside = abs(gap) > spread
            parts.append(f"{gap:+.2f} points of {metric} ({'outside' if outside else 'within'} the seed range,"
                         f" {spread:.2f})")
            if outside:
                clear.append((dataset, metric, gap))
        lines.append(f"{dataset}: cosine-distance minus softmax: " + ", ".join(parts) + ".")
    ahead = [f"{d} {m}" for d, m, g in clear if g > 0]
    behind = [f"{d} {m}" for d, m, g in clear if g < 0]
    if ahead and not behind:
        lines.append("The cosine-distance loss is ahead beyond seed noise on " + ", ".join(ahead) + ".")
    else:
        lines.append("So the paper's claim (the cosine-distance loss beats softmax) is not reproduced in this regime: "
                     + ("no difference lies outside the seed-to-seed range." if not clear else
                        "softmax is ahead beyond the seed-to-seed range on " + ", ".join(behind)
                        + (", cosine-distance on " + ", ".join(ahead) if ahead else "")
                        + "; every other difference lies within it."))
    return lines


def default_run_length(root: Path = RUNS) -> tuple[int, float]:
    """Epochs and training seconds of the CPU `default` run, from its metrics.csv (last row)."""
    with open(root / "face_resnet" / "default_cpu" / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return int(last["epoch"]), float(last["seconds"])


def shipped_table(root: Path = RUNS) -> list[str]:
    """Each kept face_resnet checkpoint, evaluated on the CPU, against the shipped from-scratch model of its dataset."""
    lines = ["| model, reported split | face_resnet: " + " | ".join(t for t, _ in METRICS)
             + " | from-scratch model: " + " | ".join(t for t, _ in METRICS) + " |", "|---|" + "---:|" * 6]
    for row, report, baseline in SHIPPED_PAIRS:
        ours = json.loads((root / "face_resnet" / report / "report.json").read_text())
        theirs = json.loads((root / "face_resnet" / "baselines" / f"{baseline}.none.json").read_text())
        lines.append(f"| {row} | " + " | ".join(f"{ours[k] * 100:.2f}" for _, k in METRICS)
                     + " | " + " | ".join(f"{theirs[k] * 100:.2f}" for _, k in METRICS) + " |")
    return lines


def build_page(root: Path = RUNS) -> str:
    records, scratch = campaign_records(root), scratch_records(root)
    epochs, seconds = default_run_length(root)
    throughput = sorted({round(r["images_per_second"], -2) for r in records if on_gpu(r)})
    cpu_runs = [r for r in records if not on_gpu(r)]
    seeds = {title: min(len(runs) for runs in compared_runs(records, dataset).values())
             for dataset, title in LOSS_DATASETS.items()}
    short = [f"{title} has {n}" for title, n in seeds.items() if n < 3]
    text = [
        "# Face-pretrained backbone (face_resnet)",
        "",
        "<!-- generated by studies/face_pretrained.py from docs/runs/face_resnet and docs/runs/recipe;"
        " do not edit -->",
        "",
        "`face_resnet` is dlib's face-recognition ResNet (public domain; fer/models/face_resnet_weights.md), ported exactly"
        " (tests/test_face_resnet.py checks dlib's own descriptors) and fine-tuned with its batch norms re-parametrised on"
        " training faces (fer/models/face_resnet_init.py). The fine-tunes below ran with scripts/gpu_campaign.py on one"
        f" GPU ({', '.join(f'{t:.0f}' for t in throughput[:1])}-{throughput[-1]:.0f} training images/s incl. validation)"
        + (f"; {len(cpu_runs)} jobs the GPU budget skipped ran with the same script on 2 CPU cores (bf16,"
           f" {min(r['images_per_second'] for r in cpu_runs):.0f}-{max(r['images_per_second'] for r in cpu_runs):.0f}"
           " images/s)" if cpu_runs else "")
        + "; the same recipe runs on the CPU through the configs `configs/*_face_resnet.yaml`.",
        "",
        "## RAF-DB: backbone vs from scratch (carved validation split, last-epoch weights)",
        "",
        "Each route at the end of its own schedule; mean +- standard deviation over seeds. The from-scratch runs are"
        " studies/recipe.py's 45-epoch curve (1 thread each); the face_resnet runs are scripts/gpu_campaign.py plan"
        " `rafdb` (bf16). Learning rates 1e-3 and 3e-4 were tried on seed 0 for each loss, on this same split (the"
        " RAF-DB protocol selects and reports on the carve).",
        "",
        *comparison_table(records, scratch),
        "",
        "## The loss in the fine-tuning regime",
        "",
        "Same recipe, same learning rate (1e-3, each loss's better one on RAF-DB seed 0), only the loss and head differ."
        " RAF-DB: the carve, last epoch. FER+: PublicTest (the selection split), last epoch, 8 classes, majority vote;"
        " no epoch is selected, so the losses compare on equal terms, but PublicTest is not the report split.",
        "",
        "RAF-DB:",
        "",
        *loss_table(records, "rafdb", "carve"),
        "",
        "FER+:",
        "",
        *loss_table(records, "ferplus", "PublicTest"),
        "",
        " ".join(loss_verdict({title: loss_gaps(records, dataset) for dataset, title in LOSS_DATASETS.items()}))
        + (f" {' and '.join(short)} seeds per loss, not 3 (the GPU campaign had no time for the rest)."
           if short else f" Each loss has {min(seeds.values())} seeds on each dataset."),
        "",
        "## Against the shipped from-scratch models (CPU evaluation, `run.py evaluate`)",
        "",
        "The kept checkpoints (rafdb: last epoch; FER+ and FER2013: best PublicTest epoch) on each dataset's reported"
        " split, beside the from-scratch model shipped for that dataset before (its matrix cell, kept in"
        f" docs/runs/face_resnet/baselines). The `default` is the FER+ fine-tune continued for {epochs} epochs on the"
        " union of FER+ and re-aligned RAF-DB on 2 CPU cores (`configs/default_face_resnet.yaml`,"
        f" {seconds:,.0f} s; records in docs/runs/face_resnet/default_cpu; best epoch on the union of the selection"
        " splits, which the RAF-DB carve is part of). `rafdb` and `default` won on every metric and ship; `ferplus`"
        " and `fer2013` keep their from-scratch models.",
        "",
        *shipped_table(root),
        "",
    ]
    return "\n".join(text)


def main() -> None:
    PAGE.write_text(build_page())
    print(f"wrote {PAGE.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
