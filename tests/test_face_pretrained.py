"""Starting from dlib's face-recognition weights: the batch-norm re-parametrisation, `train.init: face_resnet_dlib`,
the GPU campaign's CPU path (pack + --dry-run) and the study page built from its records."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer.checkpoint import load_model
from fer.config import ConfigError, load_config
from fer.data.transforms import to_tensor
from fer.models import create_model
from fer.models.face_resnet_init import init_from_backbone, reparametrise_batchnorm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rafdb_faces(data_root):
    """32 real RAF-DB training faces at 112 px colour, normalised as the trainer does: (32, 3, 112, 112)."""
    from fer.data.readers import read_rafdb

    faces = read_rafdb(data_root / "rafdb", "train", 112, 3)
    return to_tensor(faces.images[np.linspace(0, len(faces) - 1, 32).astype(int)])


def test_reparametrised_batchnorm_keeps_the_function_and_matches_train_mode(backbone_weights, rafdb_faces):
    model = create_model("face_resnet", 7, in_channels=3)
    init_from_backbone(model, None)  # dlib's folded statistics: running mean 0, variance 1 - eps
    model.eval()
    with torch.no_grad():
        before = model.forward_features(rafdb_faces)
    assert reparametrise_batchnorm(model, rafdb_faces) == 29
    running = [m.running_var for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not torch.allclose(v, torch.ones_like(v), atol=1e-3) for v in running), "statistics were not set"
    with torch.no_grad():
        after_eval = model.eval().forward_features(rafdb_faces)
        after_train = model.train().forward_features(rafdb_faces)  # batch statistics = the ones just measured
    assert torch.allclose(before, after_eval, rtol=1e-3, atol=1e-3), (before - after_eval).abs().max()
    cosine = torch.nn.functional.cosine_similarity(after_train, after_eval).min()
    assert cosine > 0.999, f"train mode drifts from eval mode on the statistics batch: cosine {cosine:.5f}"


def test_init_refuses_a_model_whose_weights_do_not_fit(backbone_weights):
    with pytest.raises(ValueError, match="do not fit the model") as error:
        init_from_backbone(create_model("resnet_small", 7, in_channels=3))
    assert "\n" not in str(error.value)


def tiny_config(tmp_path, model="face_resnet", extra=()):
    overrides = ["data.dataset=rafdb", "data.max_per_class=3", "data.image_size=112", "data.channels=3",
                 f"model.name={model}", "train.init=face_resnet_dlib", "train.epochs=1", "train.batch_size=8",
                 "train.warmup_epochs=0", "train.threads=2", f"train.out_dir={tmp_path / 'run'}", *extra]
    return load_config(REPO / "configs" / "rafdb_face_resnet.yaml", overrides)


def test_train_init_face_resnet_dlib_trains_from_the_backbone(backbone_weights, data_root, tmp_path, monkeypatch):
    from fer.train import train

    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *args, **kwargs: reads.append(str(f)) or real_load(f, *args, **kwargs))
    cfg = tiny_config(tmp_path)
    train(cfg, data_root=data_root)
    assert reads.count(str(backbone_weights)) == 1, "the backbone cache is read once: checked first, then used"
    model, checkpoint = load_model(tmp_path / "run" / "best.pt")
    warm = checkpoint["warm_start"]
    n_train = json.loads((tmp_path / "run" / "data.json").read_text())["train"]["n"]
    assert warm["batchnorm_reparametrised"] == 29 and warm["faces_for_statistics"] == n_train, (warm, n_train)
    assert checkpoint["model_spec"]["name"] == "face_resnet" and checkpoint["model_spec"]["image_size"] == 112
    # the backbone's weights, moved by one epoch of fine-tuning, not a random init: the first conv stays near dlib's
    dlib = torch.load(backbone_weights, weights_only=True)["state_dict"]["stem.0.weight"]
    assert torch.nn.functional.cosine_similarity(model.stem[0].weight.flatten(), dlib.flatten(), dim=0) > 0.9


def test_train_init_face_resnet_dlib_names_the_model_it_needs(backbone_weights, data_root, tmp_path):
    from fer.train import train

    with pytest.raises(ConfigError, match="face_resnet_dlib starts the face_resnet model only"):
        train(tiny_config(tmp_path, model="resnet_small", extra=["data.image_size=64"]), data_root=data_root)


def test_the_backbone_is_no_teacher(tmp_path):
    from fer.train import train

    with pytest.raises(ConfigError, match="'train.teacher': face_resnet_dlib is the face-recognition backbone"):
        train(tiny_config(tmp_path, extra=["train.teacher=[face_resnet_dlib]"]), data_root=tmp_path / "no_data_here")


def test_missing_backbone_cache_says_how_to_fetch_it(data_root, tmp_path, monkeypatch):
    from fer.train import train

    monkeypatch.setenv("FER_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="'train.init': .*run.py fetch-backbone"):  # said before any data is read:
        train(tiny_config(tmp_path), data_root=tmp_path / "no_data_here")  # no dataset there, never looked for


def test_gpu_campaign_cpu_path_packs_real_faces_and_writes_project_checkpoints(backbone_weights, data_root, tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "gpu_campaign.py")]
    env = {"FER_DATA": str(data_root), "PATH": "/usr/bin:/bin", "FER_CACHE": str(Path(backbone_weights).parent)}
    subprocess.run(script + ["pack", "--family", "rafdb", "--out", str(tmp_path / "pack"), "--max-per-class", "6"],
                   check=True, env=env, capture_output=True)
    pack = np.load(tmp_path / "pack" / "rafdb.npz")
    assert ((pack["labels_rafdb"] >= 0) & (pack["part"] == "train")).sum() == 42, "6 per class, 7 classes"
    assert set(pack["part"]) == {"train", "val"}
    done = subprocess.run(script + ["run", "--pack", str(tmp_path / "pack" / "rafdb.npz"), "--plan", "rafdb",
                                    "--out", str(tmp_path / "out"), "--dry-run", "--only", "rafdb_cosine_distance_s0_lr0.001",
                                    "rafdb_softmax_s0_lr0.001"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads((tmp_path / "out" / "records.json").read_text())
    assert set(records) == {"rafdb_cosine_distance_s0_lr0.001", "rafdb_softmax_s0_lr0.001"}, set(records)
    # the packed JPEG scans decode to the very faces the project's reader gives
    from fer.data.readers import read_rafdb

    name = pack["paths"][0].decode()
    original = read_rafdb(data_root / "rafdb", "train", 100, 3)
    index = [Path(p).name for p in original.paths].index(name)
    sys.path.insert(0, str(REPO))
    from scripts.gpu_campaign import load_pack

    faces = load_pack(tmp_path / "pack" / "rafdb.npz", "rafdb", 100)["parts"]["train"][0]
    assert np.array_equal(faces[0], original.images[index])
    model, checkpoint = load_model(tmp_path / "out" / "rafdb_cosine_distance_s0_lr0.001.pt")  # keep: last
    assert checkpoint["config"]["data"]["val_fraction"] == 0.1 and checkpoint["config"]["train"]["init"] == "face_resnet_dlib"
    assert not (tmp_path / "out" / "rafdb_softmax_s0_lr0.001.pt").exists(), "only jobs marked keep write weights"


def test_study_page_rebuilds_from_its_records():
    sys.path.insert(0, str(REPO))
    from studies.face_pretrained import PAGE, build_page

    assert build_page() == PAGE.read_text(), "docs/face-pretrained.md is stale: python studies/face_pretrained.py"


def test_loss_verdict_is_worked_out_from_the_gaps():
    sys.path.insert(0, str(REPO))
    from studies.face_pretrained import loss_verdict

    level = loss_verdict({"A": {"accuracy": (-0.4, 1.5)}, "B": {"accuracy": (0.3, 0.8)}})
    assert level[-1].endswith("no difference lies outside the seed-to-seed range.")
    behind = loss_verdict({"A": {"accuracy": (-0.4, 1.5), "macro-F1": (-1.5, 0.9)}})
    assert "not reproduced" in behind[-1] and "softmax is ahead" in behind[-1] and "A macro-F1" in behind[-1]
    ahead = loss_verdict({"A": {"accuracy": (2.0, 1.0)}, "B": {"accuracy": (0.1, 0.5)}})
    assert ahead[-1] == "The cosine-distance loss is ahead beyond seed noise on A accuracy."
