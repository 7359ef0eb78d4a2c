"""Evaluation: metrics against scikit-learn, class mapping and exclusion counts, refusal of incomplete splits, report
files, and `run.py evaluate` end to end on a checkpoint from a tiny real training run (real FER2013 faces)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support)

from fer.config import DataConfig, config_from_dict
from fer.data.paths import REPO_ROOT, data_root, shared_root
from fer.data.readers import FaceSet
from fer.evaluate import (NO_FACE, EvalOptions, completeness_problems, compute_metrics, evaluate,
                          evaluate_after_training, map_classes, parse_class_map)
from fer.labels import FER2013_CLASSES, FERPLUS_CLASSES

FER2013 = data_root() / "fer2013"
needs_fer2013 = pytest.mark.skipif(not (FER2013 / "test").is_dir(), reason=f"FER2013 not found under {FER2013}")
REQUIRED_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "n_samples", "n_skipped",
                 "n_excluded", "tta", "checkpoint", "data"}


def copy_faces(source_class: str, prefix: str, n: int, target: Path, offset: int = 0) -> list[Path]:
    """Copy n real FER2013 images of one class (file names starting with prefix) into target/."""
    folder = FER2013 / ("train" if prefix == "Training_" else "test") / source_class
    files = sorted(p for p in folder.iterdir() if p.name.startswith(prefix))[offset:offset + n]
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, target / p.name)) for p in files]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A mini-Xception trained for a few steps on 8 real faces per class (a class-folder tree), once per module."""
    if not (FER2013 / "train").is_dir():
        pytest.skip(f"FER2013 not found under {FER2013}")
    from fer.train import train

    root = tmp_path_factory.mktemp("tiny")
    for name in FER2013_CLASSES:
        copy_faces(name, "Training_", 8, root / "data" / "train" / name)
    cfg = config_from_dict({"data": {"dataset": "folder", "path": str(root / "data"), "val_fraction": 0.25},
                            "model": {"name": "mini_xception", "head": "cosine"}, "loss": {"name": "cosine_distance"},
                            "train": {"epochs": 1, "batch_size": 16, "threads": 1, "out_dir": str(root / "run"),
                                      "checkpoint_every": 100}})
    result = train(cfg, progress=False)
    best = Path(result["best"])
    assert best.is_file(), result
    return best


@pytest.fixture()
def mapped_tree(tmp_path) -> Path:
    """anger/ (3), happiness/ (4), contempt/ (2): real FER2013 faces under another dataset's folder names."""
    copy_faces("angry", "PublicTest_", 3, tmp_path / "ck" / "anger")
    copy_faces("happy", "PublicTest_", 4, tmp_path / "ck" / "happiness")
    copy_faces("neutral", "PublicTest_", 2, tmp_path / "ck" / "contempt")
    return tmp_path / "ck"


# ------------------------------------------------------------------------------------------------------------- metrics

def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 7, 500))
    m = compute_metrics(y_true, y_pred, FER2013_CLASSES)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(7))
    for k, name in enumerate(FER2013_CLASSES):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[k], recall[k], f1[k])), name
        assert row["support"] == support[k], name
    counts = np.array(m["confusion_matrix"]["counts"])
    np.testing.assert_array_equal(counts, confusion_matrix(y_true, y_pred, labels=range(7)))
    assert counts.sum() == len(y_true), "confusion-matrix total must equal the number of samples"
    np.testing.assert_allclose(np.array(m["confusion_matrix"]["normalized"]).sum(1), 1.0, atol=1e-5)


def test_no_face_counts_as_error_in_its_own_column():
    y_true = np.array([0, 0, 3, 3, 6])
    y_pred = np.array([0, -1, 3, 0, -1])  # -1: no face found
    m = compute_metrics(y_true, y_pred, FER2013_CLASSES)
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["confusion_matrix"]["predicted"][-1] == NO_FACE
    counts = np.array(m["confusion_matrix"]["counts"])
    assert counts.shape == (7, 8), counts.shape
    assert counts.sum() == 5 and counts[:, -1].sum() == 2, counts
    assert m["balanced_accuracy"] == pytest.approx(np.mean([1 / 2, 1 / 2, 0]))
    assert m["macro_f1_classes"] == ["angry", "happy", "neutral"]


def test_parse_class_map():
    assert parse_class_map("anger=angry, sadness=sad") == {"anger": "angry", "sadness": "sad"}
    assert parse_class_map(None) == {}
    with pytest.raises(ValueError, match="dataset_class=model_class"):
        parse_class_map("anger:angry")


# ---------------------------------------------------------------------------------------------- mapping and completeness

