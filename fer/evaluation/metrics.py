"""Metrics of predictions against labels: accuracy, balanced accuracy, macro-F1, per-class scores, confusion matrix."""

import warnings

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

NO_FACE = "no face"  # extra predicted column when photos without a detected face are counted as errors


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
