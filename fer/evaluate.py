"""Evaluation: a checkpoint on one split of a dataset -> metrics, confusion matrix and report files.

Top to bottom: load the checkpoint -> read the split (or detect and align the faces of raw photos) -> map the dataset's
classes onto the model's (class_map, explicit exclusions, both counted) -> refuse an incomplete split -> predict (with
test-time augmentation) -> scikit-learn metrics -> report.json, report.md, predictions.csv, confusion.png, embeddings.png.

The checkpoint's class names define the classes. A split is incomplete when a sample could not be read or when a split of
known official size (FER2013, FER+, RAF-DB) holds a different number of samples; evaluation then stops unless
allow_skipped, in which case the report states how many are missing (pytorch/vision references only warn).
"""

import csv
import dataclasses
import json
import logging
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

from fer import plots, tta
from fer.backends import load_classifier
from fer.config import Config, DataConfig
from fer.data.paths import dataset_path
from fer.data.readers import IMAGE_SUFFIXES, FaceSet
from fer.data.splits import SPLITS, load_eval_split
from fer.data.transforms import face_shape
from fer.face.model_file import sha256_of as sha256_file  # the report's checkpoint hash
from fer.labels import COMMON_ALIASES

log = logging.getLogger(__name__)

# Split reported after training: FER2013/FER+ PrivateTest; RAF-DB and class folders the validation part carved from train
# (their test images are held out from developers).
REPORT_SPLITS = {"fer2013": "private", "fer2013-csv": "private", "ferplus": "private", "rafdb": "val", "folder": "val"}
# Default split of `run.py evaluate`: the dataset's test split (a folder without split sub-folders is read whole).
TEST_SPLITS = {"fer2013": "private", "fer2013-csv": "private", "ferplus": "private", "rafdb": "test", "folder": "test"}
# Samples per split in the official releases (shared/data/README.md); FER+ rows = FER2013 rows, counting excluded rows.
_FER2013_SIZES = {"train": 28709, "public": 3589, "private": 3589}
OFFICIAL_SIZES = {**{("fer2013", s): n for s, n in _FER2013_SIZES.items()},
                  **{("fer2013-csv", s): n for s, n in _FER2013_SIZES.items()},
                  **{("ferplus", s): n for s, n in _FER2013_SIZES.items()},
                  ("rafdb", "train"): 12271, ("rafdb", "test"): 3068}
DEDUP_REASON = "duplicate_of_train"  # the excluded-count key fer.data.splits.load_eval_split uses
NO_FACE = "no face"  # extra predicted column when photos without a detected face are counted as errors
MAX_LISTED = 1000  # skipped / no-face paths written into report.json


# ---------------------------------------------------------------------------------------------------------------- inputs

