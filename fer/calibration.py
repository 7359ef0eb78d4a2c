"""Calibrated probabilities: one temperature T per model, probs = softmax(logits / T).

The cosine head's scale s makes softmax(s * cos) close to 1 even on ambiguous faces. Temperature scaling (Guo et al.
2017, "On Calibration of Modern Neural Networks", https://arxiv.org/abs/1706.04599) fits the one scalar T > 0 on the
model's selection split; argmax, hence accuracy, does not change (with test-time augmentation the averaged views can,
rarely). Two objectives (OBJECTIVES):
- "top_label" (the default): the log loss of the top label's probability against whether the top label is right, the
  probability `predict` shows and ECE measures (top-label calibration: Gupta & Ramdas 2022, "Top-label calibration and
  multiclass-to-binary reductions", https://arxiv.org/abs/2107.08353).
- "nll": the multiclass negative log-likelihood (Guo et al.), which also weighs the runner-up classes' probabilities.
On the cosine heads shipped here the NLL fit leaves the top label over-confident in the middle and under-confident at
the top. With the top-label fit ECE on held-out halves of the selection splits is 1.1-1.4 points lower for `default`
and `fer2013` (on all 40 halves) and level for `ferplus` and `rafdb` (+0.1 / +0.3, lower on about half the halves)
(docs/models-and-matrix.md, "Calibration: which objective fits the temperature"; `python studies/calibration.py`).
Calibration is measured by the expected calibration error (ECE): top-label confidence in 15 equal-width bins,
sum over bins of |bin| / N * |accuracy(bin) - confidence(bin)| (the same paper's definition and bin count).

A checkpoint stores the fit under the key `calibration` (CALIBRATION_KEYS): temperature, objective, fitted_on
("dataset/split", sources joined by " + "), n, ece_before, ece_after, nll_before, nll_after, bins and
reliability_after (the reliability diagram after scaling), left_out (samples of the split not fitted on, counted by reason).
fer.inference.Classifier divides its logits by the temperature and fer.export divides inside the ONNX graph, so torch,
onnxruntime and cv2.dnn give the same calibrated probabilities. A checkpoint without the key has T = 1: exactly the
probabilities from before calibration existed.

`run.py calibrate` (calibrate_checkpoint) reads the model's selection split as `run.py evaluate` reads splits (the
training seed's carve, the face stage's framing for datasets the model was trained on re-aligned), fits T on it and
writes a copy of the checkpoint with the key added (weights untouched, float16 stays float16).
"""

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch

from fer.data import registry

log = logging.getLogger(__name__)

ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)  # a fitted T at either bound means the logits are degenerate (constant or separable)
OBJECTIVES = ("top_label", "nll")
DEFAULT_OBJECTIVE = "top_label"
T_GRID = 97  # log-spaced temperatures scanned before the golden-section refinement (4 per octave over T_BOUNDS)
CALIBRATION_KEYS = ("temperature", "objective", "fitted_on", "n", "ece_before", "ece_after", "nll_before", "nll_after",
                    "bins", "reliability_after", "left_out")


# ----------------------------------------------------------------------------------------------------------------- math

