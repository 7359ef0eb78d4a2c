"""Cross-dataset matrix: every shipped model (fer/weights/*.pt) on every test set, plus one card per model.

    python studies/matrix.py                      # evaluate every shipped model, write records, rebuild both sections
    python studies/matrix.py --models fer2013     # only these models (the other records stay)
    python studies/matrix.py --table-only         # rebuild both sections from the committed records
    python studies/matrix.py --cells-only         # accuracy only (fine beside other jobs); --cards-only: speed, idle

Test sets (COLUMNS): FER2013 PrivateTest; FER+ PrivateTest, majority vote (contempt excluded and counted for 7-class
models); RAF-DB validation, the stratified 10 % carve of train with seed 0 (the split the rafdb model was selected on,
flagged as such), re-detected and aligned by the face stage (--detect-faces) for models trained on re-aligned RAF-DB.
No photo column: shared/media holds two photos with a known expression (an angry man, a crying woman), not a labelled set.
Each cell is fer.evaluate.evaluate without and with flip TTA; its record (metrics, ECE, counts, checkpoint sha256) goes
to docs/runs/matrix/<model>/<column>.<tta>.json. The card (docs/runs/matrix/<model>/card.json) is read from the
checkpoint's stored config, metrics and notes, plus parameters, file size and measured speed (--threads torch threads).
Two sections are generated from the records only (tests/test_matrix.py checks both): the whole matrix and the cards in
docs/models-and-matrix.md (between the matrix markers), and the README's table of shipped models (between the models
markers: each model's network, training data and accuracy on each test set).
"""

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script from anywhere: the repository root holds the studies package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import timed  # noqa: E402
from studies.common import REPO_ROOT  # noqa: E402

RECORDS = REPO_ROOT / "docs" / "runs" / "matrix"
PAGE = REPO_ROOT / "docs" / "models-and-matrix.md"  # the whole matrix and the model cards
README = REPO_ROOT / "README.md"  # the shipped-models table
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
MODELS_START, MODELS_END = "<!-- models:start -->", "<!-- models:end -->"
# column -> (dataset, split, title); RAF-DB val is carved with seed 0, as every shipped model's training did.
COLUMNS = {
    "fer2013_private": ("fer2013", "private", "FER2013 PrivateTest"),
    "ferplus_private": ("ferplus", "private", "FER+ PrivateTest (majority vote)"),
    "rafdb_val": ("rafdb", "val", "RAF-DB validation (10 % carve, seed 0)"),
}
TTAS = ("none", "flip")
CARVE_SEED = 0


def cell_options(checkpoint: dict, dataset: str) -> dict:
    """How a model is evaluated on a dataset: FER+ contempt excluded for models without it; re-aligned framing for a
    dataset the model was trained on re-aligned."""
    trained = (checkpoint.get("config") or {}).get("data", {})
    exclude = ("contempt",) if dataset == "ferplus" and "contempt" not in checkpoint["class_names"] else ()
    return {"exclude_classes": exclude, "detect_faces": dataset in trained.get("realign", ())}


def evaluate_cell(model: str, column: str, tta: str, data_root=None) -> dict:
    """Evaluate one shipped model on one column; the compact record of the matrix."""
    from fer.checkpoint import load_checkpoint
    from fer.config import DataConfig
    from fer.evaluate import evaluate

    dataset, split, _ = COLUMNS[column]
    checkpoint = load_checkpoint(model)
    options = cell_options(checkpoint, dataset)
    with tempfile.TemporaryDirectory() as out:
        report = evaluate(model, DataConfig(dataset=dataset), split, out, data_root=data_root, tta_mode=tta,
                          seed=CARVE_SEED, device="cpu", **options)
    command = (f"python run.py evaluate --checkpoint {model} --dataset {dataset} --split {split} --tta {tta}"
               + (f" --exclude-classes {','.join(options['exclude_classes'])}" if options["exclude_classes"] else "")
               + (" --detect-faces" if options["detect_faces"] else ""))
    return {"model": model, "column": column, "tta": tta, "dataset": dataset, "split": split, **options,
            "exclude_classes": list(options["exclude_classes"]),
            **{key: report[key] for key in ("accuracy", "macro_f1", "balanced_accuracy", "n_samples", "n_excluded",
                                            "excluded", "n_no_face", "n_skipped")},
            "training_val_split": report["data"]["training_val_split"],
            "init_val_split": report["data"]["init_val_split"], "seed": report["data"]["seed"],
            "checkpoint_sha256": report["checkpoint"]["sha256"], "command": command,
            "ece": report["calibration"]["ece"], "temperature": report["calibration"]["temperature"]}


