"""A model that takes smaller or gray input than its data (fer.data.view): the student of a larger colour teacher."""

import cv2
import numpy as np
import pytest
import torch

from fer.checkpoint import load_model
from fer.config import ConfigError, config_from_dict, load_config, model_input
from fer.data.transforms import to_tensor
from fer.data.view import model_view
from fer.face.align import align_face
from fer.face.detect import FaceDetector
from fer.train import train
from tests.test_recipe import TINY


@pytest.mark.parametrize("model, data, message", [
    ({"input_size": 64}, {"image_size": 48}, "'model.input_size' 64 is larger than 'data.image_size' 48"),
    ({"channels": 3}, {"channels": 1}, "'model.channels' 3 needs colour data"),
    ({"input_size": 30}, {}, "'model.input_size': must be in \\[40, 112\\]"),
    ({"channels": 2}, {}, "'model.channels': 2 is not one of 1, 3"),
])
def test_a_model_input_the_data_cannot_give_is_a_config_error(model, data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": model, "data": data})


def test_model_input_defaults_to_the_data():
    assert model_input(config_from_dict({"data": {"image_size": 64, "channels": 3}})) == (64, 3)
    assert model_input(config_from_dict({"data": {"image_size": 112, "channels": 3},
                                         "model": {"input_size": 48, "channels": 1}})) == (48, 1)


def test_the_view_of_a_large_colour_face_is_the_small_gray_face_predict_aligns(shared):
    """Same framing at every size: downsampling the 112 px colour alignment gives, within a few gray levels on the
    mean, the 48 px gray alignment predict makes (the residue is the direct warp's sharper resampling)."""
    detector, checked = FaceDetector(), 0
    for name in ("expression_angry_man.jpg", "obama-1080p.jpg", "astronaut.png"):
        image = cv2.imread(str(shared / "media" / name))
        face = max(detector.detect(image), key=lambda f: f.box[2] * f.box[3])
        large, small = align_face(image, face, 112, channels=3), align_face(image, face, 48, channels=1)
        view = model_view(to_tensor(large[None]), 48, 1)
        assert view.shape == (1, 1, 48, 48)
        levels = ((view - to_tensor(small[None])).abs() * 127.5).mean().item()
        assert levels < 3.0, f"{name}: the view differs from predict's face by {levels:.2f} gray levels on the mean"
        mirrored = ((view - to_tensor(small[None, :, ::-1].copy())).abs() * 127.5).mean().item()
        assert mirrored > 2 * levels, f"{name}: a mirrored face should be further away ({mirrored:.2f})"
        checked += 1
    assert checked == 3


def test_the_view_keeps_what_already_fits_and_refuses_gray_to_colour():
    x = torch.randn(2, 1, 48, 48)
    assert model_view(x, 48, 1) is x
    with pytest.raises(ValueError, match="cannot view 1-channel faces as 3-channel input"):
        model_view(x, 48, 3)


def test_a_gray_student_learns_from_a_colour_teacher_at_the_teachers_size(tmp_path, data_root):
    """The shipped `rafdb` (face_resnet, 112 px colour) teaches a 48 px gray small ResNet on the same batches; the
    student's checkpoint takes 48 px gray faces and names its teacher."""
    cfg = load_config(TINY, [f"train.out_dir={tmp_path / 'student'}", "train.threads=1", "data.dataset=rafdb",
                             "data.max_per_class=3", "data.image_size=112", "data.channels=3", "model.name=resnet_small",
                             "model.input_size=48", "model.channels=1", "train.teacher=rafdb", "train.batch_size=8",
                             "train.epochs=1", "train.max_steps=2", "train.checkpoint_every=100"])
    result = train(cfg, data_root=data_root, progress=False)
    model, checkpoint = load_model(result["last"])
    assert (checkpoint["model_spec"]["image_size"], checkpoint["model_spec"]["channels"]) == (48, 1)
    assert [t["source"].rsplit("/", 1)[-1] for t in checkpoint["teachers"]] == ["rafdb.pt"]
    history = torch.load(result["last"], weights_only=True)["train_state"]["history"]
    assert np.isfinite(history[0]["train_loss"]) and 0 <= history[0]["val_acc"] <= 1
    with torch.inference_mode():
        assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
