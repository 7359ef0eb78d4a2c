"""Data-parallel training on the CPU: real processes (torch.multiprocessing spawn and torchrun), gloo, real FER2013 faces.

Each spawned process joins the group from the environment torchrun would set (RANK, WORLD_SIZE, ...), so the code
under test is the same that `torchrun --nproc_per_node 2 run.py train` runs.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fer import distributed, losses
from fer.checkpoint import build_model, model_spec
from fer.config import ConfigError, load_config
from fer.data.splits import load_train_val
from fer.train import seed_everything, train, validate, validation_counts

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
# 280 training images, 8 global batches of 32 per epoch (16 images per rank), 3 epochs, last.pt every 4 steps.
SETTINGS = ["train.epochs=3", "data.max_per_class=40", "train.checkpoint_every=4", "train.threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), FER_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    fn(rank, *args)


def spawn(fn, *args, world: int = 2):
    """Run fn(rank, *args) in `world` real processes joined like torchrun's; any failure raises here."""
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


# ------------------------------------------------------------------------------------------------------------ sharding

@pytest.mark.parametrize("balanced", [False, True])
def test_rank_shards_are_disjoint_slices_of_the_one_process_batches(data_root, balanced):
    from fer.data.loader import TrainBatches

    cfg = load_config(TINY, ["data.max_per_class=20"])
    train_faces, _ = load_train_val(cfg.data, root=data_root)
    one = list(TrainBatches(train_faces, 32, None, seed=3, balanced=balanced).epoch(1))
    ranks = [list(TrainBatches(train_faces, 32, None, seed=3, balanced=balanced, rank=r, world_size=2).epoch(1))
             for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 140 // 32
    for (x, labels), (x0, labels0), (x1, labels1) in zip(one, *ranks):
        assert len(x0) == len(x1) == 16
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([labels0, labels1]), labels)
    resumed = list(TrainBatches(train_faces, 32, None, seed=3, balanced=balanced, rank=1, world_size=2).epoch(1, 2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, ranks[1][2:])), "mid-epoch resume sees the same shard"


# ------------------------------------------------------------------------------------------------------ center updates

def make_batch(seed=0, batch=24, dim=16, num_classes=7):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, generator=g) * 2
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    labels[:3] = 0  # class 0 in both halves; some classes appear in one half only
    labels[-3:] = 0
    return embeddings, labels


def make_losses():
    torch.manual_seed(0)
    return {"center": losses.CenterLoss(7, 16), "island": losses.IslandLoss(7, 16),
            "cosine_euclidean": losses.CosineDistanceLoss(7, 16),
            "cosine_cosine": losses.CosineDistanceLoss(7, 16, intra="cosine")}


def call(loss, embeddings, labels):
    if isinstance(loss, losses.CosineDistanceLoss):
        return loss(embeddings, losses.cosine_similarity_matrix(embeddings, torch.randn(7, 16)).clamp(-1, 1), labels)
    return loss(embeddings, labels)


def _delta_worker(rank, out):
    distributed.init("cpu")
    embeddings, labels = make_batch()
    cut = 9  # unequal halves: 9 and 15 samples
    mine = slice(0, cut) if rank == 0 else slice(cut, None)
    centers = {}
    for name, loss in make_losses().items():
        loss.reduce_center_stats = distributed.all_reduce_sum
        call(loss.train(), embeddings[mine], labels[mine])
        centers[name] = loss.centers
    # autograd centers: each rank's mean loss over an equal half, gradients averaged = the gradient of the global mean
    torch.manual_seed(0)
    loss = losses.CenterLoss(7, 16, update="autograd")
    half = slice(0, 12) if rank == 0 else slice(12, None)
    loss(embeddings[half], labels[half]).backward()
    distributed.average_gradients(loss.parameters())
    centers["autograd_grad"] = loss.centers.grad
    torch.save(centers, Path(out) / f"centers{rank}.pt")
    distributed.teardown()


