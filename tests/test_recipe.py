"""Recipe options (fer/recipe.py and their wiring in fer/train.py): each changes what it should, and nothing when off."""

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from fer.checkpoint import export_checkpoint, load_model
from fer.config import AugmentConfig, ConfigError, config_from_dict, load_config
from fer.data.paths import REPO_ROOT
from fer.data.splits import load_train_val
from fer.data.transforms import build_augmentation, to_tensor
from fer.face.model_file import sha256_of
from fer.labels import FER2013_CLASSES
from fer.models import create_model
from fer.recipe import Teacher, distillation_loss, make_ema, mix_batch, recalibrate_bn
from fer.train import make_schedule, train, validate
from fer.warmstart import lineage

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def tiny(out, *overrides):
    return load_config(TINY, [f"train.out_dir={out}", "train.threads=1", *overrides])


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------------------------
# EMA


def test_ema_off_is_none_and_on_follows_the_ema_formula_for_parameters_and_bn_buffers():
    assert make_ema(torch.nn.Linear(2, 2), 0.0) is None
    torch.manual_seed(0)
    model = create_model("mini_xception", 7, head="cosine")
    ema = make_ema(model, 0.9)
    expected = {k: v.clone().double() for k, v in model.state_dict().items() if v.is_floating_point()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        model.train()
        model(torch.randn(8, 1, 48, 48)).sum().backward()
        optimizer.step()
        ema.update_parameters(model)
        current = model.state_dict()
        for k in expected:  # the first update copies the weights, later ones move 10 % of the way
            expected[k] = current[k].double() if step == 0 else 0.9 * expected[k] + 0.1 * current[k].double()
    averaged = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(averaged[k].double(), v, atol=1e-5), k
    bn_mean = next(k for k in averaged if k.endswith("running_mean"))
    assert not torch.equal(averaged[bn_mean], model.state_dict()[bn_mean]), "BN statistics are averaged, not copied"


def test_recalibrate_bn_gives_the_statistics_of_the_weights_on_real_faces(data_root):
    """After recalibration the eval-mode network normalises like train mode does on those faces (batch statistics),
    whatever the buffers held before; garbage statistics are what an averaged copy can carry (recalibrate_bn says why)."""
    cfg = load_config(TINY, ["data.max_per_class=20"])
    faces, _ = load_train_val(cfg.data, seed=0, root=data_root)
    torch.manual_seed(0)
    model = create_model("mini_xception", 7, head="cosine")
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.fill_(5.0)  # far from any real statistics
    x = to_tensor(faces.images)
    with torch.no_grad():
        reference = model.train()(x)  # one batch of all faces: normalised by their own statistics
        before = model.eval()(x)
        recalibrate_bn(model, faces, batch_size=len(faces), device=torch.device("cpu"))
        after = model.eval()(x)
    assert not model.training, "recalibration leaves the mode as it found it"
    assert not torch.allclose(before, reference, atol=1e-2), "the garbage statistics change the output"
    assert torch.allclose(after, reference, atol=2e-3), "recomputed statistics match the batch statistics"


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ema")
    cfg = tiny(out, "train.epochs=2", "data.max_per_class=20", "train.ema_decay=0.8")
    return cfg, train(cfg, data_root=data_root, progress=False)


def test_ema_weights_are_validated_saved_in_best_and_shipped(ema_run, data_root):
    cfg, result = ema_run
    best = torch.load(result["best"], weights_only=True)
    last = torch.load(result["last"], weights_only=True)
    ema_weights = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert same_weights(last["state_dict"], ema_weights), "last.pt's state_dict is the EMA copy"
    assert not same_weights(last["state_dict"], last["train_state_dict"]), "the trained weights are kept apart"
    # best.pt holds the weights validation measured: re-validating them reproduces the recorded accuracy
    _, val_faces = load_train_val(cfg.data, seed=cfg.train.seed, root=data_root)
    model, _ = load_model(result["best"])
    assert validate(model, val_faces, 256, True)["val_acc"] == best["metrics"]["val_acc"]
    if best["metrics"]["epoch"] == result["epochs"]:  # best is the last epoch: its weights are the final EMA copy
        assert same_weights(best["state_dict"], last["state_dict"])


# ---------------------------------------------------------------------------------------------------------------------
# mixup / cutmix


def test_mix_batch_off_returns_the_batch_untouched():
    x, labels = torch.randn(6, 1, 8, 8), torch.arange(6)
    got, labels_b, lam = mix_batch(x, labels, AugmentConfig(), seed=0, epoch=0, batch=0)
    assert got is x and labels_b is None and lam == 1.0
    never = AugmentConfig(mixup=0.4, mix_prob=0.0)
    assert mix_batch(x, labels, never, 0, 0, 0)[0] is x


def test_mixup_mixes_images_and_labels_with_the_same_partner_and_is_seeded():
    x = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 1, 4, 4).clone()  # image i is constant i
    labels = torch.arange(6)
    mixed, labels_b, lam = mix_batch(x, labels, AugmentConfig(mixup=0.4), seed=3, epoch=1, batch=2)
    assert 0 < lam < 1 and not torch.equal(labels_b, labels)
    assert torch.allclose(mixed[:, 0, 0, 0], lam * labels.float() + (1 - lam) * labels_b.float())
    again = mix_batch(x, labels, AugmentConfig(mixup=0.4), seed=3, epoch=1, batch=2)
    assert torch.equal(again[0], mixed) and torch.equal(again[1], labels_b) and again[2] == lam, "same (seed, epoch, batch)"
    other = mix_batch(x, labels, AugmentConfig(mixup=0.4), seed=3, epoch=1, batch=3)
    assert other[2] != lam, "another batch draws anew"
    state = torch.get_rng_state()
    mix_batch(x, labels, AugmentConfig(mixup=0.4, cutmix=1.0), seed=3, epoch=1, batch=4)
    assert torch.equal(torch.get_rng_state(), state), "torch's RNG is untouched (resume stays exact)"


