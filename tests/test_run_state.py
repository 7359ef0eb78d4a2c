"""The run state last.pt carries: saved and restored through one table, every part round-trips, a missing or ill-fitting
part is a one-line error naming the file and the part."""

from pathlib import Path

import pytest
import torch

from fer.config import load_config
from fer.run_state import RunState
from fer.train import build_run, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
# every optional part on: EMA copy, autograd center optimiser, a schedule
ALL_PARTS = ["train.ema_decay=0.9", "loss.center_update=autograd", "train.schedule=cosine", "train.max_steps=2",
             "data.max_per_class=10", "train.batch_size=16", "train.threads=1", "train.checkpoint_every=100"]


def tiny_run(tmp_path, data_root, *overrides):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"train.out_dir={tmp_path}", *ALL_PARTS, *overrides])
    return build_run(cfg, torch.device("cpu"), data_root)


def assert_same(a, b, where="") -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} against {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} against {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} against {b!r}"


def test_every_part_saved_is_restored_and_saves_back_identically(tmp_path, data_root):
    trained = tiny_run(tmp_path / "a", data_root)
    train_one_epoch(trained, progress=False)  # optimiser moments, EMA, centers and counters all move
    saved = trained.state.state_dict()
    assert {"train_state_dict", "ema", "objective", "optimizer", "schedule", "center_optimizer", "torch_rng",
            "train_state"} <= set(saved), sorted(saved)
    assert saved["train_state"]["step"] == 2 and saved["center_optimizer"], "the parts hold a trained state"

    fresh = tiny_run(tmp_path / "b", data_root)
    before = fresh.state.state_dict()
    fresh.state.load_state_dict(saved)
    after = fresh.state.state_dict()
    assert set(after) == set(saved) == {p.key for p in fresh.state.parts() if p.present}
    assert_same(saved, after, "last.pt")
    with pytest.raises(AssertionError):  # the comparison sees a difference where there is one
        assert_same(before, after, "fresh")


def test_a_missing_or_ill_fitting_part_is_one_line_naming_file_and_part(tmp_path, data_root):
    saved = tiny_run(tmp_path / "a", data_root).state.state_dict()
    run = tiny_run(tmp_path / "b", data_root)
    del saved["ema"]
    with pytest.raises(ValueError, match=r"^--resume: x/last.pt: has no 'ema'.*move it away") as missing:
        run.state.load_state_dict(saved, "x/last.pt")
    assert "\n" not in str(missing.value)

    wider = tiny_run(tmp_path / "c", data_root, "model.name=resnet_small").state.state_dict()
    with pytest.raises(ValueError, match=r"its 'train_state_dict' does not fit this run's config") as ill:
        run.state.load_state_dict(wider, "x/last.pt")
    assert "\n" not in str(ill.value)


def test_parts_the_run_lacks_are_neither_saved_nor_required(tmp_path, data_root):
    run = tiny_run(tmp_path, data_root, "train.ema_decay=0", "loss.center_update=delta", "train.schedule=none")
    saved = run.state.state_dict()
    assert "ema" not in saved and "train_state_dict" not in saved and "state_dict" in saved
    assert saved["schedule"] == {} and saved["center_optimizer"] == {}, "kept as empty keys, as every last.pt has"
    RunState.load_state_dict(run.state, saved)