def test_all_reduced_delta_rule_equals_one_process_on_the_concatenated_batch(tmp_path):
    spawn(_delta_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"centers{r}.pt") for r in range(2)]
    embeddings, labels = make_batch()
    for name, loss in make_losses().items():
        before = loss.centers.clone()
        call(loss.train(), embeddings, labels)  # one process, the whole global batch
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: centers differ between ranks"
        assert torch.allclose(ranks[0][name], loss.centers, atol=1e-6, rtol=0), f"{name}: not the global-batch update"
        local = make_losses()[name]
        call(local.train(), embeddings[:9], labels[:9])  # what rank 0 alone would have done
        assert not torch.allclose(local.centers, loss.centers, atol=1e-4), f"{name}: the test cannot tell local from global"
        assert not torch.equal(before, loss.centers)
    torch.manual_seed(0)
    loss = losses.CenterLoss(7, 16, update="autograd")
    loss(embeddings, labels).backward()
    assert torch.equal(ranks[0]["autograd_grad"], ranks[1]["autograd_grad"])
    assert torch.allclose(ranks[0]["autograd_grad"], loss.centers.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------- validation

def val_set_and_model(data_root):
    cfg = load_config(TINY, ["data.max_per_class=20"])
    _, val_faces = load_train_val(cfg.data, root=data_root)
    val_faces = val_faces.subset(range(len(val_faces) - 3))  # 137 images: odd, and not a multiple of the batch
    seed_everything(0)
    model = build_model(model_spec("mini_xception", 7, "cosine", 1, 48, 10.0)).train()
    model(torch.randn(64, 1, 48, 48))  # move the BN statistics off their init, so predictions vary by image
    return val_faces, model.eval()


def _validation_worker(rank, out, data_root):
    distributed.init("cpu")
    world_size_errors(rank, out)
    val_faces, model = val_set_and_model(data_root)
    correct, seen = validation_counts(model, val_faces, 16, True)
    metrics = validate(model, val_faces, 16, True)
    torch.save({"correct": correct, "seen": seen, "metrics": metrics, "shard": distributed.shard_range(len(val_faces))},
               Path(out) / f"val{rank}.pt")
    distributed.teardown()


@pytest.fixture(scope="module")
def validation_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("validation")
    spawn(_validation_worker, str(out), data_root)
    return out


def test_validation_counts_every_image_exactly_once(validation_run, data_root):
    tmp_path = validation_run
    val_faces, model = val_set_and_model(data_root)
    single_correct, single_seen = validation_counts(model, val_faces, 16, True)
    single = validate(model, val_faces, 16, True)
    results = [torch.load(tmp_path / f"val{r}.pt", weights_only=False) for r in range(2)]
    assert results[0]["shard"] == (0, 68) and results[1]["shard"] == (68, 137)
    for r in results:
        assert r["seen"].sum() == len(val_faces) == 137
        assert np.array_equal(r["seen"], np.bincount(val_faces.labels, minlength=7))
        assert np.array_equal(r["correct"], single_correct) and np.array_equal(r["seen"], single_seen)
        assert r["metrics"] == single, (r["metrics"], single)
    assert 0 < single_correct.sum() < 137, "a constant prediction would not test the per-class counts"


# ------------------------------------------------------------------------------------------------------------ training

def tiny(out, *overrides):
    return load_config(TINY, [*SETTINGS, f"train.out_dir={out}", *overrides])


def _train_worker(rank, out, data_root, overrides):
    result = train(tiny(out, *overrides), data_root=data_root, progress=False)
    torch.save({"model": result["model"].state_dict(), "objective": result["objective"].state_dict(),
                "steps": result["steps"]}, Path(out).parent / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ddp") / "run"
    spawn(_train_worker, str(out), data_root, [])
    return out


def test_two_process_run_writes_one_set_of_outputs(two_process_run):
    out = two_process_run
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "curves.png", "data.json", "last.pt", "metrics.csv"]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3, rows
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["train_state"]["step"] == 3 * 8, "8 global batches of 32 per epoch: each rank steps once per batch"
    seen = last["train_state"]["history"]
    assert all(0 <= r["train_acc"] <= 1 for r in seen)


def test_ranks_end_with_bit_identical_weights_and_centers(two_process_run):
    ranks = [torch.load(two_process_run.parent / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ("model", "objective"):
        for key, tensor in ranks[0][part].items():
            assert torch.equal(tensor, ranks[1][part][key]), f"{part} '{key}' differs between ranks"
    saved = torch.load(two_process_run / "last.pt", weights_only=True)  # rank 0's final state, written by rank 0
    assert torch.equal(saved["objective"]["centers.centers"], ranks[0]["objective"]["centers.centers"])
    for key, tensor in saved["state_dict"].items():
        assert torch.equal(tensor, ranks[0]["model"][key]), key


def test_autograd_centers_stay_identical_across_ranks(tmp_path, data_root):
    out = tmp_path / "run"
    spawn(_train_worker, str(out), data_root, ["loss.center_update=autograd", "train.max_steps=2",
                                                  "data.max_per_class=20"])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["steps"] == 2
    centers = [r["objective"]["centers.centers"] for r in ranks]
    assert torch.equal(*centers), "autograd centers differ between ranks"
    for key, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, ranks[1]["model"][key]), key


def test_recipe_options_train_in_sync_across_ranks(tmp_path, data_root):
    """EMA (its BN statistics broadcast before the sharded validation), mixup and smoothing under two processes."""
    out = tmp_path / "run"
    spawn(_train_worker, str(out), data_root, ["train.ema_decay=0.9", "augment.mixup=0.4", "loss.label_smoothing=0.1",
                                                  "train.epochs=2", "data.max_per_class=20"])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for part in ("model", "objective"):
        for key, tensor in ranks[0][part].items():
            assert torch.equal(tensor, ranks[1][part][key]), f"{part} '{key}' differs between ranks"
    saved = torch.load(out / "last.pt", weights_only=True)
    for key, tensor in saved["train_state_dict"].items():
        assert torch.equal(tensor, ranks[0]["model"][key]), key
    averaged = {k.removeprefix("module."): v for k, v in saved["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in averaged.items()), "best/last weights are the EMA copy"
    assert not all(torch.equal(saved["state_dict"][k], saved["train_state_dict"][k]) for k in averaged)


def torchrun(*args, run_py: bool = True, **kwargs):
    """`torchrun --nproc_per_node 2 run.py ARGS` (or a script given as the first arg) in its own process group."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_DIST_TIMEOUT": "60"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), *([str(REPO / "run.py")] if run_py else []), *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def proc_stat(pid) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Every process below pid (Linux /proc): torchrun starts each rank in a session of its own, out of its group."""
    children = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if fields := proc_stat(entry.name):  # None: the process ended while we looked
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found += (below := children.get(todo.pop(), []))
        todo += below
    return found


def kill_tree(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL a process and all its descendants, and wait until every one is gone."""
    pids = [process.pid, *descendants(process.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    deadline = time.time() + timeout
    while any(alive(pid) for pid in pids[1:]):
        assert time.time() < deadline, f"processes {pids[1:]} outlived SIGKILL"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def test_killed_two_process_run_resumes_and_ends_like_a_straight_run(tmp_path, data_root, two_process_run):
    out = tmp_path / "killed"
    sets = [a for s in SETTINGS + [f"train.out_dir={out}"] for a in ("--set", s)]
    command = ["train", "--config", str(TINY), *sets, "--no-eval", "--no-progress", "--data-root", str(data_root)]
    process = torchrun(*command)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    kill_tree(process)  # torchrun and both ranks at once, like a lost machine
    killed_at = torch.load(out / "last.pt", weights_only=True)["train_state"]["step"]
    assert 0 < killed_at < 24, f"the run was not interrupted mid-way (step {killed_at})"

    resumed = torchrun(*command, "--resume")
    output, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, output
    assert f"resumed from {out / 'last.pt'}" in output
    a = torch.load(two_process_run / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert b["train_state"]["step"] == a["train_state"]["step"] == 24
    for name, tensor in a["state_dict"].items():
        assert torch.allclose(tensor.float(), b["state_dict"][name].float(), atol=1e-6), name
    assert torch.allclose(a["objective"]["centers.centers"], b["objective"]["centers.centers"], atol=1e-6)
    assert [r["val_acc"] for r in a["train_state"]["history"]] == [r["val_acc"] for r in b["train_state"]["history"]]

    # Resumed once more, the finished run has nothing left to do: both ranks exit cleanly and change nothing. (Before
    # teardown freed the DDP wrapper's reference cycles, about 1 such exit in 17 aborted in gloo at interpreter exit.)
    again = torchrun(*command, "--resume")
    output, _ = again.communicate(timeout=180)
    assert again.returncode == 0, output
    c = torch.load(out / "last.pt", weights_only=True)
    assert c["train_state"]["step"] == 24
    assert all(torch.equal(tensor, c["state_dict"][name]) for name, tensor in b["state_dict"].items())


# ----------------------------------------------------------------------------------------------------------- bad input

def world_size_errors(rank, out):
    """Run inside a 2-process group (the validation test's): the errors each rank raises."""
    messages = []
    for batch_size, train_size in [(33, 100), (1, 100), (2, 1)]:
        try:
            distributed.check_world_size(batch_size, train_size)
            messages.append(None)
        except ConfigError as error:
            messages.append(str(error))
    distributed.check_world_size(32, 100)  # fine
    try:
        distributed.wrap_model(torch.nn.BatchNorm2d(1), torch.device("cpu"), sync_batchnorm=True)
        messages.append(None)
    except ConfigError as error:
        messages.append(str(error))
    torch.save(messages, Path(out) / f"messages{rank}.pt")


def test_world_size_and_sync_batchnorm_errors_name_the_key_and_value(validation_run):
    for rank in range(2):
        odd, zero, too_few, sync_bn = torch.load(validation_run / f"messages{rank}.pt")
        assert "'train.batch_size': 33" in odd and "not divisible by WORLD_SIZE=2" in odd
        assert "'train.batch_size': 1" in zero and "per-rank batch of 0 images" in zero
        assert "WORLD_SIZE=2 exceeds the 1 training images" in too_few
        assert "'train.sync_batchnorm': true needs CUDA" in sync_bn


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_an_error(tmp_path, data_root):
    with pytest.raises(ConfigError, match="'train.device': 'cuda' requested but CUDA is not available"):
        train(tiny(tmp_path, "train.device=cuda"), data_root=data_root, progress=False)


def test_fp16_on_the_cpu_is_an_error(tmp_path, data_root):
    with pytest.raises(ConfigError, match="'train.precision': 'fp16' needs CUDA"):
        train(tiny(tmp_path, "train.device=cpu", "train.precision=fp16"), data_root=data_root, progress=False)


def test_nccl_missing_is_an_error(monkeypatch):
    if torch.distributed.is_nccl_available():
        pytest.skip("this torch build has NCCL")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "resolve_device", lambda *args: torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="'train.device': 'cuda' under torchrun needs the nccl backend"):
        distributed.init("cuda")


def test_bf16_autocast_trains_on_the_cpu(tmp_path, data_root):
    result = train(tiny(tmp_path, "train.precision=bf16", "train.max_steps=3"), data_root=data_root, progress=False)
    assert result["steps"] == 3
    saved = torch.load(result["last"], weights_only=True)
    assert all(t.dtype == torch.float32 for t in saved["state_dict"].values() if t.is_floating_point())


def test_a_failing_rank_brings_the_group_down_instead_of_hanging(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import torch\nfrom fer import distributed\ndistributed.init('cpu')\n"
                      "if distributed.rank() == 1:\n    raise ValueError('rank 1 fails on purpose')\n"
                      "distributed.all_reduce_sum(torch.ones(1))  # rank 0 waits for a peer that is gone\n")
    started = time.time()
    process = torchrun(str(script), run_py=False)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "ValueError: rank 1 fails on purpose" in output
    assert time.time() - started < 60, "the surviving rank waited too long"
