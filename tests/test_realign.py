"""Re-alignment of dataset crops through the face stage (fer.face.recrop, fer.data.realign) and evaluate --detect-faces
on every dataset layout, on a small real data root (conftest.small_root: real FER2013, FER+ and RAF-DB files)."""

import csv
import json

import numpy as np
import pytest

from fer.config import DataConfig, config_from_dict
from fer.data import realign
from fer.data.paths import data_root
from fer.data.splits import load_train_val, native_config, read_split
from fer.evaluate import evaluate, format_summary
from fer.face import FaceDetector
from fer.face.recrop import detect_in_crop

DATA = data_root()
pytestmark = pytest.mark.skipif(not (DATA / "rafdb" / "Image").is_dir() or not (DATA / "fer2013" / "test").is_dir(),
                                reason=f"FER2013 / RAF-DB not found under {DATA}")


def test_face_found_again_inside_real_rafdb_crops_and_not_in_a_blank_one(small_root):
    faces = read_split(native_config(DataConfig(dataset="rafdb")), "train", small_root)
    assert faces.images.shape[1:] == (100, 100, 3), faces.images.shape
    detector = FaceDetector()
    found = [detect_in_crop(detector, image) for image in faces.images]
    assert sum(f is not None for f in found) >= 0.9 * len(found), f"{sum(f is not None for f in found)} of {len(found)}"
    for face in filter(None, found):  # the mapped-back landmarks lie inside the 100 px crop: right eye left of left eye
        assert face.landmarks is not None and (face.landmarks > -10).all() and (face.landmarks < 110).all(), face
        assert face.landmarks[0, 0] < face.landmarks[1, 0], face.landmarks
    assert detect_in_crop(detector, np.full((100, 100, 3), 128, np.uint8)) is None


def test_realigned_training_keeps_the_carve_honours_size_channels_and_caches(small_root, monkeypatch):
    raw = {"dataset": "rafdb", "image_size": 56, "channels": 3, "val_fraction": 0.25}
    plain_train, plain_val = load_train_val(config_from_dict({"data": raw}).data, 0, small_root)
    cfg = config_from_dict({"data": {**raw, "realign": ["rafdb"]}}).data
    train, val = load_train_val(cfg, 0, small_root)
    assert train.paths == plain_train.paths and val.paths == plain_val.paths, "re-alignment must not change the carve"
    assert train.images.shape[1:] == (56, 56, 3) and val.images.shape[1:] == (56, 56, 3)
    assert not np.array_equal(train.images, plain_train.images), "re-aligned faces equal the resized crops"
    note = train.notes["realign"]
    assert note["faces"] == len(train) and note["realigned"] + note["not_found"] == len(train), note
    assert note["not_found_paths"] == [p for p in train.paths if p in note["not_found_paths"]]
    with open(note["manifest"], newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    assert set(train.paths + val.paths) <= set(rows), "every re-aligned face has a manifest row"
    assert {row["status"] for row in rows.values()} <= {"realigned", "no_face"}

    def no_detection(*args, **kwargs):
        raise AssertionError("cached faces must not be detected again")
    monkeypatch.setattr(realign, "realign_images", no_detection)
    again, _ = load_train_val(cfg, 0, small_root)
    assert np.array_equal(again.images, train.images)


def test_faces_not_found_are_kept_or_dropped_and_counted(small_root, monkeypatch):
    import fer.face.recrop

    real = fer.face.recrop.detect_in_crop
    calls = []

    def every_other(detector, image):  # the face stage misses every second face
        calls.append(1)
        return real(detector, image) if len(calls) % 2 else None
    monkeypatch.setattr(fer.face.recrop, "detect_in_crop", every_other)
    monkeypatch.setenv("FER_CACHE", str(small_root / "cache_miss"))
    base = {"dataset": "rafdb", "val_fraction": 0.25, "realign": "rafdb"}
    kept, _ = load_train_val(config_from_dict({"data": base}).data, 0, small_root)
    missed = kept.notes["realign"]["not_found"]
    assert missed >= len(kept) // 2 - 1 and kept.notes["realign"]["action"] == "kept as the original crop resized"
    dropped, _ = load_train_val(config_from_dict({"data": {**base, "realign_miss": "drop"}}).data, 0, small_root)
    assert len(dropped) == len(kept) - missed and dropped.excluded[realign.NOT_REALIGNED] == missed, dropped.excluded
    assert not set(dropped.paths) & set(kept.notes["realign"]["not_found_paths"])


@pytest.mark.parametrize("dataset, split", [("fer2013", "private"), ("fer2013-csv", "private"), ("ferplus", "private"),
                                            ("rafdb", "train"), ("rafdb", "val")])
def test_evaluate_detect_faces_on_every_dataset_layout(small_root, tmp_path, dataset, split):
    exclude = ("contempt",) if dataset == "ferplus" else ()
    out = tmp_path / "eval"
    report = evaluate("fer2013", DataConfig(dataset=dataset), split, out, data_root=small_root, detect_faces=True,
                      allow_skipped=True, exclude_classes=exclude)  # allow_skipped: a subset, not the official size
    plain = evaluate("fer2013", DataConfig(dataset=dataset), split, tmp_path / "plain", data_root=small_root,
                     allow_skipped=True, exclude_classes=exclude)
    assert report["n_samples"] == plain["n_samples"] > 0, "detect_faces evaluates the same samples, none dropped"
    assert report["data"]["detect_faces"] and 0 <= report["n_no_face"] < report["n_samples"], report["n_no_face"]
    assert len(report["no_face"]) == report["n_no_face"]
    counts = np.array(report["confusion_matrix"]["counts"])
    assert counts.sum() == report["n_samples"]
    if report["n_no_face"]:
        assert counts[:, -1].sum() == report["n_no_face"], "a face not found is a wrong answer in its own column"
    assert f"no face {report['n_no_face']}" in format_summary(report)
    assert f"no face {report['n_no_face']}" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["n_no_face"] == report["n_no_face"]


def test_realign_option_is_checked():
    from fer.config import ConfigError

    with pytest.raises(ConfigError, match="data.realign.*not a dataset of this config"):
        config_from_dict({"data": {"dataset": "fer2013", "realign": ["rafdb"]}}, "x.yaml")
    with pytest.raises(ConfigError, match="data.realign_miss"):
        config_from_dict({"data": {"dataset": "rafdb", "realign": "rafdb", "realign_miss": "skip"}}, "x.yaml")
    with pytest.raises(ConfigError, match="'folder' is not one of"):
        config_from_dict({"data": {"dataset": "folder", "realign": ["folder"]}}, "x.yaml")
