"""Colour input end to end: a 3-channel model trained a few steps on a small real RAF-DB subset at 64 px, then evaluate,
predict on a real photo (library and run.py), TTA and live, each reading size and channels from the checkpoint alone.
Old checkpoints without 'channels' stay gray models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer import tta
from fer.checkpoint import input_shape, load_checkpoint, load_model
from fer.config import DataConfig, config_from_dict
from fer.data import readers
from fer.evaluate import evaluate
from fer.face import FaceDetector, align_face, read_image
from fer.inference import Classifier
from fer.labels import FER2013_CLASSES
from fer.live import run_live
from fer.predict import predict_images
from fer.train import train

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("colour")
    cfg = config_from_dict({
        "data": {"dataset": "rafdb", "image_size": SIZE, "channels": 3, "max_per_class": 20},
        "model": {"name": "mini_xception", "head": "cosine"},
        "loss": {"name": "cosine_distance"},
        "train": {"epochs": 1, "batch_size": 32, "threads": 1, "out_dir": str(out), "checkpoint_every": 100},
    }, "colour test")
    result = train(cfg, data_root=data_root, progress=False)  # 140 faces: 4 steps, then validation writes best.pt
    return cfg, result


@pytest.fixture(scope="module")
def detector(shared):
    return FaceDetector("yunet", model_path=shared / "models" / "face_detection_yunet_2023mar.onnx")


class Recording:
    """Wraps a classifier and records the shapes of the face batches it is given."""

    def __init__(self, classifier):
        self.inner, self.shapes = classifier, []
        self.class_names, self.input_size, self.channels = classifier.class_names, classifier.input_size, classifier.channels

    def predict(self, faces):
        self.shapes.append(faces.shape)
        return self.inner.predict(faces)


def test_checkpoint_records_size_and_channels_and_rebuilds_a_colour_stem(colour_run):
    _, result = colour_run
    checkpoint = load_checkpoint(result["best"])
    assert input_shape(checkpoint["model_spec"]) == (SIZE, 3) and checkpoint["model_spec"]["channels"] == 3
    model, _ = load_model(result["best"])
    assert model.base[0].in_channels == 3
    classifier = Classifier.load(result["best"])
    assert (classifier.input_size, classifier.channels) == (SIZE, 3)


def test_evaluate_reads_colour_faces_of_the_checkpoints_size(colour_run, data_root, tmp_path):
    _, result = colour_run
    rafdb = readers.read_rafdb(data_root / "rafdb", "train", 100, channels=3)  # the files as shipped, 100 px colour
    for label, name in enumerate(FER2013_CLASSES):  # a small real RAF-DB test tree: 4 faces per class
        (tmp_path / "faces" / name).mkdir(parents=True)
        for path in np.array(rafdb.paths)[rafdb.labels == label][:4]:
            shutil.copy(path, tmp_path / "faces" / name)
    # The data config says nothing about size or colour (defaults 48 / 1): evaluate must take both from the checkpoint.
    report = evaluate(result["best"], DataConfig(dataset="folder", path=str(tmp_path / "faces")), None, tmp_path / "eval")
    assert report["checkpoint"]["model"]["channels"] == 3 and report["n_samples"] == 28
    faces = readers.read_class_folder(tmp_path / "faces", size=SIZE, channels=3)
    classifier = Classifier.load(result["best"])
    probs = classifier.predict(faces.images)
    assert abs(report["accuracy"] - float(np.mean(probs.argmax(1) == faces.labels))) < 1e-9
    _, tencrop = tta.predict_faces(classifier, faces.images, "tencrop")  # 10 colour views each
    assert tencrop.shape == (28, 7) and np.allclose(tencrop.sum(1), 1, atol=1e-5)


def test_predict_aligns_colour_crops_for_a_colour_model(colour_run, detector, shared):
    _, result = colour_run
    classifier = Recording(Classifier.load(result["best"]))
    photo = shared / "media" / "expression_angry_man.jpg"
    [record] = predict_images([photo], classifier, detector)
    assert record["error"] is None and len(record["faces"]) == 1
    assert classifier.shapes == [(1, SIZE, SIZE, 3)], classifier.shapes
    assert abs(sum(record["faces"][0]["probabilities"].values()) - 1) < 1e-4
    # Channel order matters to a colour model: the same crop as RGB gives other probabilities.
    image = read_image(photo)
    crop = align_face(image, detector.detect(image)[0], SIZE, channels=3)[None]  # (1, S, S, 3)
    bgr, rgb = classifier.inner.predict(crop), classifier.inner.predict(np.ascontiguousarray(crop[..., ::-1]))
    assert not np.allclose(bgr, rgb, atol=1e-6)
    with pytest.raises(ValueError, match=r"faces must be uint8 \(N, 64, 64, 3\) \(BGR colour"):
        classifier.inner.predict(crop[..., 0])


def test_run_py_predict_reads_the_checkpoint_alone(colour_run, shared):
    _, result = colour_run
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "predict", "--checkpoint", result["best"],
                           str(shared / "media" / "two_people.jpg"), "--json", "-"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert len(record["faces"]) == 2 and all(face["label"] for face in record["faces"])


def test_evaluate_detect_faces_on_photos_with_a_colour_model(colour_run, shared, tmp_path):
    _, result = colour_run
    media = shared / "media"
    for folder, name in (("angry", "expression_angry_man.jpg"), ("sad", "expression_crying_woman.jpg"),
                         ("happy", "obama-240p.jpg"), ("neutral", "coffee_noface.png")):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(media / name, tmp_path / "photos" / folder / name)
    report = evaluate(result["best"], DataConfig(dataset="folder", path=str(tmp_path / "photos")), None,
                      tmp_path / "eval", detect_faces=True)
    assert report["n_samples"] == 4 and report["n_no_face"] == 1, report["no_face"]


def test_live_classifies_colour_crops(colour_run, detector, shared, tmp_path):
    _, result = colour_run
    classifier = Recording(Classifier.load(result["best"]))
    summary = run_live(str(shared / "media" / "short_hamilton_clip.mp4"), classifier, detector, display=False,
                       max_frames=3, jsonl=tmp_path / "live.jsonl")
    assert summary["frames"] == 3 and summary["faces"] > 0
    assert classifier.shapes and all(shape[1:] == (SIZE, SIZE, 3) for shape in classifier.shapes), classifier.shapes


def test_checkpoints_without_channels_stay_gray(tmp_path):
    """Checkpoints written before colour input have no 'channels' in their model_spec: they load as gray models."""
    old = load_checkpoint("fer2013")  # a 48 px gray model
    old["model_spec"] = {key: value for key, value in old["model_spec"].items() if key != "channels"}
    name = tmp_path / "before_colour.pt"
    torch.save({key: old[key] for key in ("model_spec", "class_names", "state_dict")}, name)
    classifier = Classifier.load(name)
    assert (classifier.input_size, classifier.channels) == (48, 1)
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    assert classifier.predict(faces).shape == (2, 7)
    with pytest.raises(ValueError, match=r"faces must be uint8 \(N, 48, 48\) \(gray"):
        classifier.predict(np.zeros((2, 48, 48, 3), np.uint8))
    assert tta.predict_faces(classifier, faces, "flip")[1].shape == (2, 7)
    assert load_model(name)[0].stem[0].in_channels == 1