def parse_class_map(text: str | None) -> dict[str, str]:
    """'anger=angry,sadness=sad' -> {'anger': 'angry', 'sadness': 'sad'}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--class-map: expected dataset_class=model_class, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def parse_names(text: str | None) -> tuple[str, ...]:
    """'contempt, unknown' -> ('contempt', 'unknown')."""
    return tuple(filter(None, (part.strip() for part in (text or "").split(","))))


def map_classes(faces: FaceSet, model_classes, class_map: dict[str, str] | None = None, exclude=()) -> FaceSet:
    """faces relabelled to indices into model_classes; classes named in exclude are dropped and counted per class.

    A dataset class that is neither a model class (after class_map and the common aliases) nor excluded is an error.
    """
    model_classes = tuple(model_classes)
    mapping = {**COMMON_ALIASES, **(class_map or {})}
    excluded_names = {name.lower() for name in exclude}
    new_index = np.full(len(faces.class_names), -1, dtype=np.int64)
    dropped, unknown = [], []
    for k, name in enumerate(faces.class_names):
        target = mapping.get(name, name)
        if {name.lower(), target.lower()} & excluded_names:
            dropped.append(k)
        elif target in model_classes:
            new_index[k] = model_classes.index(target)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{faces.name}: dataset class(es) {', '.join(unknown)} not among the model's classes "
                         f"({', '.join(model_classes)}); map them with --class-map {unknown[0]}=<class> or drop them "
                         f"with --exclude-classes {','.join(unknown)}")
    excluded = dict(faces.excluded)
    for k in dropped:
        excluded[faces.class_names[k]] = excluded.get(faces.class_names[k], 0) + int(np.sum(faces.labels == k))
    keep = np.flatnonzero(new_index[faces.labels] >= 0)
    result = faces.subset(keep)
    result.labels = new_index[result.labels]
    result.class_names = model_classes
    result.excluded = excluded
    return result


def _check_excluded_folders(faces: FaceSet, class_map: dict[str, str], exclude) -> None:
    """Class folders the reader left out (unknown to the model) must have been excluded explicitly."""
    mapping = {**COMMON_ALIASES, **class_map}
    allowed = {name.lower() for name in exclude}
    folders = [key for key in faces.excluded if key != DEDUP_REASON]
    unexpected = [key for key in folders if not {key.lower(), mapping.get(key, key).lower()} & allowed]
    if unexpected:
        raise ValueError(f"{faces.name}: class folder(s) {', '.join(unexpected)} not among the model's classes "
                         f"({', '.join(faces.class_names)}); map them with --class-map {unexpected[0]}=<class> or drop "
                         f"them with --exclude-classes {','.join(unexpected)}")


def _check_exclusions_used(faces: FaceSet, exclude, class_map: dict[str, str]) -> None:
    """An exclusion that names no class of the dataset is a typo, not a no-op."""
    mapping = {**COMMON_ALIASES, **class_map}
    known = {k.lower() for k in faces.excluded} | {n.lower() for n in faces.class_names}
    known |= {mapping.get(n, n).lower() for n in faces.class_names}
    unused = [name for name in exclude if name.lower() not in known]
    if unused:
        raise ValueError(f"{faces.name}: --exclude-classes {', '.join(unused)} names no class of the dataset "
                         f"(classes: {', '.join(faces.class_names)})")


def read_photos(folder: str | Path, model_classes, size: int, class_map: dict[str, str], detector,
                channels: int = 1) -> tuple[FaceSet, np.ndarray]:
    """Class-folder tree of raw photos -> (aligned faces, no_face mask (N,) bool).

    The largest detected face of each photo is aligned to (size, size), gray or BGR (channels 1 or 3); a photo without a face keeps an all-zero
    placeholder and is flagged in no_face (the caller counts it as a wrong prediction). Unreadable files are skipped.
    """
    from fer.face import align_face, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder not found: {folder}")
    mapping = {**COMMON_ALIASES, **class_map}
    items, excluded = [], Counter()
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = mapping.get(class_dir.name, mapping.get(class_dir.name.lower(), class_dir.name.lower()))
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if name not in model_classes:
            excluded[class_dir.name] += len(files)
            continue
        items += [(str(p), model_classes.index(name)) for p in files]
    images, labels, paths, skipped, no_face, multiple = [], [], [], [], [], 0
    for path, label in items:
        try:
            image_bgr = read_image(path)
        except (OSError, ValueError) as error:
            skipped.append((path, str(error)))
            continue
        found = detector.detect(image_bgr)
        multiple += len(found) > 1
        if found:
            face = max(found, key=lambda f: f.box[2] * f.box[3])  # the photo's subject: the largest face
            images.append(align_face(image_bgr, face, size, channels=channels))
        else:
            images.append(np.zeros(face_shape(size, channels), np.uint8))
        no_face.append(not found)
        labels.append(label)
        paths.append(path)
    if multiple:
        log.info("%s: %d photo(s) with several faces; the largest face was used", folder, multiple)
    stacked = np.stack(images) if images else np.zeros((0, *face_shape(size, channels)), np.uint8)
    faces = FaceSet(stacked, np.asarray(labels, np.int64), paths, tuple(model_classes), skipped, dict(excluded),
                    f"photos:{folder}")
    return faces, np.asarray(no_face, dtype=bool)


def completeness_problems(faces: FaceSet, dataset: str, split: str) -> list[str]:
    """Why the split is not whole: unreadable samples, or a count that differs from the official split size."""
    problems = []
    if faces.skipped:
        first = "; ".join(f"{path} ({reason})" for path, reason in faces.skipped[:3])
        problems.append(f"{len(faces.skipped)} sample(s) of {faces.name} could not be read, first: {first}")
    expected = OFFICIAL_SIZES.get((dataset, split))
    listed = len(faces) + len(faces.skipped) + sum(faces.excluded.values())
    if expected is not None and listed != expected:
        problems.append(f"{faces.name}: {listed} samples found (evaluated + unreadable + excluded), the official split "
                        f"has {expected}")
    return problems


# --------------------------------------------------------------------------------------------------------------- metrics

def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names) -> dict:
    """scikit-learn metrics; y_pred -1 means 'no prediction' (no face found) and counts as an error.

    Macro-F1 averages over the classes present in y_true; per_class lists every model class.
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be equal-length non-empty 1-D arrays, got {y_true.shape} and {y_pred.shape}")
    num_classes = len(class_names)
    labels = list(range(num_classes))
    present = sorted(set(y_true.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    no_prediction = bool((y_pred < 0).any())
    columns = labels + ([-1] if no_prediction else [])
    counts = confusion_matrix(y_true, y_pred, labels=columns)[:num_classes]  # (K, K [+ 1])
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # -1 is a predicted label with no true samples; that is intended
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "macro_f1_classes": [class_names[k] for k in present],
        "per_class": {name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                             "support": int(support[k])} for k, name in enumerate(class_names)},
        "confusion_matrix": {"true": list(class_names), "predicted": list(class_names) + ([NO_FACE] if no_prediction else []),
                             "counts": counts.tolist(), "normalized": np.round(normalized, 6).tolist()},
    }


