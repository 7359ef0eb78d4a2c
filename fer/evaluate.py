"""Evaluation: a checkpoint on one split of a dataset -> metrics, confusion matrix and report files.

Top to bottom: load the checkpoint -> read the split (or detect and align the faces of raw photos) and map the dataset's
classes onto the model's (fer.evaluation.faces) -> refuse an incomplete split -> predict (with test-time augmentation)
-> scikit-learn metrics (fer.evaluation.metrics) -> report.json, report.md, predictions.csv, confusion.png,
embeddings.png (fer.evaluation.report). This module runs those parts; the choices of a run are one EvalOptions.

The checkpoint's class names define the classes. A split is incomplete when a sample could not be read or when a split of
known official size (FER2013, FER+, RAF-DB) holds a different number of samples; evaluation then stops unless
allow_skipped, in which case the report states how many are missing (pytorch/vision references only warn).
"""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fer import plots, tta
from fer.backends import load_classifier
from fer.calibration import report_calibration
from fer.config import Config, DataConfig
from fer.data import mixed, registry
from fer.data.paths import dataset_path
from fer.evaluation.faces import (completeness_problems, map_classes, parse_class_map, parse_names,
                                  read_photos, read_split)
from fer.evaluation.metrics import NO_FACE, compute_metrics
from fer.evaluation.report import MAX_LISTED, format_summary, report_markdown, write_report
from fer.face.model_file import sha256_of as sha256_file  # the report's checkpoint hash

# Names other modules import from here: the entry points, and the parts' public names for the CLI and the studies.
__all__ = ["EvalOptions", "evaluate", "evaluate_after_training", "REPORT_SPLITS", "TEST_SPLITS", "OFFICIAL_SIZES",
           "NO_FACE", "completeness_problems", "compute_metrics", "format_summary", "map_classes", "parse_class_map",
           "parse_names", "read_photos", "report_markdown", "sha256_file", "write_report"]

log = logging.getLogger(__name__)