def test_cutmix_lam_is_the_share_of_pixels_kept():
    x = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 1, 48, 48).clone()
    labels = torch.arange(8)
    for batch in range(5):
        mixed, labels_b, lam = mix_batch(x, labels, AugmentConfig(cutmix=1.0), seed=0, epoch=0, batch=batch)
        kept = (mixed == x).float().mean(dim=(1, 2, 3))  # (B,)
        pasted = (mixed == labels_b.float()[:, None, None, None]).float().mean(dim=(1, 2, 3))
        moved = labels_b != labels
        assert torch.allclose(kept[moved], torch.full_like(kept[moved], lam))
        assert torch.allclose(pasted[moved], torch.full_like(pasted[moved], 1 - lam))


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation and schedule


def test_random_resized_crop_only_when_asked():
    assert not any(isinstance(t, A.RandomResizedCrop) for t in build_augmentation(AugmentConfig(), 48).transforms)
    augmentation = build_augmentation(AugmentConfig(crop_scale=0.5), 48)
    assert isinstance(augmentation.transforms[0], A.RandomResizedCrop)
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    augmentation.set_random_seed(0)
    out = augmentation(image=face)["image"]
    assert out.shape == (48, 48) and out.dtype == np.uint8 and not np.array_equal(out, face)


def lr_curve(optimizer_name, schedule, warmup, epochs=10, steps_per_epoch=10):
    cfg = config_from_dict({"train": {"optimizer": optimizer_name, "schedule": schedule, "warmup_epochs": warmup,
                                      "epochs": epochs, "lr": 0.1}})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    total = epochs * steps_per_epoch
    scheduler = make_schedule(cfg, optimizer, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_linear_warmup_then_cosine_decay(optimizer_name):
    lrs = lr_curve(optimizer_name, "cosine", warmup=2)  # 20 warm-up steps of 100
    assert lrs[0] == pytest.approx(0.1 / 20) and lrs[19] == pytest.approx(0.1)
    assert all(b > a for a, b in zip(lrs[:19], lrs[1:20])), "linear rise"
    assert all(b <= a for a, b in zip(lrs[20:], lrs[21:])) and lrs[-1] < 0.001, "cosine decay to ~0"
    assert lr_curve(optimizer_name, "cosine", warmup=0)[0] == pytest.approx(0.1), "no warm-up: starts at lr"
    flat = lr_curve(optimizer_name, "none", warmup=1)
    assert flat[0] == pytest.approx(0.01) and flat[10:] == pytest.approx([0.1] * 90)
    onecycle = lr_curve(optimizer_name, "onecycle", warmup=3)
    assert int(np.argmax(onecycle)) == 29, "onecycle peaks at the last warm-up step, as the linear warm-up does"


# ---------------------------------------------------------------------------------------------------------------------
# Config and combinations


@pytest.mark.parametrize("key, value, message", [
    ("train.ema_decay", 1.0, "must be < 1"), ("augment.mix_prob", 1.5, r"must be in \[0, 1\]"),
    ("augment.crop_scale", 0.0, "must be > 0"), ("augment.mixup", -1, "must be >= 0"),
    ("loss.class_margins", "ladm", "is not one of none, ldam"), ("train.teacher", 3, "string or a list of strings"),
    ("train.distill_temperature", 0, "must be > 0"), ("train.warmup_epochs", -1, "must be >= 0"),
])
def test_new_keys_are_validated(key, value, message):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=f"'{key}': .*{message}"):
        config_from_dict({section: {name: value}})