def card_calibration(checkpoint: dict) -> dict | None:
    """The card's summary of the checkpoint's calibration (fer.calibration): None for an uncalibrated one (T = 1)."""
    calibration = checkpoint.get("calibration")
    if not calibration:
        return None
    return {key: calibration.get(key) for key in ("temperature", "objective", "fitted_on", "n", "ece_before",
                                                  "ece_after", "nll_before", "nll_after", "bins")}


TIMING_KEYS = ("ms_per_face", "faces_per_s_batch64", "timing")  # a card's speed fields (model_card)


def timing_problems(root: Path, models: list[str]) -> list[str]:
    """Why --keep-timing cannot keep a model's recorded speed: no card yet, or a card that timed another architecture
    or input (speed does not depend on the weights or the temperature, but does on the model's shape)."""
    from fer.checkpoint import load_checkpoint

    problems = []
    for model in models:
        path = root / model / "card.json"
        if not path.is_file():
            problems.append(f"{path}: no card to keep the speed of")
        elif json.loads(path.read_text()).get("model_spec") != load_checkpoint(model)["model_spec"]:
            problems.append(f"{path}: timed another model than {model} is now")
    return problems


def model_card(model: str, threads: int = 1, repeats: int = 50) -> dict:
    """What the checkpoint says about its training, plus parameters, file size and measured speed."""
    import torch

    from fer.checkpoint import build_model, resolve_checkpoint
    from fer.evaluate import sha256_file
    from fer.inference import Classifier

    torch.set_num_threads(threads)
    path = resolve_checkpoint(model)
    classifier = Classifier.load(model)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config, metrics, notes = checkpoint.get("config") or {}, checkpoint.get("metrics") or {}, checkpoint.get("notes") or {}
    size, channels = classifier.input_size, classifier.channels
    faces = np.random.default_rng(0).integers(0, 256, (64, size, size) + ((3,) if channels == 3 else ()), dtype=np.uint8)
    one = 1000 * timed(lambda: classifier.predict(faces[:1]), repeats)
    per_s = 64 / timed(lambda: classifier.predict(faces), max(3, repeats // 5))
    return {
        "model": model, "sha256": sha256_file(path), "file_bytes": path.stat().st_size,
        # as trained: the Classifier's copy has its batch norms folded (fewer parameters)
        "parameters": int(sum(p.numel() for p in build_model(checkpoint["model_spec"]).parameters())),
        "class_names": list(checkpoint["class_names"]), "model_spec": checkpoint["model_spec"],
        "data": config.get("data", {}), "augment": config.get("augment", {}), "loss": config.get("loss", {}),
        "train": {k: v for k, v in config.get("train", {}).items() if k in ("epochs", "batch_size", "optimizer", "lr",
                                                                          "weight_decay", "schedule", "seed", "threads")},
        "best_epoch": metrics.get("epoch"), "train_seconds_to_best": metrics.get("seconds"),
        "hardware": notes.get("hardware", "not recorded"), "notes": notes,
        "warm_start": checkpoint.get("warm_start"),  # fine-tuned: the weights it started from
        "teachers": checkpoint.get("teachers"),  # distilled: the checkpoints it learned from
        "calibration": card_calibration(checkpoint),  # the temperature and the split it was fitted on
        "ms_per_face": round(one, 3), "faces_per_s_batch64": round(per_s),
        "timing": {"torch_threads": threads, "machine": platform.machine(), "processor": platform.processor() or "?",
                   "load_average_1min": round(os.getloadavg()[0], 2),  # above the core count: the speed is understated
                   "note": "random uint8 faces; speed does not depend on the pixels"},
    }


def write_json(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def collect(root: Path = RECORDS) -> tuple[list[dict], list[dict]]:
    """(cell records, cards) under root, sorted by model then column order then TTA."""
    cells = [json.loads(p.read_text()) for p in sorted(root.glob("*/*.*.json"))]
    cells.sort(key=lambda r: (r["model"], list(COLUMNS).index(r["column"]), TTAS.index(r["tta"])))
    cards = [json.loads(p.read_text()) for p in sorted(root.glob("*/card.json"))]
    return cells, cards


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _start_name(warm: dict, cards: list[dict]) -> str:
    """The warm start's name; a shipped name whose file has since been replaced reads "an earlier `name`"."""
    name = Path(warm["source"]).stem
    shipped = {c["model"]: c["sha256"] for c in cards}
    replaced = warm.get("sha256") and name in shipped and shipped[name] != warm["sha256"]
    return f"an earlier `{name}`" if replaced else f"`{name}`"


def _data_text(card: dict, cards: list[dict]) -> str:
    data = card["data"]
    sources = data.get("sources") or [data.get("dataset", "?")]
    realign = set(data.get("realign") or ())
    named = [s + (" (re-aligned)" if s in realign else "") for s in sources]
    spec = card["model_spec"]  # the model's input; a student's data may be larger (model.input_size, fer.data.view)
    text = " + ".join(named) + f", {spec.get('image_size', 48)} px, {'gray' if spec.get('channels', 1) == 1 else 'colour'}"
    warm = card.get("warm_start")
    if warm and warm.get("sha256"):  # the card's time and epochs are the fine-tune's; the start's are in its own card
        text += (f"; fine-tuned from {_start_name(warm, cards)} (sha256 {warm['sha256'][:12]}, trained on "
                 f"{' + '.join(warm['datasets'])})")
    elif warm:  # a pretrained backbone (fer.models.pretrained), not a fer checkpoint: no sha256 or datasets recorded
        text += f"; fine-tuned from `{Path(warm['source']).stem}`"
    for teacher in card.get("teachers") or ():
        text += f"; distilled from `{Path(teacher['source']).stem}` (sha256 {teacher['sha256'][:12]})"
    return text


def _recipe_text(card: dict) -> str:
    spec, loss, train, aug = card["model_spec"], card["loss"], card["train"], card["augment"]
    head = f"{spec['name']} ({spec['head']} head)"
    lossed = loss.get("name", "?") + (f" s={loss['scale']:g} m={loss['margin']:g}" if loss.get("name") == "cosine_distance" else "")
    return (f"{head}, {lossed}, {train.get('optimizer')} lr {train.get('lr'):g} wd {train.get('weight_decay'):g} "
            f"{train.get('schedule')}, batch {train.get('batch_size')}, erase {aug.get('erase', 0):g}")


def markdown(cells: list[dict], cards: list[dict]) -> str:
    """The docs/models-and-matrix.md section: the matrix, then the model cards. Built from the records only."""
    by_key = {(r["model"], r["column"], r["tta"]): r for r in cells}
    cards_by_model = {card["model"]: card for card in cards}
    lines = [START, "", "Generated by `python studies/matrix.py` from the records in docs/runs/matrix/ (each cell's "
             "record holds the `run.py evaluate` command that reproduces it); `--table-only` rebuilds this section.", "",
             "| model | test set | n | accuracy | macro-F1 | balanced accuracy | accuracy, flip TTA | ECE | notes |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    models = sorted({r["model"] for r in cells})
    for model in models:
        for column, (_, _, title) in COLUMNS.items():
            plain, flip = by_key.get((model, column, "none")), by_key.get((model, column, "flip"))
            if plain is None:
                continue
            notes = []
            if plain["excluded"]:
                notes.append("excluded: " + ", ".join(f"{k} {n:,}" for k, n in sorted(plain["excluded"].items())))
            if plain["detect_faces"]:
                notes.append(f"faces re-detected and aligned; no face found in {plain['n_no_face']:,} (counted as errors)")
            card = cards_by_model.get(model, {})
            if plain["training_val_split"] and card.get("best_epoch") == card.get("train", {}).get("epochs"):
                notes.append("this model's validation carve (last-epoch weights; no earlier epoch was picked on it)")
            elif plain["training_val_split"]:
                notes.append("this model's selection split (optimistic)")
            if plain.get("init_val_split"):
                notes.append("its warm start's selection split (optimistic)")
            lines.append(f"| `{model}` | {title} | {plain['n_samples']:,} | {_pct(plain['accuracy'])} | "
                         f"{_pct(plain['macro_f1'])} | {_pct(plain['balanced_accuracy'])} | "
                         f"{_pct(flip['accuracy']) if flip else '–'} | "
                         f"{_pct(plain['ece']) if plain.get('ece') is not None else '–'} | {'; '.join(notes)} |")
    lines += ["", "ECE: expected calibration error of the probabilities `predict` reports (the checkpoint's "
              "temperature applied), top label, 15 equal-width bins, no TTA.", "",
              "No photo column: shared/media has only two photos with a known expression (an angry man, a crying "
              "woman), not a labelled test set, so none is reported.", "",
              "Model cards (from each checkpoint's stored config, metrics and notes; speed measured by the runner, "
              "batch 1 and batch 64, torch on CPU):", "",
              "| model | training data | recipe | epochs (best at) | training time to best | hardware | parameters | "
              "file size | ms per face | faces/s (batch 64) |",
              "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for card in sorted(cards, key=lambda c: c["model"]):
        seconds = card["train_seconds_to_best"]
        lines.append(f"| `{card['model']}` | {_data_text(card, cards)} | {_recipe_text(card)} | {card['train'].get('epochs')} "
                     f"({card['best_epoch']}) | {f'{seconds / 60:.0f} min' if seconds else 'not recorded'} | "
                     f"{card['hardware']} | {card['parameters']:,} | {card['file_bytes'] / 1e6:.2f} MB | "
                     f"{card['ms_per_face']:.2f} ({_threads(card['timing']['torch_threads'])}) | "
                     f"{card['faces_per_s_batch64']:,} |")
    lines += ["", "Calibration (fer/calibration.py, `run.py calibrate`): the temperature T of probs = "
              "softmax(logits / T), fitted on the model's selection split (never a test split) by the objective named "
              "(top label: the top label's log loss; nll: the multiclass NLL; fer/calibration.py); expected "
              "calibration error, top label, 15 equal-width bins, on that split before and after:", "",
              "| model | temperature | objective | fitted on | n | ECE before | ECE after | NLL before | NLL after |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for card in sorted(cards, key=lambda c: c["model"]):
        cal = card.get("calibration")
        lines.append(f"| `{card['model']}` | " + (f"{cal['temperature']:.3f} | {cal.get('objective') or 'nll'} | "
                     f"{cal['fitted_on']} | {cal['n']:,} | "
                     f"{_pct(cal['ece_before'])} | {_pct(cal['ece_after'])} | {cal['nll_before']:.3f} | "
                     f"{cal['nll_after']:.3f} |" if cal else "1 (not calibrated) | – | – | – | – | – | – | – |"))
    lines += ["", END]
    return "\n".join(lines)


def headline(cells: list[dict], cards: list[dict]) -> str:
    """The README's table of shipped models: network, training data and accuracy per test set (no TTA). Records only."""
    by_key = {(r["model"], r["column"], r["tta"]): r for r in cells}
    lines = [MODELS_START, "",
             "| model | network | trained on | " + " | ".join(title.split(" (")[0] for _, _, title in COLUMNS.values())
             + " |", "| --- | --- | --- |" + " ---: |" * len(COLUMNS)]
    for card in sorted(cards, key=lambda c: c["model"]):
        model, data = card["model"], card["data"]
        accuracies = [by_key.get((model, column, "none")) for column in COLUMNS]
        realign = set(data.get("realign") or ())
        trained = " + ".join(source + (" (re-aligned)" if source in realign else "")
                             for source in data.get("sources") or [data.get("dataset", "?")])
        if card.get("warm_start"):
            trained += f" (fine-tuned from {_start_name(card['warm_start'], cards)})"
        lines.append(f"| `{model}` | {card['model_spec']['name']}, {card['parameters'] / 1e6:.2f} M | {trained} | "
                     + " | ".join(_pct(r["accuracy"]) if r else "–" for r in accuracies) + " |")
    lines += ["", "Accuracy without TTA. FER+ is the majority vote (contempt excluded for 7-class models); RAF-DB is "
              "the seeded 10 % validation carve, held out of training but used to select `default` and the earlier "
              "`default` that `ferplus` starts from, and to validate `rafdb` (optimistic for them; RAF-DB's test "
              "images are held out). Generated by `python studies/matrix.py "
              "--table-only` from `docs/runs/matrix/`; macro-F1, flip TTA, the notes per cell and the model cards: "
              "`docs/models-and-matrix.md`.", "", MODELS_END]
    return "\n".join(lines)


def section(text: str, start: str = START, end: str = END) -> str:
    """The generated section of a page's text, markers included."""
    if start not in text or end not in text:
        raise ValueError(f"page has no {start} ... {end} section")
    return text[text.index(start):text.index(end) + len(end)]


def update_page(path: Path, new: str, start: str = START, end: str = END) -> None:
    text = path.read_text()
    path.write_text(text.replace(section(text, start, end), new))


def main() -> None:
    from fer.checkpoint import shipped_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all of fer/weights/*.pt)")
    parser.add_argument("--columns", nargs="+", choices=tuple(COLUMNS), default=list(COLUMNS))
    parser.add_argument("--root", type=Path, default=RECORDS, help="record folder (default docs/runs/matrix)")
    parser.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the speed columns")
    parser.add_argument("--table-only", action="store_true", help="rebuild the generated sections from the records")
    part = parser.add_mutually_exclusive_group()  # accuracy runs anywhere; the cards' speed wants an idle machine
    part.add_argument("--cells-only", action="store_true", help="evaluate the cells, leave the cards as they are")
    part.add_argument("--cards-only", action="store_true", help="rewrite only the cards (speed: run on an idle machine)")
    parser.add_argument("--keep-timing", action="store_true", help="rewrite the cards but keep their recorded speed "
                        "(after a change that leaves the weights alone, such as a new temperature, on another machine)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    models = args.models or shipped_models()
    problems = timing_problems(args.root, models) if args.keep_timing and not args.table_only else []
    if problems:  # said before any cell is evaluated (minutes)
        parser.error("--keep-timing: " + "; ".join(problems) + " (time it: leave out --keep-timing, on an idle machine)")
    if not args.table_only:
        for model in models:
            for column in [] if args.cards_only else args.columns:
                for tta in TTAS:
                    record = evaluate_cell(model, column, tta, args.data_root)
                    write_json(record, args.root / model / f"{column}.{tta}.json")
                    print(f"{model} {column} tta {tta}: accuracy {record['accuracy']:.4f} over {record['n_samples']}",
                          flush=True)
            if not args.cells_only:
                card_path = args.root / model / "card.json"
                card = model_card(model, args.threads, repeats=1 if args.keep_timing else 50)
                if args.keep_timing:
                    card.update({key: json.loads(card_path.read_text())[key] for key in TIMING_KEYS})
                write_json(card, card_path)
    records = collect(args.root)
    if args.root.resolve() == RECORDS.resolve():
        update_page(PAGE, markdown(*records))
        update_page(README, headline(*records), MODELS_START, MODELS_END)
    print(markdown(*records))


if __name__ == "__main__":
    main()
