"""Test-time augmentation: view shapes, crop geometry, and flip of a symmetric face changing nothing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer import tta
from fer.inference import Classifier
from fer.models import create_model


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = create_model("mini_xception", 7, head="cosine")
    return Classifier(model, ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), 48, 10.0)


def random_faces(n=3, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("mode", tta.MODES)
def test_view_shapes_for_uint8_and_float(mode):
    faces = random_faces(3)
    expected = (tta.NUM_VIEWS[mode], 3, 1, 48, 48)
    from_uint8 = tta.views(faces, mode)
    assert tuple(from_uint8.shape) == expected, (mode, from_uint8.shape)
    x = torch.randn(3, 1, 48, 48)
    from_float = tta.views(x, mode)
    assert tuple(from_float.shape) == expected, (mode, from_float.shape)
    assert from_float.dtype == torch.float32


def test_ten_crop_geometry():
    x = torch.arange(48 * 48, dtype=torch.float32).view(1, 1, 48, 48)
    views = tta.ten_crop(x)
    crop = round(tta.CROP_FRACTION * 48)
    assert crop == 44, crop
    top_left = F.interpolate(x[:, :, :crop, :crop], size=(48, 48), mode="bilinear", align_corners=False)
    centre = F.interpolate(x[:, :, 2:2 + crop, 2:2 + crop], size=(48, 48), mode="bilinear", align_corners=False)
    bottom_right = F.interpolate(x[:, :, 4:, 4:], size=(48, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(views[0], top_left)
    torch.testing.assert_close(views[3], bottom_right)
    torch.testing.assert_close(views[4], centre)
    torch.testing.assert_close(views[5:], views[:5].flip(-1), msg="the last five views must mirror the first five")


def test_ten_crop_of_constant_image_is_constant():
    x = torch.full((2, 1, 48, 48), 0.25)
    torch.testing.assert_close(tta.ten_crop(x), x.unsqueeze(0).expand(10, -1, -1, -1, -1).contiguous())


def test_flip_of_symmetric_faces_equals_none(classifier):
    half = random_faces(4, seed=1)[:, :, :24]
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)  # (4, 48, 48), mirror-symmetric
    assert np.array_equal(symmetric, symmetric[:, :, ::-1])
    _, none = tta.predict_faces(classifier, symmetric, "none")
    _, flip = tta.predict_faces(classifier, symmetric, "flip")
    np.testing.assert_allclose(flip, none, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", tta.MODES)
def test_predict_faces_shapes_and_probabilities(classifier, mode):
    faces = random_faces(5, seed=2)
    embeddings, probs = tta.predict_faces(classifier, faces, mode, batch_size=8)  # several forward batches for tencrop
    assert embeddings.shape == (5, 128), embeddings.shape
    assert probs.shape == (5, 7), probs.shape
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    if mode == "none":
        np.testing.assert_allclose(probs, classifier.predict(faces), rtol=1e-5, atol=1e-6)


def test_bad_input_is_rejected(classifier):
    with pytest.raises(ValueError, match="unknown TTA mode"):
        tta.views(random_faces(1), "fivecrop")
    with pytest.raises(ValueError, match="uint8"):
        tta.predict_faces(classifier, random_faces(1).astype(np.float32), "none")
    with pytest.raises(ValueError, match="float batch"):
        tta.views(torch.zeros(2, 48, 48), "flip")


@pytest.fixture(scope="module")
def colour_classifier():
    torch.manual_seed(0)
    model = create_model("mini_xception", 7, head="cosine", in_channels=3)
    return Classifier(model, ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), 100, 10.0, channels=3)


@pytest.mark.parametrize("mode", tta.MODES)
def test_colour_views_and_predictions(colour_classifier, mode):
    faces = np.random.default_rng(1).integers(0, 256, (3, 100, 100, 3), dtype=np.uint8)
    views = tta.views(faces, mode)
    assert tuple(views.shape) == (tta.NUM_VIEWS[mode], 3, 3, 100, 100)
    if mode != "none":  # the mirror of view 0 flips the width of every channel, keeping B, G, R in place
        assert torch.equal(views[tta.NUM_VIEWS[mode] // 2], views[0].flip(-1))
    embeddings, probs = tta.predict_faces(colour_classifier, faces, mode)
    assert embeddings.shape == (3, 128) and probs.shape == (3, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_flip_of_symmetric_colour_faces_equals_none(colour_classifier):
    half = np.random.default_rng(2).integers(0, 256, (2, 100, 50, 3), dtype=np.uint8)
    faces = np.concatenate([half, half[:, :, ::-1]], axis=2)  # mirror-symmetric colour faces
    _, none = tta.predict_faces(colour_classifier, faces, "none")
    _, flip = tta.predict_faces(colour_classifier, faces, "flip")
    assert np.allclose(none, flip, atol=1e-5)


def test_colour_classifier_refuses_gray_faces(colour_classifier, classifier):
    with pytest.raises(ValueError, match=r"faces must be uint8 \(N, 100, 100, 3\) \(BGR colour"):
        tta.predict_faces(colour_classifier, random_faces(2, 100), "tencrop")
    with pytest.raises(ValueError, match=r"faces must be uint8 \(N, 48, 48\) \(gray"):
        tta.predict_faces(classifier, np.zeros((2, 48, 48, 3), np.uint8), "none")