def faceset(labels, class_names, skipped=(), excluded=None, name="test"):
    labels = np.asarray(labels, np.int64)
    return FaceSet(np.zeros((len(labels), 48, 48), np.uint8), labels, [f"f{i}.png" for i in range(len(labels))],
                   tuple(class_names), list(skipped), dict(excluded or {}), name)


def test_ferplus_contempt_needs_explicit_exclusion():
    contempt = FERPLUS_CLASSES.index("contempt")
    faces = faceset([0, 3, contempt, contempt, 6], FERPLUS_CLASSES, excluded={"no_image": 2}, name="ferplus/private")
    with pytest.raises(ValueError, match="contempt"):
        map_classes(faces, FER2013_CLASSES)
    mapped = map_classes(faces, FER2013_CLASSES, exclude=("contempt",))
    assert len(mapped) == 3 and mapped.class_names == FER2013_CLASSES
    assert mapped.labels.tolist() == [0, 3, 6]
    assert mapped.excluded == {"no_image": 2, "contempt": 2}, mapped.excluded


def test_silently_shrunken_split_is_flagged():
    faces = faceset([0, 1], FER2013_CLASSES, skipped=[("broken.jpg", "not a decodable image")], name="folder:x")
    problems = completeness_problems(faces, "folder", "test")
    assert len(problems) == 1 and "1 sample(s)" in problems[0] and "broken.jpg" in problems[0], problems
    short = faceset([0] * 10, FER2013_CLASSES, name="fer2013/private")
    problems = completeness_problems(short, "fer2013", "private")
    assert problems and "3589" in problems[0], problems


@needs_fer2013
def test_class_map_and_exclusion_counts(checkpoint, mapped_tree, tmp_path):
    cfg = DataConfig(dataset="folder", path=str(mapped_tree))
    with pytest.raises(ValueError, match="contempt"):
        evaluate(checkpoint, cfg, None, tmp_path / "refused")
    with pytest.raises(ValueError, match="names no class"):
        evaluate(checkpoint, cfg, None, tmp_path / "typo", exclude_classes=("contempt", "sadnes"))
    mapped = DataConfig(dataset="folder", path=str(mapped_tree), class_map={"anger": "angry", "happiness": "happy"})
    report = evaluate(checkpoint, mapped, None, tmp_path / "eval", exclude_classes=("contempt",))
    assert report["n_samples"] == 7 and report["n_excluded"] == 2, (report["n_samples"], report["excluded"])
    assert report["excluded"] == {"contempt": 2}
    support = {name: row["support"] for name, row in report["per_class"].items()}
    assert support["angry"] == 3 and support["happy"] == 4 and sum(support.values()) == 7, support
    assert np.array(report["confusion_matrix"]["counts"]).sum() == 7


