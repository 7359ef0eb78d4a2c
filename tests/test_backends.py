"""Inference backends: the same labels as torch on the real shared photos; clear errors for a missing runtime."""

import sys

import numpy as np
import pytest

from fer.backends import BACKENDS, OnnxRuntimeClassifier, load_classifier
from fer.checkpoint import shipped_models
from fer.data.transforms import face_shape
from fer.face import FaceDetector
from fer.predict import predict_images
from fer.tta import predict_faces

from conftest import SHARED

PHOTOS = sorted(p for p in (SHARED / "media").iterdir() if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.mark.parametrize("name", shipped_models())
def test_backends_give_torch_labels_on_the_shared_photos(name, detector):
    assert len(PHOTOS) == 14, f"expected the 14 shared photos, found {len(PHOTOS)} under {SHARED / 'media'}"
    results = {backend: predict_images(PHOTOS, load_classifier(name, backend), detector) for backend in BACKENDS}
    reference = results["torch"]
    assert sum(len(r["faces"]) for r in reference) >= 14
    for backend in ("onnxruntime", "opencv"):
        for ours, theirs in zip(results[backend], reference):
            assert [f["label"] for f in ours["faces"]] == [f["label"] for f in theirs["faces"]], (backend, ours["path"])
            for a, b in zip(ours["faces"], theirs["faces"]):
                gap = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"])
                assert gap <= 1e-4, f"{backend} {ours['path']}: probabilities differ by {gap}"


def random_faces(classifier, n: int) -> np.ndarray:
    """n random uint8 faces of the classifier's own input shape."""
    return np.random.default_rng(0).integers(0, 256, (n, *face_shape(classifier.input_size, classifier.channels)),
                                             dtype=np.uint8)


def test_embeddings_for_evaluate_match_torch():
    reference = load_classifier("default", "torch")
    faces = random_faces(reference, 5)
    torch_e, torch_p = predict_faces(reference, faces, "flip")
    for backend in ("onnxruntime", "opencv"):
        classifier = load_classifier("default", backend)
        e, p = predict_faces(classifier, faces, "flip")
        assert e.shape == torch_e.shape == (5, classifier.embedding_dim) and np.abs(p - torch_p).max() <= 1e-4
        assert predict_faces(classifier, faces[:0])[0].shape == (0, classifier.embedding_dim)


def test_wrong_faces_are_a_value_error():
    classifier = load_classifier("fer2013", "opencv")  # 48 px gray
    with pytest.raises(ValueError, match=r"uint8 \(N, 48, 48\) \(gray"):
        classifier.predict(np.zeros((2, 64, 64), np.uint8))
    colour = load_classifier("rafdb", "opencv")  # 112 px colour
    with pytest.raises(ValueError, match=r"uint8 \(N, 112, 112, 3\) \(BGR colour"):
        colour.predict(np.zeros((2, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        load_classifier("default", "tensorrt")


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ValueError, match=r"fer-toolkit\[onnx\]"):
        load_classifier("default", "onnxruntime")
    classifier = load_classifier("default", "opencv")
    assert classifier.predict(random_faces(classifier, 1)).shape == (1, 7)


def test_onnxruntime_thread_setting():
    classifier = load_classifier("default", "onnxruntime", num_threads=1)
    assert isinstance(classifier, OnnxRuntimeClassifier)
    assert classifier.session.get_session_options().intra_op_num_threads == 1