def test_teacher_accepts_one_name_or_a_list():
    assert config_from_dict({"train": {"teacher": "fer2013"}}).train.teacher == ["fer2013"]
    assert config_from_dict({"train": {"teacher": ["fer2013", "rafdb"]}}).train.teacher == ["fer2013", "rafdb"]


@pytest.mark.parametrize("overrides, message", [
    (["loss.name=softmax", "model.head=keras", "loss.class_margins=ldam"], "'loss.class_margins' needs loss"),
    (["train.defer_rebalance_epoch=1", "train.balanced_sampling=true"], "'train.defer_rebalance_epoch' re-weights"),
    (["train.defer_rebalance_epoch=2"], "must be < 'train.epochs' 2"),
    (["train.warmup_epochs=1", "train.schedule=plateau"], "'train.warmup_epochs' works with"),
])
def test_incompatible_recipe_options(tmp_path, data_root, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny(tmp_path, *overrides), data_root=data_root, progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# All options on: training runs, changes the result, and --resume ends exactly like a straight run

RECIPE = ["train.ema_decay=0.9", "augment.mixup=0.4", "augment.cutmix=1.0", "augment.mix_prob=0.8",
          "augment.crop_scale=0.6", "train.optimizer=sgd", "train.lr=0.02", "train.schedule=cosine",
          "train.warmup_epochs=1", "loss.class_margins=ldam", "loss.label_smoothing=0.1", "train.defer_rebalance_epoch=2"]


def test_recipe_resume_ends_like_a_straight_run(tmp_path, imbalanced_folder):
    # unequal class sizes, so the LDAM margins and the deferred weights are not uniform
    settings = ["train.epochs=3", "data.dataset=folder", f"data.path={imbalanced_folder}", "data.max_per_class=null",
                "train.batch_size=16", "train.checkpoint_every=2", *RECIPE]
    straight = train(tiny(tmp_path / "straight", *settings), progress=False)
    stopped = train(tiny(tmp_path / "resumed", *settings, "train.max_steps=14"), progress=False)
    assert stopped["steps"] == 14 < straight["steps"] and 14 % (straight["steps"] // 3), "stopped mid-epoch"
    resumed = train(tiny(tmp_path / "resumed", *settings), resume=True, progress=False)
    a, b = torch.load(straight["last"], weights_only=True), torch.load(resumed["last"], weights_only=True)
    assert resumed["steps"] == straight["steps"]
    for key in ("state_dict", "train_state_dict", "ema", "objective"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor.float(), b[key][name].float(), atol=1e-6), (key, name)
    assert [r["val_acc"] for r in a["train_state"]["history"]] == [r["val_acc"] for r in b["train_state"]["history"]]
    plain = train(tiny(tmp_path / "plain", *settings[:5]), progress=False)
    assert not same_weights(torch.load(plain["last"], weights_only=True)["state_dict"], a["state_dict"])


# ---------------------------------------------------------------------------------------------------------------------
# Knowledge distillation


def test_distillation_loss_matches_kl_and_vanishes_when_student_equals_teacher():
    logits, teacher_logits = torch.randn(5, 7), torch.randn(5, 7)
    temperature = 3.0
    p = torch.softmax(teacher_logits / temperature, 1)
    q = torch.softmax(logits / temperature, 1)
    naive = temperature ** 2 * (p * (p.log() - q.log())).sum(1).mean()
    assert distillation_loss(logits, p, temperature).item() == pytest.approx(naive.item(), rel=1e-5)
    assert distillation_loss(teacher_logits, p, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_from_a_shipped_model_on_real_faces(data_root):
    cfg = config_from_dict({"data": {"max_per_class": 5}})
    faces, _ = load_train_val(cfg.data, seed=0, root=data_root)
    teacher = Teacher(["fer2013", "fer2013"], faces.class_names, 48)
    from fer.data.transforms import to_tensor
    probs = teacher.probs(to_tensor(faces.images), temperature=1.0)
    assert probs.shape == (len(faces), 7) and torch.allclose(probs.sum(1), torch.ones(len(faces)), atol=1e-5)
    accuracy = (probs.argmax(1).numpy() == faces.labels).mean()
    assert accuracy > 0.5, f"the shipped model is a useful teacher on its own training faces ({accuracy:.2f})"
    softer = teacher.probs(to_tensor(faces.images), temperature=4.0)
    assert (softer.max(1).values < probs.max(1).values).all(), "a higher temperature softens"


@pytest.mark.parametrize("class_names, size, message", [
    (list(reversed(FER2013_CLASSES)), 48, "predicts"), (list(FER2013_CLASSES), 64, "takes 1 x 48 px input"),
])
def test_teacher_that_does_not_fit_is_a_config_error_naming_key_and_file(class_names, size, message):
    with pytest.raises(ConfigError, match=f"'train.teacher': .*fer2013.pt {message}"):
        Teacher(["fer2013"], class_names, size)


def test_distillation_changes_the_loss_and_weight_zero_equals_no_teacher(tmp_path, data_root):
    settings = ["train.epochs=1", "data.max_per_class=10", "train.checkpoint_every=100"]
    runs = {name: train(tiny(tmp_path / name, *settings, *extra), data_root=data_root, progress=False)
            for name, extra in [("none", []), ("zero", ["train.teacher=fer2013", "train.distill_weight=0"]),
                                ("on", ["train.teacher=fer2013"])]}
    last = {name: torch.load(r["last"], weights_only=True) for name, r in runs.items()}
    assert same_weights(last["none"]["state_dict"], last["zero"]["state_dict"]), "weight 0 trains as without a teacher"
    loss = {name: ck["train_state"]["history"][0]["train_loss"] for name, ck in last.items()}
    assert loss["zero"] == loss["none"] and loss["on"] != loss["none"], loss
    assert not same_weights(last["none"]["state_dict"], last["on"]["state_dict"])
    shipped_teacher = REPO_ROOT / "fer" / "weights" / "fer2013.pt"
    assert "teachers" not in last["none"]
    assert last["on"]["teachers"] == [{"source": str(shipped_teacher), "sha256": sha256_of(shipped_teacher),
                                       "datasets": lineage(torch.load(shipped_teacher, weights_only=True))}]
    exported = torch.load(export_checkpoint(runs["on"]["last"], "student", weights_dir=tmp_path), weights_only=True)
    assert exported["teachers"] == last["on"]["teachers"], "the shipped file keeps its teachers"


# ---------------------------------------------------------------------------------------------------------------------
# The trainer's objective: mixed labels, per-class margins, deferred re-balancing


def test_objective_mixed_labels_rule_for_softmax_center_and_island():
    from fer import losses
    from fer.train import Objective

    torch.manual_seed(0)
    embeddings, outputs = torch.randn(8, 16), torch.randn(8, 7)
    labels_a, labels_b = torch.randint(0, 7, (8,)), torch.randint(0, 7, (8,))
    ce = torch.nn.functional.cross_entropy
    for name in ("softmax", "center", "island"):
        cfg = config_from_dict({"loss": {"name": name, "label_smoothing": 0.1}, "model": {"head": "linear"}})
        for lam in (0.3, 0.7):
            mixed, reference = Objective(cfg, 7, 16, None).eval(), Objective(cfg, 7, 16, None).eval()
            reference.load_state_dict(mixed.state_dict())
            expected = lam * ce(outputs, labels_a, label_smoothing=0.1) + (1 - lam) * ce(outputs, labels_b, label_smoothing=0.1)
            if name != "softmax":
                dominant = labels_a if lam >= 0.5 else labels_b
                expected = expected + cfg.loss.lambda_island * reference.centers(embeddings, dominant)
            got = mixed(embeddings, outputs, labels_a, labels_b, lam)
            assert torch.allclose(got, expected, atol=1e-6), (name, lam)
        unmixed = Objective(cfg, 7, 16, None).eval()
        unmixed.load_state_dict(mixed.state_dict())
        assert torch.equal(unmixed(embeddings, outputs, labels_a), mixed(embeddings, outputs, labels_a)), name
    assert losses.dominant_labels(labels_a, None, 1.0) is labels_a


def test_objective_ldam_margins_come_from_the_training_counts():
    from fer import losses
    from fer.train import Objective

    counts = np.array([40, 6, 40, 80, 50, 35, 45])
    ldam = Objective(config_from_dict({"loss": {"class_margins": "ldam"}}), 7, 16, None, counts)
    assert torch.allclose(ldam.centers.margin, losses.ldam_margins(counts, 0.35))
    assert Objective(config_from_dict({}), 7, 16, None, counts).centers.margin == 0.35, "default: one margin"
    weights = torch.rand(7)  # loss.class_weighting: balanced now reaches the AM-Softmax part of cosine_distance too
    assert Objective(config_from_dict({}), 7, 16, weights, counts).centers.class_weights is weights


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory, data_root):
    """Real FER2013 training faces, linked (not copied) into a class-folder set with unequal class sizes."""
    root = tmp_path_factory.mktemp("imbalanced")
    for name, count in {"angry": 14, "disgust": 4, "fear": 12, "happy": 30, "neutral": 16, "sad": 12, "surprise": 8}.items():
        (root / name).mkdir()
        for source in sorted((data_root / "fer2013" / "train" / name).iterdir())[:count]:
            (root / name / source.name).symlink_to(source)
    return root


@pytest.mark.parametrize("loss, head", [("cosine_distance", "cosine"), ("softmax", "keras")])
def test_deferred_rebalancing_changes_only_the_late_epochs(tmp_path, imbalanced_folder, loss, head):
    settings = ["train.epochs=2", "data.dataset=folder", f"data.path={imbalanced_folder}", f"loss.name={loss}",
                f"model.head={head}", "data.max_per_class=null"]
    plain = train(tiny(tmp_path / "plain", *settings), progress=False)
    deferred = train(tiny(tmp_path / "drw", *settings, "train.defer_rebalance_epoch=1"), progress=False)
    a = torch.load(plain["last"], weights_only=True)["train_state"]["history"]
    b = torch.load(deferred["last"], weights_only=True)["train_state"]["history"]
    assert a[0]["train_loss"] == b[0]["train_loss"], "the first epoch trains unweighted"
    assert a[1]["train_loss"] != b[1]["train_loss"], "re-weighting is on from the deferred epoch"
