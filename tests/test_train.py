"""End-to-end: train a few steps on a small real FER2013 subset, checkpoints, resume after SIGKILL, reload and predict."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fer.checkpoint import build_model, load_checkpoint, load_model
from fer.data.splits import load_train_val
from fer.data.transforms import to_tensor
from fer.losses import am_softmax_loss
from fer.config import ConfigError, load_config
from fer.data.readers import read_fer2013_folder
from fer.inference import Classifier
from fer.train import seed_everything, train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def tiny(tmp_path, *overrides):
    return load_config(TINY, [f"train.out_dir={tmp_path}", "train.threads=1", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("tiny")
    cfg = tiny(out, "train.epochs=4", "data.max_per_class=30")
    return cfg, train(cfg, data_root=data_root, progress=False)


def test_training_lowers_the_loss_and_writes_its_files(trained, data_root):
    cfg, result = trained
    out = Path(cfg.train.out_dir)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 4 and result["epochs"] == 4
    # The AM-Softmax part on fixed real training faces, before (same seed, same init) and after training. The total also
    # holds the Island pair term, which starts near its floor and moves with the centers, so it is not monotone early.
    train_faces, _ = load_train_val(cfg.data, seed=cfg.train.seed, root=data_root)
    x, labels = to_tensor(train_faces.images[:128]), torch.from_numpy(train_faces.labels[:128])
    seed_everything(cfg.train.seed)
    initial = build_model(load_checkpoint(result["best"])["model_spec"])
    trained_model = load_model(result["last"])[0].train()  # batch statistics: Keras BN momentum 0.01 barely moves in 24 steps
    before = am_softmax_loss(initial(x), labels, scale=cfg.loss.scale, margin=cfg.loss.margin)
    after = am_softmax_loss(trained_model(x), labels, scale=cfg.loss.scale, margin=cfg.loss.margin)
    assert after < before - 0.1, (before, after)
    for name in ("best.pt", "last.pt", "config.yaml", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert load_config(out / "config.yaml") == cfg, "the resolved config is saved beside the run"


def test_checkpoint_round_trip_with_weights_only(trained, data_root):
    cfg, result = trained
    checkpoint = torch.load(result["best"], map_location="cpu", weights_only=True)
    assert checkpoint["class_names"][0] == "angry" and checkpoint["config"]["loss"]["name"] == "cosine_distance"
    model, _ = load_model(result["best"])
    faces = read_fer2013_folder(data_root / "fer2013", "private").subset(range(0, 3589, 300))
    classifier = Classifier.load(result["best"])
    probs = classifier.predict(faces.images)
    assert probs.shape == (len(faces), 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    again = Classifier.load(result["best"]).predict(faces.images)
    assert np.array_equal(probs, again), "a reloaded checkpoint predicts identically"


def run_cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_resume_after_sigkill_ends_like_a_straight_run(tmp_path, data_root):
    settings = ["train.epochs=3", "data.max_per_class=60", "train.checkpoint_every=4", "train.threads=1"]
    straight = train(tiny(tmp_path / "straight", *settings), data_root=data_root, progress=False)

    out = tmp_path / "killed"
    sets = [a for s in settings + [f"train.out_dir={out}"] for a in ("--set", s)]
    process = run_cli("train", "--config", str(TINY), *sets, "--no-eval", "--data-root", str(data_root))
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(out / "last.pt", weights_only=True)["train_state"]["step"]
    assert 0 < killed_at < straight["steps"], f"the run was not interrupted mid-way (step {killed_at})"

    resumed = train(tiny(out, *settings), data_root=data_root, resume=True, progress=False)
    assert resumed["steps"] == straight["steps"]
    a = torch.load(straight["last"], weights_only=True)
    b = torch.load(resumed["last"], weights_only=True)
    for name, tensor in a["state_dict"].items():
        assert torch.allclose(tensor.float(), b["state_dict"][name].float(), atol=1e-6), name
    assert torch.allclose(a["objective"]["centers.centers"], b["objective"]["centers.centers"], atol=1e-6)
    assert [r["val_acc"] for r in a["train_state"]["history"]] == [r["val_acc"] for r in b["train_state"]["history"]]


def test_resume_without_checkpoint_is_an_error(tmp_path, data_root):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train(tiny(tmp_path), data_root=data_root, resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_from_a_damaged_last_pt_is_one_line_and_leaves_the_file(trained, tmp_path, data_root, damage):
    cfg, result = trained
    whole = Path(result["last"]).read_bytes()
    damaged = whole[: len(whole) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(4096)
    last = tmp_path / "last.pt"
    last.write_bytes(damaged)
    process = run_cli("train", "--config", str(TINY), "--set", f"train.out_dir={tmp_path}", "--set", "train.threads=1",
                      "--set", "data.max_per_class=30", "--resume", "--no-eval", "--data-root", str(data_root))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output and "weights_only" not in output, output
    assert str(last) in errors[0] and "--resume" in errors[0] and "move it away" in errors[0], errors[0]
    assert output.rstrip().endswith(errors[0]), "the error is the last thing said"
    assert last.read_bytes() == damaged, "the damaged file is left as it was"


def test_incompatible_head_and_loss(tmp_path, data_root):
    with pytest.raises(ConfigError, match="'model.head' must be 'cosine'"):
        train(tiny(tmp_path, "model.head=keras"), data_root=data_root, progress=False)


@pytest.mark.parametrize("loss, head", [("softmax", "keras"), ("center", "linear"), ("island", "linear")])
def test_other_losses_train(tmp_path, data_root, loss, head):
    cfg = tiny(tmp_path, f"loss.name={loss}", f"model.head={head}", "train.max_steps=3", "loss.class_weighting=balanced")
    result = train(cfg, data_root=data_root, progress=False)
    assert result["steps"] == 3


def test_cli_reports_config_errors_with_the_file(tmp_path):
    process = run_cli("train", "--config", str(TINY), "--set", "train.lr_sheduler=cosine")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "tiny.yaml with --set: unknown key 'train.lr_sheduler'" in output
