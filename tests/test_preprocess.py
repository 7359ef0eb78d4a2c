"""preprocess_folder on a tiny class-folder tree of real photos: statuses, crops, manifest, resume."""

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer.face import FaceDetector
from fer.preprocess import MANIFEST_FIELDS, preprocess_folder

SHARED = Path(os.environ.get("FER_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MEDIA = SHARED / "media"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

pytestmark = pytest.mark.skipif(not YUNET.is_file(), reason=f"shared media/models not found under {SHARED}")


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("yunet")


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "raw"
    (src / "happy").mkdir(parents=True)
    (src / "neutral").mkdir()
    shutil.copy(MEDIA / "obama-240p.jpg", src / "happy" / "obama.jpg")
    shutil.copy(MEDIA / "kit_with_rose.jpg", src / "happy" / "kit.JPG")  # two faces, upper-case extension
    shutil.copy(MEDIA / "coffee_noface.png", src / "neutral" / "coffee.png")
    (src / "neutral" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "neutral" / "notes.txt").write_text("not an image")
    return src, tmp_path / "crops"


def read_manifest(dst):
    with open(dst / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_FIELDS
        return {row["path"]: row for row in reader}, (dst / "manifest.csv").read_text().count("\n") - 1


def test_statuses_crops_and_resume(tree, detector):
    src, dst = tree
    summary = preprocess_folder(src, dst, detector, size=48)
    assert (summary["ok"], summary["several_faces"], summary["no_face"], summary["unreadable"]) == (1, 1, 1, 1), summary
    assert summary["total"] == 4 and summary["processed"] == 4 and summary["resumed"] == 0
    assert summary["ignored_files"] == 1, "notes.txt is counted, not silently dropped"
    assert summary["per_class"] == {"happy": {"ok": 1, "several_faces": 1}, "neutral": {"no_face": 1, "unreadable": 1}}

    rows, lines = read_manifest(dst)
    assert lines == 4
    assert {p: r["status"] for p, r in rows.items()} == {
        "happy/obama.jpg": "ok", "happy/kit.JPG": "several_faces",
        "neutral/coffee.png": "no_face", "neutral/broken.jpg": "unreadable"}
    assert rows["happy/kit.JPG"]["num_faces"] == "2"
    assert "broken.jpg" in rows["neutral/broken.jpg"]["error"]
    assert rows["neutral/coffee.png"]["crop"] == "" and rows["neutral/coffee.png"]["num_faces"] == "0"
    for path in ("happy/obama.jpg", "happy/kit.JPG"):
        row = rows[path]
        crop = cv2.imread(str(dst / row["crop"]), cv2.IMREAD_UNCHANGED)
        assert crop is not None and crop.shape == (48, 48), f"{row['crop']}: {None if crop is None else crop.shape}"
        assert len(row["box"].split()) == 4 and len(row["landmarks"].split()) == 10 and float(row["score"]) >= 0.8
    assert sorted(p.name for p in (dst / "happy").iterdir()) == ["kit.png", "obama.png"]

    again = preprocess_folder(src, dst, detector, size=48)
    assert again["processed"] == 0 and again["resumed"] == 4 and again["total"] == 4
    assert read_manifest(dst)[1] == 4, "a rerun must not duplicate rows"

    (dst / "happy" / "obama.png").unlink()  # lost crop: redone, row replaced
    shutil.copy(MEDIA / "astronaut.png", src / "happy" / "astronaut.png")  # new file: appended
    third = preprocess_folder(src, dst, detector, size=48)
    assert third["processed"] == 2 and third["resumed"] == 3 and third["ok"] == 2 and third["total"] == 5
    rows, lines = read_manifest(dst)
    assert lines == 5 and (dst / "happy" / "obama.png").is_file()


def test_class_map(tree, detector):
    src, dst = tree
    with pytest.raises(ValueError, match="neutral"):
        preprocess_folder(src, dst, detector, class_map={"happy": "happy"})
    summary = preprocess_folder(src, dst, detector, class_map={"happy": "joy", "neutral": None})
    assert summary["skipped_folders"] == ["neutral"] and summary["total"] == 2
    assert set(summary["per_class"]) == {"joy"} and (dst / "joy" / "obama.png").is_file()


def test_bad_roots(tmp_path, detector):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        preprocess_folder(tmp_path / "nowhere", tmp_path / "out", detector)
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="inside"):
        preprocess_folder(tmp_path / "src", tmp_path / "src" / "out", detector)


def test_colour_crops_of_the_requested_size(tree, detector):
    src, dst = tree
    summary = preprocess_folder(src, dst, detector, size=100, channels=3)
    assert summary["ok"] == 1 and summary["several_faces"] == 1, summary
    rows, _ = read_manifest(dst)
    for row in rows.values():
        if row["crop"]:
            crop = cv2.imread(str(dst / row["crop"]), cv2.IMREAD_UNCHANGED)
            assert crop.shape == (100, 100, 3), (row["crop"], crop.shape)
            assert np.abs(crop[..., 0].astype(int) - crop[..., 2].astype(int)).mean() > 1, "colour photos give colour crops"


def test_cli_takes_channels_beside_size():
    from fer.cli import build_parser

    args = build_parser().parse_args(["preprocess", "src", "dst", "--size", "100", "--channels", "3"])
    assert (args.size, args.channels) == (100, 3)
    assert build_parser().parse_args(["preprocess", "src", "dst"]).channels == 1, "gray by default"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["preprocess", "src", "dst", "--channels", "2"])