# ------------------------------------------------------------------------------------------------------------ evaluation

def evaluate(checkpoint: str | Path | None, data_cfg: DataConfig, split: str | None, out_dir: str | Path,
             data_root: str | Path | None = None, tta_mode: str = "none", dedup_clean: bool = False, exclude_classes=(),
             allow_skipped: bool = False, detect_faces: bool = False, batch_size: int = 256, projection: str = "pca",
             seed: int | None = None, backend: str = "torch", device: str = "cpu") -> dict:
    """Evaluate a checkpoint (None: the shipped default, a name or a path) on one split; write the report into out_dir.

    data_cfg names the dataset, its location (path), class_map and, for folders, exclude_unknown (unknown class folders
    dropped and counted without being listed in exclude_classes). Image size and channels are always the model's.
    split None: the dataset's test split. seed: carving of a 'val' split (None: the checkpoint's training seed).
    backend: torch, onnxruntime or opencv (fer.backends); checkpoint may then also be a fer .onnx file.
    Returns the report dict (also written as report.json).
    """
    started = time.perf_counter()
    if tta_mode not in tta.MODES:
        raise ValueError(f"unknown TTA mode {tta_mode!r}; expected one of {', '.join(tta.MODES)}")
    if projection not in plots.PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; expected one of {', '.join(plots.PROJECTIONS)}")
    if data_cfg.dataset not in SPLITS:
        raise ValueError(f"unknown dataset {data_cfg.dataset!r}; expected one of {', '.join(SPLITS)}")
    split = split or TEST_SPLITS[data_cfg.dataset]
    if split not in SPLITS[data_cfg.dataset]:
        raise ValueError(f"{data_cfg.dataset}: unknown split {split!r}; expected one of {', '.join(SPLITS[data_cfg.dataset])}")
    exclude_classes = tuple(exclude_classes)

    classifier = load_classifier(checkpoint, backend, device=device)
    ckpt, spec = classifier.checkpoint, classifier.checkpoint["model_spec"]
    model_classes = tuple(classifier.class_names)
    size, channels = classifier.input_size, classifier.channels
    trained = ckpt.get("config") or {}
    trained_data = trained.get("data", {})
    same_dataset = data_cfg.dataset in (trained_data.get("dataset"), *trained_data.get("sources", ()))  # mixed: a source
    if seed is None:
        seed = trained.get("train", {}).get("seed", 0) if same_dataset else 0
    if split == "val" and same_dataset:  # recarve exactly the validation part the model was selected on
        data_cfg = dataclasses.replace(data_cfg, val_fraction=trained["data"]["val_fraction"])
    data_cfg = dataclasses.replace(data_cfg, image_size=size, channels=channels, max_per_class=None)  # the model's input
    location = dataset_path(data_cfg.dataset, data_cfg.path, data_root)

    if data_cfg.dataset in trained_data.get("realign", ()) and not detect_faces:
        log.warning("%s was trained on %s re-aligned through the face stage; --detect-faces measures it on that framing",
                    Path(ckpt["path"]).name, data_cfg.dataset)
    if dedup_clean and split in ("train", "val"):
        raise ValueError(f"--dedup-clean drops images that also occur in train; it applies to test splits, not {split!r}")
    no_face = None
    if detect_faces:
        if dedup_clean:
            raise ValueError("--dedup-clean compares face pixels with the train split and does not apply to --detect-faces")
        faces, no_face = _read_photo_split(data_cfg, split, location, model_classes, seed, data_root)
        if data_cfg.dataset == "folder":
            _check_excluded_folders(faces, data_cfg.class_map, exclude_classes)
    else:
        folder = data_cfg.dataset == "folder"
        read_cfg = dataclasses.replace(data_cfg, exclude_unknown=True) if folder else data_cfg  # unknown folders checked below
        faces = load_eval_split(read_cfg, split, seed, data_root, class_names=model_classes, dedup_clean=dedup_clean)
        if folder and not data_cfg.exclude_unknown:
            _check_excluded_folders(faces, data_cfg.class_map, exclude_classes)
    _check_exclusions_used(faces, exclude_classes, data_cfg.class_map)
    # Folder readers already applied class_map to the folder names; applying it twice would chain mappings.
    mapped = map_classes(faces, model_classes, None if data_cfg.dataset == "folder" else data_cfg.class_map, exclude_classes)
    if no_face is not None and len(mapped) != len(faces):  # exclusions dropped photos: keep the no-face flags in step
        kept = set(mapped.paths)
        no_face = no_face[[path in kept for path in faces.paths]]
    faces = mapped

    problems = completeness_problems(faces, data_cfg.dataset, split)
    if problems and not allow_skipped:
        raise ValueError("; ".join(problems) + ". Refusing to report on an incomplete split; --allow-skipped reports "
                         "anyway and states the count")
    for problem in problems:
        log.warning("reporting anyway (allow_skipped): %s", problem)
    if len(faces) == 0:
        raise ValueError(f"{faces.name}: no samples left to evaluate (excluded: {faces.excluded})")

    embeddings, probs = tta.predict_faces(classifier, faces.images, tta_mode, batch_size)
    if len(probs) != len(faces):
        raise RuntimeError(f"evaluated {len(probs)} samples, the split holds {len(faces)}")
    y_pred = probs.argmax(1)
    if no_face is not None:
        y_pred[no_face] = -1
    metrics = compute_metrics(faces.labels, y_pred, model_classes)

    n_no_face = int(no_face.sum()) if no_face is not None else 0
    report = {
        **metrics,
        "n_samples": len(faces),
        "n_skipped": len(faces.skipped),
        "n_excluded": int(sum(faces.excluded.values())),
        "n_no_face": n_no_face,
        "excluded": dict(faces.excluded),
        "skipped": [list(item) for item in faces.skipped[:MAX_LISTED]],
        "no_face": [p for p, flag in zip(faces.paths, no_face) if flag][:MAX_LISTED] if n_no_face else [],
        "incomplete": problems,
        "tta": tta_mode,
        "checkpoint": {"path": str(Path(ckpt["path"]).resolve()), "sha256": sha256_file(ckpt["path"]),
                       "class_names": list(model_classes), "model": spec,
                       "trained_on": trained.get("data", {}).get("dataset")},
        "data": {"dataset": data_cfg.dataset, "path": str(Path(location).resolve()), "split": split, "name": faces.name,
                 "n_files": len(faces) + len(faces.skipped), "n_listed": len(faces) + len(faces.skipped) + int(sum(faces.excluded.values())),
                 "dedup_clean": dedup_clean, "class_map": dict(data_cfg.class_map), "exclude_classes": list(exclude_classes),
                 "detect_faces": detect_faces, "seed": seed,
                 "val_fraction": data_cfg.val_fraction if split == "val" else None,
                 "training_val_split": split == "val" and same_dataset,
                 # a warm-started model's starting weights were trained and selected with this dataset's carve
                 "init_val_split": split == "val"
                 and data_cfg.dataset in (ckpt.get("warm_start") or {}).get("datasets", ())},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(report, out_dir, faces, y_pred, probs, embeddings, no_face, projection,
                 normalize=spec.get("head") == "cosine")
    log.info("%s on %s: accuracy %.4f, balanced %.4f, macro-F1 %.4f over %d samples (%.1f s); report in %s",
             Path(ckpt["path"]).name, faces.name, report["accuracy"], report["balanced_accuracy"], report["macro_f1"],
             report["n_samples"], report["seconds"], out_dir)
    return report


def _read_photo_split(data_cfg: DataConfig, split: str, location: Path, model_classes, seed: int,
                      data_root) -> tuple[FaceSet, np.ndarray]:
    """Faces found and aligned by the face stage, with the no-face mask: raw photos for folders, the dataset's own
    crops (re-detected inside the crop, fer.face.recrop) for the dataset layouts."""
    try:
        from fer.face import FaceDetector
    except ImportError as error:
        raise ValueError(f"--detect-faces needs the face stage (fer.face.detect, fer.face.align): {error}") from error
    if data_cfg.dataset == "folder":
        folder = location / split if (location / split).is_dir() else location
        return read_photos(folder, model_classes, data_cfg.image_size, data_cfg.class_map, FaceDetector(),
                           data_cfg.channels)
    from fer.data.realign import realign_cached
    from fer.data.splits import native_config

    native = load_eval_split(native_config(data_cfg), split, seed, data_root)
    faces, found, manifest = realign_cached(native, data_cfg.dataset, location, data_cfg.image_size, data_cfg.channels)
    faces.name = f"{native.name} (faces re-detected and aligned)"
    if not found.all():
        log.warning("%s: the face stage found no face in %d of %d crops; counted as errors (listed in report.json and "
                    "%s)", native.name, int((~found).sum()), len(found), manifest)
    return faces, ~found


def evaluate_after_training(cfg: Config, checkpoint_path: str | Path, data_root: str | Path | None = None) -> dict:
    """Evaluate a freshly trained checkpoint on the dataset's report split into <cfg.train.out_dir>/eval/.

    dataset mixed: on each source's report split into eval/<source>/ (returns {source: report}), FER+ contempt excluded
    (counted) for the 7 classes. A re-aligned dataset is evaluated with detect_faces: the framing it was trained on.
    """
    out = Path(cfg.train.out_dir) / "eval"
    if cfg.data.dataset != "mixed":
        return _evaluate_report_split(cfg, cfg.data, checkpoint_path, out, data_root)
    from fer.data.mixed import source_config

    return {source: _evaluate_report_split(cfg, source_config(cfg.data, source), checkpoint_path, out / source, data_root)
            for source in cfg.data.sources}


def _evaluate_report_split(cfg: Config, data_cfg: DataConfig, checkpoint_path, out: Path, data_root) -> dict:
    split = REPORT_SPLITS[data_cfg.dataset]
    exclude = ("contempt",) if data_cfg.dataset == "ferplus" and cfg.data.dataset == "mixed" else ()
    report = evaluate(checkpoint_path, data_cfg, split, out, data_root=data_root, seed=cfg.train.seed,
                      device=cfg.train.device, detect_faces=data_cfg.dataset in data_cfg.realign, exclude_classes=exclude)
    log.info("evaluation on %s/%s:\n%s", data_cfg.dataset, split, format_summary(report))
    return report


# --------------------------------------------------------------------------------------------------------------- reports

def format_summary(report: dict) -> str:
    """Plain-text summary table: overall metrics, per-class precision / recall / F1 / support, confusion counts."""
    data = report["data"]
    lines = [f"{data['name']}, split {data['split']}: {report['n_samples']:,} samples, tta {report['tta']}, "
             f"skipped {report['n_skipped']}, excluded {report['n_excluded']}, no face {report['n_no_face']}",
             f"accuracy {report['accuracy']:.4f}   balanced accuracy {report['balanced_accuracy']:.4f}   "
             f"macro-F1 {report['macro_f1']:.4f}", ""]
    width = max(len(name) for name in report["per_class"]) + 2
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
    for name, row in report["per_class"].items():
        lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}{row['support']:>9,}")
    cm = report["confusion_matrix"]
    cell = max(7, max(len(name) for name in cm["predicted"]) + 1)
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * width + "".join(f"{name[:cell - 1]:>{cell}}" for name in cm["predicted"])]
    for name, row in zip(cm["true"], cm["counts"]):
        lines.append(f"{name:<{width}}" + "".join(f"{count:>{cell}}" for count in row))
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    data, ckpt, cm = report["data"], report["checkpoint"], report["confusion_matrix"]
    lines = [f"# Evaluation: {data['dataset']} / {data['split']}", "",
             f"- checkpoint: `{ckpt['path']}` (sha256 `{ckpt['sha256'][:16]}…`, {ckpt['model']['name']}, "
             f"head {ckpt['model']['head']}, classes {', '.join(ckpt['class_names'])})",
             f"- data: `{data['path']}`, split `{data['split']}` ({data['name']}), {data['n_listed']:,} listed, "
             f"dedup_clean {data['dedup_clean']}, detect_faces {data['detect_faces']}",
             f"- evaluated {report['n_samples']:,} samples; skipped (unreadable) {report['n_skipped']}; "
             f"excluded {report['n_excluded']} {report['excluded'] or ''}; no face {report['n_no_face']}; tta `{report['tta']}`"]
    if data.get("training_val_split"):
        lines.append("- note: this is the validation part the training run carved from train (seed "
                     f"{data['seed']}); best.pt was selected on it, so its accuracy here is optimistic")
    for problem in report["incomplete"]:
        lines.append(f"- **incomplete split, reported with --allow-skipped:** {problem}")
    lines += ["", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {report[key]:.4f} |" for name, key in
              (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("macro-F1", "macro_f1"))]
    lines += ["", "| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']:,} |"
              for name, r in report["per_class"].items()]
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(cm["predicted"]) + " |", "| --- |" + " ---: |" * len(cm["predicted"])]
    lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |" for name, row in zip(cm["true"], cm["counts"])]
    lines += ["", "![confusion matrix](confusion.png)", "", "![embeddings](embeddings.png)", ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path, faces: FaceSet, y_pred: np.ndarray, probs: np.ndarray,
                 embeddings: np.ndarray, no_face: np.ndarray | None, projection: str = "pca", normalize: bool = False) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(faces.class_names)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "predicted", "confidence"])
        for path, true, pred, p in zip(faces.paths, faces.labels, y_pred, probs):
            writer.writerow([path, names[true], names[pred] if pred >= 0 else NO_FACE, f"{p.max():.4f}"])
    cm = report["confusion_matrix"]
    title = f"{report['data']['dataset']}/{report['data']['split']}: accuracy {report['accuracy']:.3f}, n={report['n_samples']:,}"
    plots.plot_confusion(np.array(cm["counts"]), cm["true"], cm["predicted"], out / "confusion.png", title)
    has_face = ~no_face if no_face is not None else np.ones(len(faces), bool)
    report["embeddings_plotted"] = plots.plot_embeddings(embeddings[has_face], faces.labels[has_face], names,
                                                         out / "embeddings.png", projection, normalize)
    report["embeddings_projection"] = projection + (" of L2-normalised embeddings" if normalize else "")
    with open(out / "report.json", "w") as f:
        json.dump(report, f, indent=2)
    (out / "report.md").write_text(report_markdown(report))