# Split reported after training and `run.py evaluate`'s default split, per dataset (fer.data.registry's records).
REPORT_SPLITS = {name: registry.get(name).report_split for name in registry.evaluable()}
TEST_SPLITS = {name: registry.get(name).test_split for name in registry.evaluable()}
# Samples per (dataset, split) in the official releases.
OFFICIAL_SIZES = {(name, split): n for name in registry.evaluable() for split, n in registry.get(name).official_sizes.items()}


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: which faces (data_root, dedup_clean, exclude_classes, detect_faces, seed), how to predict
    (tta, batch_size, backend, device) and what to refuse or plot (allow_skipped, projection).

    seed: carving of a 'val' split (None: the checkpoint's training seed). backend: torch, onnxruntime or opencv
    (fer.backends). detect_faces: the face stage finds and aligns each face (raw photos, or inside the dataset's crops).
    """
    data_root: str | Path | None = None
    tta_mode: str = "none"
    dedup_clean: bool = False
    exclude_classes: tuple[str, ...] = ()
    allow_skipped: bool = False
    detect_faces: bool = False
    batch_size: int = 256
    projection: str = "pca"
    seed: int | None = None
    backend: str = "torch"
    device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "exclude_classes", tuple(self.exclude_classes))
        if self.tta_mode not in tta.MODES:
            raise ValueError(f"unknown TTA mode {self.tta_mode!r}; expected one of {', '.join(tta.MODES)}")
        if self.projection not in plots.PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; expected one of {', '.join(plots.PROJECTIONS)}")


def evaluate(checkpoint: str | Path | None, data_cfg: DataConfig, split: str | None, out_dir: str | Path,
             options: EvalOptions | None = None, **fields) -> dict:
    """Evaluate a checkpoint (None: the shipped default, a name or a path) on one split; write the report into out_dir.

    data_cfg names the dataset, its location (path), class_map and, for folders, exclude_unknown (unknown class folders
    dropped and counted without being listed in exclude_classes). Image size and channels are always the model's.
    split None: the dataset's test split. options: EvalOptions; fields override single ones of them
    (`evaluate(..., detect_faces=True)`). checkpoint may be a fer .onnx file with an ONNX backend.
    Returns the report dict (also written as report.json).
    """
    options = dataclasses.replace(options or EvalOptions(), **fields)
    started = time.perf_counter()
    if data_cfg.dataset not in registry.evaluable():
        raise ValueError(f"unknown dataset {data_cfg.dataset!r}; expected one of {', '.join(registry.evaluable())}")
    dataset = registry.get(data_cfg.dataset)
    split = split or dataset.test_split
    if split not in dataset.splits:
        raise ValueError(f"{data_cfg.dataset}: unknown split {split!r}; expected one of {', '.join(dataset.splits)}")

    classifier = load_classifier(checkpoint, options.backend, device=options.device)
    ckpt, spec = classifier.checkpoint, classifier.checkpoint["model_spec"]
    model_classes = tuple(classifier.class_names)
    trained = ckpt.get("config") or {}
    trained_data = trained.get("data", {})
    same_dataset = data_cfg.dataset in (trained_data.get("dataset"), *trained_data.get("sources", ()))  # mixed: a source
    seed = options.seed
    if seed is None:
        seed = trained.get("train", {}).get("seed", 0) if same_dataset else 0
    if split == "val" and same_dataset:  # recarve exactly the validation part the model was selected on
        data_cfg = dataclasses.replace(data_cfg, val_fraction=trained["data"]["val_fraction"])
    data_cfg = dataclasses.replace(data_cfg, image_size=classifier.input_size, channels=classifier.channels,
                                   max_per_class=None)  # the model's input
    location = dataset_path(data_cfg.dataset, data_cfg.path, options.data_root)
    if data_cfg.dataset in trained_data.get("realign", ()) and not options.detect_faces:
        log.warning("%s was trained on %s re-aligned through the face stage; --detect-faces measures it on that framing",
                    Path(ckpt["path"]).name, data_cfg.dataset)

    faces, no_face = read_split(data_cfg, split, location, model_classes, seed, options.data_root,
                                options.exclude_classes, options.dedup_clean, options.detect_faces)
    problems = completeness_problems(faces, data_cfg.dataset, split)
    if problems and not options.allow_skipped:
        raise ValueError("; ".join(problems) + ". Refusing to report on an incomplete split; --allow-skipped reports "
                         "anyway and states the count")
    for problem in problems:
        log.warning("reporting anyway (allow_skipped): %s", problem)
    if len(faces) == 0:
        raise ValueError(f"{faces.name}: no samples left to evaluate (excluded: {faces.excluded})")

    embeddings, probs = tta.predict_faces(classifier, faces.images, options.tta_mode, options.batch_size)
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
        "tta": options.tta_mode,
        "calibration": report_calibration(ckpt.get("calibration"), probs, faces.labels, no_face),  # T, ECE here
        "checkpoint": {"path": str(Path(ckpt["path"]).resolve()), "sha256": sha256_file(ckpt["path"]),
                       "class_names": list(model_classes), "model": spec,
                       "trained_on": trained.get("data", {}).get("dataset")},
        "data": {"dataset": data_cfg.dataset, "path": str(Path(location).resolve()), "split": split, "name": faces.name,
                 "n_files": len(faces) + len(faces.skipped), "n_listed": len(faces) + len(faces.skipped) + int(sum(faces.excluded.values())),
                 "dedup_clean": options.dedup_clean, "class_map": dict(data_cfg.class_map),
                 "exclude_classes": list(options.exclude_classes), "detect_faces": options.detect_faces, "seed": seed,
                 "val_fraction": data_cfg.val_fraction if split == "val" else None,
                 "training_val_split": split == "val" and same_dataset,
                 # a warm-started model's starting weights were trained and selected with this dataset's carve
                 "init_val_split": split == "val"
                 and data_cfg.dataset in (ckpt.get("warm_start") or {}).get("datasets", ())},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(report, out_dir, faces, y_pred, probs, embeddings, no_face, options.projection,
                 normalize=spec.get("head") == "cosine")
    log.info("%s on %s: accuracy %.4f, balanced %.4f, macro-F1 %.4f over %d samples (%.1f s); report in %s",
             Path(ckpt["path"]).name, faces.name, report["accuracy"], report["balanced_accuracy"], report["macro_f1"],
             report["n_samples"], report["seconds"], out_dir)
    return report


def evaluate_after_training(cfg: Config, checkpoint_path: str | Path, data_root: str | Path | None = None) -> dict:
    """Evaluate a freshly trained checkpoint on the dataset's report split into <cfg.train.out_dir>/eval/.

    dataset mixed: on each source's report split into eval/<source>/ (returns {source: report}), FER+ contempt excluded
    (counted) for the 7 classes. A re-aligned dataset is evaluated with detect_faces: the framing it was trained on.
    """
    out = Path(cfg.train.out_dir) / "eval"
    if cfg.data.dataset != registry.MIXED:
        return _evaluate_report_split(cfg, cfg.data, checkpoint_path, out, data_root)
    return {source: _evaluate_report_split(cfg, mixed.source_config(cfg.data, source), checkpoint_path, out / source,
                                           data_root) for source in cfg.data.sources}


def _evaluate_report_split(cfg: Config, data_cfg: DataConfig, checkpoint_path, out: Path, data_root) -> dict:
    split = registry.get(data_cfg.dataset).report_split
    exclude = ()
    if cfg.data.dataset == registry.MIXED:  # a source's classes outside the mixed model's (FER+ contempt): counted
        exclude = tuple(name for name in registry.get(data_cfg.dataset).class_names if name not in mixed.MIXED_CLASSES)
    options = EvalOptions(data_root=data_root, seed=cfg.train.seed, device=cfg.train.device,
                          detect_faces=data_cfg.dataset in data_cfg.realign, exclude_classes=exclude)
    report = evaluate(checkpoint_path, data_cfg, split, out, options)
    log.info("evaluation on %s/%s:\n%s", data_cfg.dataset, split, format_summary(report))
    return report