@needs_fer2013
def test_unreadable_file_refused_unless_allowed(checkpoint, tmp_path):
    root = tmp_path / "faces"
    copy_faces("sad", "PrivateTest_", 3, root / "sad")
    (root / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = DataConfig(dataset="folder", path=str(root))
    with pytest.raises(ValueError, match=r"1 sample\(s\).*broken\.jpg"):
        evaluate(checkpoint, cfg, None, tmp_path / "refused")
    assert not (tmp_path / "refused" / "report.json").exists(), "a refused evaluation must not leave a report"
    report = evaluate(checkpoint, cfg, None, tmp_path / "allowed", allow_skipped=True)
    assert report["n_samples"] == 3 and report["n_skipped"] == 1, report
    assert "1 sample(s)" in report["incomplete"][0]
    assert "incomplete split" in (tmp_path / "allowed" / "report.md").read_text()


@needs_fer2013
def test_partial_fer2013_copy_refused_and_dedup_counted(checkpoint, tmp_path):
    root = tmp_path / "fer2013"
    copy_faces("happy", "PrivateTest_", 4, root / "test" / "happy")
    leaked = copy_faces("happy", "Training_", 2, root / "train" / "happy")
    shutil.copy(leaked[0], root / "test" / "happy" / "PrivateTest_copy.jpg")  # a train image leaked into the test split
    for name in FER2013_CLASSES:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        (root / "test" / name).mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(dataset="fer2013", path=str(root))
    with pytest.raises(ValueError, match="official split has 3589"):
        evaluate(checkpoint, cfg, "private", tmp_path / "refused")
    report = evaluate(checkpoint, cfg, "private", tmp_path / "eval", dedup_clean=True, allow_skipped=True)
    assert report["n_samples"] == 4 and report["excluded"] == {"duplicate_of_train": 1}, report["excluded"]
    assert report["data"]["dedup_clean"] is True and report["data"]["n_listed"] == 5


# ---------------------------------------------------------------------------------------------------- end to end

@needs_fer2013
def test_run_py_evaluate_end_to_end(checkpoint, mapped_tree, tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "run.py", "evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data",
               str(mapped_tree), "--class-map", "anger=angry,sadness=sad,happiness=happy", "--exclude-classes", "contempt",
               "--tta", "flip", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout, result.stdout
    report = json.loads((out / "report.json").read_text())
    assert REQUIRED_KEYS <= set(report), REQUIRED_KEYS - set(report)
    assert report["tta"] == "flip" and report["n_samples"] == 7 and report["n_excluded"] == 2
    assert report["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert report["data"]["dataset"] == "folder" and report["data"]["n_files"] == 7
    for name in ("confusion.png", "embeddings.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, (name, len(data))
    assert "| angry |" in (out / "report.md").read_text()
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 7

    missing = subprocess.run([sys.executable, "run.py", "evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder",
                              "--data", str(mapped_tree), "--out", str(tmp_path / "x")],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--exclude-classes contempt" in missing.stderr, missing.stderr


@needs_fer2013
def test_evaluate_after_training_writes_eval_folder(checkpoint, tmp_path):
    """The hook cmd_train calls: report split of a folder dataset = the validation part the run carved."""
    saved = json.loads(json.dumps(__import__("torch").load(checkpoint, weights_only=True)["config"]))
    saved["train"]["out_dir"] = str(tmp_path / "run")
    cfg = config_from_dict(saved)
    report = evaluate_after_training(cfg, checkpoint)
    assert (tmp_path / "run" / "eval" / "report.json").is_file()
    assert report["data"]["split"] == "val" and report["data"]["training_val_split"]
    assert report["n_samples"] == 14, report["n_samples"]  # 25 % of 8 faces x 7 classes


@needs_fer2013
def test_detect_faces_counts_photos_without_face(checkpoint, tmp_path, monkeypatch):
    media = shared_root() / "media"
    if not (media / "expression_angry_man.jpg").is_file():
        pytest.skip(f"test photos not found under {media}")
    pytest.importorskip("fer.face")
    for folder, photo in (("anger", "expression_angry_man.jpg"), ("neutral", "coffee_noface.png")):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(media / photo, tmp_path / "photos" / folder / photo)
    cfg = DataConfig(dataset="folder", path=str(tmp_path / "photos"))
    report = evaluate(checkpoint, cfg, None, tmp_path / "eval", detect_faces=True)
    assert report["n_samples"] == 2 and report["n_no_face"] == 1, report
    assert report["no_face"][0].endswith("coffee_noface.png")
    assert report["confusion_matrix"]["predicted"][-1] == NO_FACE
    counts = np.array(report["confusion_matrix"]["counts"])
    assert counts.sum() == 2 and counts[FER2013_CLASSES.index("neutral"), -1] == 1, counts


@needs_fer2013
def test_onnx_backends_report_what_torch_reports(checkpoint, mapped_tree, tmp_path):
    """evaluate --backend: same predictions and metrics from an in-memory export and from an exported .onnx file."""
    from fer.export import export_onnx

    cfg = DataConfig(dataset="folder", path=str(mapped_tree), class_map={"anger": "angry", "happiness": "happy"})
    onnx_path = export_onnx(checkpoint, tmp_path / "tiny.onnx")
    reports = {name: evaluate(source, cfg, None, tmp_path / name, exclude_classes=("contempt",), backend=backend)
               for name, source, backend in (("torch", checkpoint, "torch"), ("ort", checkpoint, "onnxruntime"),
                                             ("cv", onnx_path, "opencv"))}
    predictions = {name: (tmp_path / name / "predictions.csv").read_text() for name in reports}
    assert predictions["ort"] == predictions["torch"] == predictions["cv"]
    for name in ("ort", "cv"):
        assert reports[name]["accuracy"] == reports["torch"]["accuracy"]
        assert reports[name]["confusion_matrix"]["counts"] == reports["torch"]["confusion_matrix"]["counts"]
        assert (tmp_path / name / "embeddings.png").is_file()
    assert reports["cv"]["checkpoint"]["path"] == str(onnx_path.resolve())


def test_options_refuse_unknown_values_and_keep_exclusions_as_a_tuple():
    with pytest.raises(ValueError, match="unknown TTA mode 'spin'"):
        EvalOptions(tta_mode="spin")
    with pytest.raises(ValueError, match="unknown projection 'umap'"):
        EvalOptions(projection="umap")
    assert EvalOptions(exclude_classes=["contempt"]).exclude_classes == ("contempt",)
