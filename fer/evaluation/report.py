"""The evaluation report: the plain-text summary, report.md, and the files written beside report.json
(predictions.csv, confusion.png, embeddings.png)."""

import csv
import json
from pathlib import Path

import numpy as np

from fer import plots
from fer.data.readers import FaceSet
from fer.evaluation.metrics import NO_FACE

MAX_LISTED = 1000  # skipped / no-face paths written into report.json


def format_summary(report: dict) -> str:
    """Plain-text summary table: overall metrics, per-class precision / recall / F1 / support, confusion counts."""
    data = report["data"]
    lines = [f"{data['name']}, split {data['split']}: {report['n_samples']:,} samples, tta {report['tta']}, "
             f"skipped {report['n_skipped']}, excluded {report['n_excluded']}, no face {report['n_no_face']}",
             f"accuracy {report['accuracy']:.4f}   balanced accuracy {report['balanced_accuracy']:.4f}   "
             f"macro-F1 {report['macro_f1']:.4f}", ""]
    calibration = report.get("calibration") or {}
    if calibration.get("ece") is not None:
        lines[1] += f"   ECE {calibration['ece']:.4f} (temperature {calibration['temperature']:g})"
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
    calibration = report.get("calibration") or {}
    if calibration.get("ece") is not None:  # probabilities are softmax(logits / T), fer.calibration
        lines.append(f"| ECE, top label, {calibration['bins']} bins (temperature {calibration['temperature']:g}) | "
                     f"{calibration['ece']:.4f} |")
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