def _check(logits_or_probs, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    values, labels = np.asarray(logits_or_probs, np.float64), np.asarray(labels)
    if values.ndim != 2 or labels.ndim != 1 or len(values) != len(labels) or len(labels) == 0:
        raise ValueError(f"{name}: expected (N, K) and labels (N,) with N > 0, got {values.shape} and {labels.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: non-finite values")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= values.shape[1]:
        raise ValueError(f"{name}: labels must be integers in [0, {values.shape[1]}), got {labels.dtype} "
                         f"in [{labels.min()}, {labels.max()}]")
    return values, labels.astype(np.int64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the last axis, float64."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T) at the true labels (natural log)."""
    logits, labels = _check(logits, labels, "nll")
    z = logits / temperature
    peak = z.max(axis=1)
    log_norm = peak + np.log(np.exp(z - peak[:, None]).sum(axis=1))  # logsumexp, (N,)
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def top_label_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean log loss of the top label's probability p under softmax(logits / T) against whether the top label is the
    true one: -mean(log p) over right answers and -mean(log(1 - p)) over wrong ones, together (natural log)."""
    logits, labels = _check(logits, labels, "top_label_nll")
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)  # the top label's z is 0
    log_norm = np.log(np.exp(z).sum(axis=1))  # (N,)
    log_top = -log_norm  # log p of the top label
    right = logits.argmax(axis=1) == labels
    log_rest = np.log(np.clip(-np.expm1(log_top), 1e-300, None))  # log(1 - p), stable when p is near 1
    return float(-np.mean(np.where(right, log_top, log_rest)))


OBJECTIVE_FUNCTIONS = {"top_label": top_label_nll, "nll": nll}  # keys in the order of OBJECTIVES


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"calibration objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


def fit_temperature(logits: np.ndarray, labels: np.ndarray, objective: str = DEFAULT_OBJECTIVE,
                    bounds: tuple[float, float] = T_BOUNDS, tol: float = 1e-5) -> float:
    """The T in bounds minimising the objective (OBJECTIVES) of (logits, labels, T).

    A scan of T_GRID log-spaced temperatures finds the best bracket, then a golden-section search on log T narrows it
    to tol. NLL is convex in 1/T (a log-sum-exp of linear functions minus a linear one); the top-label loss need not
    be, which is why the scan comes first. tol: the final bracket's width in log T.
    """
    check_objective(objective)
    loss = OBJECTIVE_FUNCTIONS[objective]
    logits, labels = _check(logits, labels, "fit_temperature")
    grid = np.linspace(math.log(bounds[0]), math.log(bounds[1]), T_GRID)
    values = [loss(logits, labels, math.exp(g)) for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, T_GRID - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(logits, labels, math.exp(a)), loss(logits, labels, math.exp(b))
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(logits, labels, math.exp(b))
    temperature = math.exp((lo + hi) / 2)
    if min(abs(math.log(temperature / bound)) for bound in bounds) < 1e-3:
        log.warning("fitted temperature %.4g is at the search bound %s: the logits carry little calibration signal",
                    temperature, bounds)
    return temperature


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Top-label reliability diagram in equal-width confidence bins (lower, upper]: per bin n, mean confidence and
    accuracy (None where a bin is empty)."""
    probs, labels = _check(probs, labels, "reliability")
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (N,): bin k holds (k/B, (k+1)/B]
    rows = []
    for k in range(bins):
        member = index == k
        n = int(member.sum())
        rows.append({"lower": round(k / bins, 6), "upper": round((k + 1) / bins, 6), "n": n,
                     "confidence": float(confidence[member].mean()) if n else None,
                     "accuracy": float(correct[member].mean()) if n else None})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of n_bin / N * |accuracy - mean confidence| (top label, equal-width bins), in [0, 1]."""
    rows = reliability(probs, labels, bins)
    total = sum(row["n"] for row in rows)
    return float(sum(row["n"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows if row["n"]))


def calibration_record(logits: np.ndarray, labels: np.ndarray, fitted_on: str,
                       objective: str = DEFAULT_OBJECTIVE) -> dict:
    """Fit T on (logits, labels) and measure before and after: the checkpoint's `calibration` value."""
    temperature = round(fit_temperature(logits, labels, objective), 6)  # the value stored is the value measured
    before, after = softmax(logits), softmax(logits, temperature)
    return {"temperature": temperature, "objective": objective, "fitted_on": fitted_on, "n": int(len(labels)),
            "ece_before": round(expected_calibration_error(before, labels), 6),
            "ece_after": round(expected_calibration_error(after, labels), 6),
            "nll_before": round(nll(logits, labels), 6), "nll_after": round(nll(logits, labels, temperature), 6),
            "bins": ECE_BINS, "reliability_after": reliability(after, labels)}


def report_calibration(calibration: dict | None, probs: np.ndarray, labels: np.ndarray,
                       no_face: np.ndarray | None = None) -> dict:
    """An evaluation report's calibration entry: the checkpoint's temperature (1 without one), the split it was fitted
    on, and the ECE of the probabilities reported on this split (faces found only)."""
    calibration = calibration or {}
    keep = np.ones(len(labels), bool) if no_face is None else ~np.asarray(no_face, bool)
    ece = expected_calibration_error(probs[keep], labels[keep]) if keep.any() else None
    return {"temperature": calibration.get("temperature", 1.0), "fitted_on": calibration.get("fitted_on"),
            "ece": None if ece is None else round(ece, 6), "bins": ECE_BINS}


def temperature_of(checkpoint: dict) -> float:
    """The checkpoint's temperature; 1.0 when it has no `calibration` key. A bad value is an error naming the file."""
    calibration = checkpoint.get("calibration")
    if calibration is None:
        return 1.0
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{checkpoint.get('path', 'checkpoint')}: calibration.temperature must be a positive finite "
                         f"number, got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------------------- the selection split

def selection_sources(checkpoint: dict) -> list[str]:
    """The datasets a checkpoint was selected on: its training dataset, or each source of a mixed one."""
    data = (checkpoint.get("config") or {}).get("data") or {}
    if data.get("dataset") == "mixed":
        return list(data.get("sources") or [])
    if data.get("dataset") not in registry.evaluable():
        raise ValueError(f"{checkpoint.get('path', 'checkpoint')}: its config names no dataset with a selection split "
                         f"(data.dataset {data.get('dataset')!r}); pass --dataset")
    return [data["dataset"]]


def read_selection_faces(classifier, dataset: str, split: str, data_root=None, data_path=None):
    """One split read as `run.py evaluate` reads it for this model (fer.evaluation.faces.read_split): the training
    seed's carve for 'val', faces re-detected by the face stage for a dataset the model was trained on re-aligned (faces
    it does not find are left out and counted: predict shows no probability for them), FER+ contempt excluded for
    7-class models, classes mapped onto the model's. Refuses an incomplete split. Returns (FaceSet, description, number
    of faces left out for want of a face)."""
    from fer.config import DataConfig
    from fer.data.paths import dataset_path
    from fer.evaluation.faces import completeness_problems, read_split

    record = registry.get(dataset)
    if split not in record.splits:
        raise ValueError(f"{dataset}: unknown split {split!r}; expected one of {', '.join(record.splits)}")
    if split != record.selection_split:
        raise ValueError(f"{dataset}: calibrate on the selection split {record.selection_split!r}, not {split!r} "
                         "(a test split would make its reports optimistic, train is fitted)")
    model_classes = tuple(classifier.class_names)
    trained = classifier.checkpoint.get("config") or {}
    trained_data = trained.get("data") or {}
    same_dataset = dataset in (trained_data.get("dataset"), *trained_data.get("sources", ()))
    seed = trained.get("train", {}).get("seed", 0) if same_dataset else 0
    data_cfg = DataConfig(dataset=dataset, path=data_path)
    if split == "val" and same_dataset:  # exactly the validation part the model was selected on
        data_cfg = dataclasses.replace(data_cfg, val_fraction=trained_data["val_fraction"])
    data_cfg = dataclasses.replace(data_cfg, image_size=classifier.input_size, channels=classifier.channels)
    realigned = dataset in trained_data.get("realign", ())
    exclude = ("contempt",) if dataset == "ferplus" and "contempt" not in model_classes else ()
    location = dataset_path(dataset, data_path, data_root)
    faces, no_face = read_split(data_cfg, split, location, model_classes, seed, data_root, exclude,
                                detect_faces=realigned)
    problems = completeness_problems(faces, dataset, split)
    if problems:
        raise ValueError("; ".join(problems) + ". Refusing to calibrate on an incomplete split")
    n_no_face = int(no_face.sum()) if no_face is not None else 0
    if n_no_face:
        log.info("%s: %d face(s) without a face found left out of the fit", faces.name, n_no_face)
        faces = faces.subset(np.flatnonzero(~no_face))
    text = f"{dataset}/{split}" + (" (faces re-detected)" if realigned else "")
    return faces, text, n_no_face


@torch.inference_mode()
def selection_logits(classifier, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Uncalibrated logits (N, K) float64 of the torch Classifier on uint8 faces."""
    from fer.data.transforms import to_tensor

    chunks = [classifier.logits(to_tensor(faces[start:start + batch_size]))[1].cpu()
              for start in range(0, len(faces), batch_size)]
    return torch.cat(chunks).double().numpy() if chunks else np.zeros((0, len(classifier.class_names)))


def read_selection_logits(classifier, datasets=None, splits=None, data_root=None,
                          data_path=None) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """The classifier's uncalibrated logits (N, K) and labels (N,) on its selection split (datasets and splits as
    calibrate_checkpoint takes them: each source's selection split by default, the union for a mixed model), with the
    split's description ("dataset/split", joined by " + ") and the samples left out, counted by reason."""
    datasets = list(datasets or selection_sources(classifier.checkpoint))
    splits = list(splits or [registry.get(dataset).selection_split for dataset in datasets])
    if len(splits) != len(datasets):
        raise ValueError(f"{len(datasets)} dataset(s) ({', '.join(datasets)}) but {len(splits)} split(s) "
                         f"({', '.join(splits)}): give one --split per --dataset, or none")
    faces_parts, names, left_out = [], [], {}
    for dataset, split in zip(datasets, splits):
        faces, text, no_face = read_selection_faces(classifier, dataset, split, data_root, data_path)
        faces_parts.append(faces)
        names.append(text)
        left_out.update({f"{dataset}:{key}": n for key, n in faces.excluded.items()})
        if no_face:
            left_out[f"{dataset}:no_face"] = no_face
    logits = np.concatenate([selection_logits(classifier, f.images) for f in faces_parts])
    labels = np.concatenate([f.labels for f in faces_parts])
    return logits, labels, " + ".join(names), left_out


def calibrate_checkpoint(checkpoint, out: str | Path, datasets=None, splits=None, data_root=None,
                         data_path=None, objective: str = DEFAULT_OBJECTIVE) -> dict:
    """Fit the temperature of a checkpoint (a shipped name or a path) on its selection split and write the checkpoint
    with the `calibration` key to out (may be the same file). datasets None: the model's own selection sources (each
    source of a mixed model: the union of their selection splits); splits None: each dataset's selection split, else
    one split per dataset, in order (only selection splits are accepted); objective: one of OBJECTIVES. Returns the
    calibration record."""
    from fer.checkpoint import atomic_save, load_checkpoint
    from fer.inference import Classifier

    check_objective(objective)  # before minutes of reading faces
    classifier = Classifier.load(checkpoint)
    logits, labels, fitted_on, left_out = read_selection_logits(classifier, datasets, splits, data_root, data_path)
    record = {**calibration_record(logits, labels, fitted_on, objective), "left_out": left_out}
    stored = load_checkpoint(checkpoint)
    source = stored.pop("path")
    stored["calibration"] = record
    atomic_save(stored, out)
    log.info("%s: temperature %.4f (%s) fitted on %s (n=%d): ECE %.4f -> %.4f, NLL %.4f -> %.4f; written to %s",
             source, record["temperature"], objective, record["fitted_on"], record["n"], record["ece_before"],
             record["ece_after"], record["nll_before"], record["nll_after"], out)
    return record
