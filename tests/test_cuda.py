"""CUDA-only checks (marker `cuda`; skipped without a GPU). scripts/gpu_check.sh runs them on a GPU machine."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fer.config import load_config
from fer.data.readers import read_fer2013_folder
from fer.inference import Classifier
from fer.train import train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def tiny(out, *overrides):
    return load_config(TINY, [f"train.out_dir={out}", "data.max_per_class=40", "train.device=cuda", *overrides])


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("model", ["mini_xception", "resnet_small"])
def test_train_steps_on_cuda(tmp_path, data_root, precision, model):
    result = train(tiny(tmp_path, f"train.precision={precision}", f"model.name={model}", "train.max_steps=6"),
                   data_root=data_root, progress=False)
    assert result["steps"] == 6
    assert next(result["model"].parameters()).device.type == "cuda"
    assert result["objective"].centers.centers.device.type == "cuda"
    saved = torch.load(result["last"], weights_only=True)  # no map_location: tensors were stored on the CPU
    tensors = [*saved["state_dict"].values(), *saved["objective"].values()]
    assert all(t.device.type == "cpu" for t in tensors)
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    if precision == "fp16":
        assert saved["scaler"]["scale"] > 0


def test_checkpoint_trained_on_cuda_predicts_the_same_on_the_cpu(tmp_path, data_root):
    result = train(tiny(tmp_path, "train.precision=bf16", "train.epochs=1"), data_root=data_root, progress=False)
    faces = read_fer2013_folder(data_root / "fer2013", "private").subset(range(0, 3589, 100))
    on_cpu = Classifier.load(result["best"], device="cpu").predict(faces.images)
    on_gpu = Classifier.load(result["best"], device="cuda").predict(faces.images)
    assert on_cpu.shape == (len(faces), 7)
    assert np.allclose(on_cpu, on_gpu, atol=1e-3), np.abs(on_cpu - on_gpu).max()


def test_auto_picks_cuda(tmp_path, data_root):
    result = train(tiny(tmp_path, "train.device=auto", "train.max_steps=1"), data_root=data_root, progress=False)
    assert next(result["model"].parameters()).device.type == "cuda"
