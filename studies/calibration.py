"""Which objective fits the temperature: the top label's log loss against the multiclass NLL (fer/calibration.py).

For each shipped model: its uncalibrated logits on its selection split (read as `run.py calibrate` reads it, never a
test split), a temperature fitted by each objective on the whole split (what `run.py calibrate --objective` stores),
and the same fit judged on data it did not see: the split cut into random halves, T fitted on one half and ECE
measured on the other, both ways, REPEATS times. The held-out figure is the one that tells a better objective from a
fit to the 15 bins' noise. Records: docs/runs/calibration/<model>.json; the page section in docs/models-and-matrix.md
is rebuilt from them.

    python studies/calibration.py                # evaluate every shipped model (minutes), write records and page
    python studies/calibration.py --table-only   # rebuild the page section from the records
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.calibration import (DEFAULT_OBJECTIVE, OBJECTIVES, expected_calibration_error,  # noqa: E402
                             fit_temperature, nll, softmax, top_label_nll)
from studies.matrix import PAGE, update_page  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS = REPO_ROOT / "docs" / "runs" / "calibration"
START, END = "<!-- calibration-objective:start -->", "<!-- calibration-objective:end -->"
REPEATS, SEED = 20, 0  # 20 random halvings, both ways: 40 held-out ECEs per objective


def fit_and_measure(logits: np.ndarray, labels: np.ndarray, objective: str) -> dict:
    temperature = fit_temperature(logits, labels, objective)
    return {"temperature": round(temperature, 6),
            "ece": round(expected_calibration_error(softmax(logits, temperature), labels), 6),
            "nll": round(nll(logits, labels, temperature), 6),
            "top_label_nll": round(top_label_nll(logits, labels, temperature), 6)}


def held_out_ece(logits: np.ndarray, labels: np.ndarray, objective: str, repeats: int = REPEATS,
                 seed: int = SEED) -> list[float]:
    """ECE on one half of the split with T fitted on the other, both ways, for `repeats` random halvings."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        halves = order[:len(order) // 2], order[len(order) // 2:]
        for fit_on, judge_on in (halves, halves[::-1]):
            temperature = fit_temperature(logits[fit_on], labels[fit_on], objective)
            values.append(expected_calibration_error(softmax(logits[judge_on], temperature), labels[judge_on]))
    return values


def compare(logits: np.ndarray, labels: np.ndarray, repeats: int = REPEATS) -> tuple[dict, dict]:
    """Per objective: the whole-split fit and the held-out ECE's mean and standard deviation; and the paired
    comparison (the same halves judge both objectives): top_label minus nll per held-out half."""
    results, values = {}, {}
    for objective in OBJECTIVES:
        values[objective] = np.array(held_out_ece(logits, labels, objective, repeats))  # same seed: same halves
        results[objective] = {**fit_and_measure(logits, labels, objective),
                              "held_out_ece_mean": round(float(values[objective].mean()), 6),
                              "held_out_ece_std": round(float(values[objective].std()), 6),
                              "held_out_n": len(values[objective])}
    difference = values["top_label"] - values["nll"]
    paired = {"mean": round(float(difference.mean()), 6), "std": round(float(difference.std()), 6),
              "top_label_lower": int((difference < 0).sum()), "n": len(difference)}
    return results, paired


def model_record(model: str, data_root=None) -> dict:
    """The comparison for one shipped model on its selection split (all its sources together)."""
    from fer.calibration import read_selection_logits
    from fer.inference import Classifier

    logits, labels, fitted_on, _ = read_selection_logits(Classifier.load(model), data_root=data_root)
    objectives, paired = compare(logits, labels)
    return {"model": model, "fitted_on": fitted_on, "n": int(len(labels)),
            "accuracy": round(float(np.mean(logits.argmax(axis=1) == labels)), 6),
            "ece_uncalibrated": round(expected_calibration_error(softmax(logits), labels), 6),
            "shipped_objective": DEFAULT_OBJECTIVE, "repeats": REPEATS, "seed": SEED,
            "objectives": objectives, "paired_held_out_difference": paired,
            "command": "python studies/calibration.py"}


def collect(root: Path = RECORDS) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(root.glob("*.json"))]


def markdown(records: list[dict]) -> str:
    lines = [START, "", "Which objective fits the temperature (generated by `python studies/calibration.py` from "
             "docs/runs/calibration/): each shipped model's selection split, T fitted by each objective on the whole "
             f"split, and held out: T fitted on a random half and ECE measured on the other half, both ways, "
             f"{REPEATS} halvings (mean ± standard deviation of the {2 * REPEATS} values). The shipped temperatures "
             f"use the `{DEFAULT_OBJECTIVE}` objective.", "",
             "| model | n | objective | T | ECE, whole split | ECE, held-out halves | NLL | top-label log loss |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for record in records:
        for objective, result in record["objectives"].items():
            lines.append(f"| `{record['model']}` | {record['n']:,} | {objective} | {result['temperature']:.3f} | "
                         f"{100 * result['ece']:.2f} % | {100 * result['held_out_ece_mean']:.2f} ± "
                         f"{100 * result['held_out_ece_std']:.2f} % | {result['nll']:.4f} | "
                         f"{result['top_label_nll']:.4f} |")
    lines += ["", "Paired on the same held-out halves (top_label minus nll, in ECE points):", "",
              "| model | mean difference | standard deviation | halves where top_label is lower |",
              "| --- | ---: | ---: | ---: |"]
    for record in records:
        paired = record["paired_held_out_difference"]
        lines.append(f"| `{record['model']}` | {100 * paired['mean']:+.2f} | {100 * paired['std']:.2f} | "
                     f"{paired['top_label_lower']} of {paired['n']} |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    from fer.checkpoint import shipped_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    parser.add_argument("--table-only", action="store_true", help="rebuild the page section from the records")
    args = parser.parse_args()
    if not args.table_only:
        RECORDS.mkdir(parents=True, exist_ok=True)
        for model in args.models or shipped_models():
            record = model_record(model, args.data_root)
            (RECORDS / f"{model}.json").write_text(json.dumps(record, indent=1) + "\n")
            print(f"{model}: " + "; ".join(f"{o} T {r['temperature']:.3f} ECE {100 * r['ece']:.2f} % held out "
                                           f"{100 * r['held_out_ece_mean']:.2f} %"
                                           for o, r in record["objectives"].items()), flush=True)
    update_page(PAGE, markdown(collect()), START, END)
    print(markdown(collect()))


if __name__ == "__main__":
    main()
