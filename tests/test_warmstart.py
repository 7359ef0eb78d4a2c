"""Warm start (`train.init`, fer/warmstart.py): a run begins from a trained checkpoint's weights, rows matched by class."""

from pathlib import Path

import pytest
import torch

from fer.checkpoint import build_model, export_checkpoint, load_checkpoint, load_model, model_spec
from fer.config import ConfigError, load_config
from fer.labels import FER2013_CLASSES
from fer.train import train
from fer.warmstart import lineage, warm_start

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
# The warm-start source of the architecture tests: the shipped small ResNet `ferplus` (8 classes, contempt included;
# itself fine-tuned from an earlier small-ResNet `default`, so its lineage holds ferplus and rafdb).
SOURCE = "ferplus"
RESNET = ["model.name=resnet_small", "train.threads=1", "train.epochs=1", "train.checkpoint_every=100"]


def spec_for(classes, **changes):
    spec = model_spec("resnet_small", len(classes), "cosine", 1, 48, 10.0, 1)
    return {**spec, **changes}


def test_backbone_is_copied_and_classifier_rows_follow_the_class_names():
    source, _ = load_model(SOURCE)
    classes = ["pain", *reversed(FER2013_CLASSES)]  # a new class first, the shared ones in another order
    spec = spec_for(classes)
    torch.manual_seed(0)
    model = build_model(spec)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = warm_start(model, spec, classes, SOURCE)
    assert report["classes_new"] == ["pain"] and set(report["classes_copied"]) == set(FER2013_CLASSES)
    assert report["datasets"] == lineage(load_checkpoint(SOURCE)) and "ferplus" in report["datasets"]
    ours, theirs = model.state_dict(), source.state_dict()
    for key in theirs:
        if not key.startswith("head."):
            assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key
    for row, name in enumerate(classes):
        source_classes = load_checkpoint(SOURCE)["class_names"]
        expected = fresh["head.weight"][row] if name == "pain" else theirs["head.weight"][source_classes.index(name)]
        assert torch.equal(model.state_dict()["head.weight"][row], expected.float()), name


def test_lineage_is_the_own_datasets_plus_those_of_the_warm_start():
    assert lineage({"config": {"data": {"dataset": "rafdb"}}}) == ["rafdb"]
    mixed = {"config": {"data": {"dataset": "mixed", "sources": ["ferplus", "rafdb"]}}}
    assert lineage(mixed) == ["ferplus", "rafdb"]
    assert lineage({"config": {"data": {"dataset": "fer2013"}}, "warm_start": {"datasets": lineage(mixed)}}) == \
        ["fer2013", "ferplus", "rafdb"]


@pytest.mark.parametrize("changes, message", [
    ({"name": "resnet_medium"}, "name 'resnet_small', this run 'resnet_medium'"),
    ({"head": "linear"}, "head 'cosine', this run 'linear'"),
])
def test_a_different_architecture_is_a_config_error_naming_key_and_file(changes, message):
    spec = spec_for(FER2013_CLASSES, **changes)
    with pytest.raises(ConfigError, match=f"'train.init': .*{SOURCE}.pt is a different model .*{message}"):
        warm_start(build_model(spec), spec, list(FER2013_CLASSES), SOURCE)


def test_a_gray_model_starts_a_colour_one_with_the_same_response_on_real_colour_faces(data_root):
    """gray -> colour: the converted first convolution on a BGR face gives what the gray model gives on the face
    turned gray by OpenCV (up to its rounding to uint8); colour -> gray back again gives the gray model exactly."""
    import cv2
    import numpy as np

    from fer.config import DataConfig
    from fer.data.splits import read_split
    from fer.data.transforms import to_tensor

    faces = read_split(DataConfig(dataset="rafdb", channels=3, max_per_class=3), "train", data_root)
    colour = faces.images[:16]
    gray = np.stack([cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) for face in colour])
    source, _ = load_model(SOURCE)
    spec = spec_for(FER2013_CLASSES, channels=3)
    model = build_model(spec).eval()
    warm_start(model, spec, list(FER2013_CLASSES), SOURCE)
    shared = [load_checkpoint(SOURCE)["class_names"].index(name) for name in FER2013_CLASSES]
    with torch.no_grad():
        want, got = source(to_tensor(gray))[:, shared], model(to_tensor(colour))
    assert (want.argmax(1) == got.argmax(1)).float().mean() >= 0.9 and (want - got).abs().mean() < 0.01
    back = {k: v for k, v in model.state_dict().items()}
    from fer.warmstart import convert_input_channels
    stem = next(k for k, v in back.items() if v.ndim == 4 and v.shape[1] == 3)
    assert torch.allclose(convert_input_channels(back[stem], 1), source.state_dict()[stem], atol=1e-6)


def test_no_shared_class_is_a_config_error():
    classes = ["pos", "neg"]
    spec = spec_for(classes)
    with pytest.raises(ConfigError, match="'train.init': .* none of this run's classes"):
        warm_start(build_model(spec), spec, classes, SOURCE)


def test_a_warm_started_run_begins_where_the_checkpoint_is_and_records_it(tmp_path, data_root):
    """On real FER2013 faces, one short epoch at a tiny learning rate: from the shipped model the validation accuracy is
    the shipped model's level, from a random init it is chance; best.pt, last.pt and the export name the source."""
    architecture = load_checkpoint("fer2013")["model_spec"]["name"]  # the run takes the shipped model's architecture
    settings = [*RESNET, f"model.name={architecture}", "data.max_per_class=30", "train.lr=0.00001"]
    runs = {name: train(load_config(TINY, [f"train.out_dir={tmp_path / name}", *settings, *extra]),
                        data_root=data_root, progress=False)
            for name, extra in [("scratch", []), ("warm", ["train.init=fer2013"])]}
    assert runs["warm"]["best_val_acc"] > 0.45 > runs["scratch"]["best_val_acc"] + 0.15, \
        {name: r["best_val_acc"] for name, r in runs.items()}
    for path in (runs["warm"]["best"], runs["warm"]["last"]):
        assert load_checkpoint(path)["warm_start"]["source"].endswith("fer2013.pt")
    assert "warm_start" not in load_checkpoint(runs["scratch"]["best"])
    shipped = load_checkpoint(export_checkpoint(runs["warm"]["last"], "warm", weights_dir=tmp_path))
    last = torch.load(runs["warm"]["last"], weights_only=True)
    assert shipped["warm_start"] == last["warm_start"], "the shipped file names its starting weights"
    assert shipped["metrics"] == last["train_state"]["history"][-1], "last.pt ships with its last epoch's metrics"
    assert all(v.dtype == torch.float16 for v in shipped["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("key", ["train.init", "train.teacher"])
def test_a_bad_init_or_teacher_checkpoint_is_a_one_line_error_before_any_data_is_read(tmp_path, data_root, key):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    value = f"[{bad}]" if key == "train.teacher" else str(bad)
    cfg = load_config(TINY, [f"train.out_dir={tmp_path / 'run'}", *RESNET, "data.max_per_class=5", f"{key}={value}"])
    with pytest.raises(ConfigError, match=f"'{key}': {bad}: not a (fer|torch) checkpoint"):
        train(cfg, data_root=tmp_path / "no_data_here", progress=False)  # no dataset there: it is never looked for
    assert not (tmp_path / "run").exists(), "nothing written"


def test_init_and_teacher_checkpoints_are_read_once(tmp_path, data_root, monkeypatch):
    """check_sources reads them before the data and hands them on: warm_start and the Teacher read no file again."""
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    architecture = load_checkpoint("fer2013")["model_spec"]["name"]
    reads.clear()
    cfg = load_config(TINY, [f"train.out_dir={tmp_path / 'run'}", *RESNET, f"model.name={architecture}",
                             "data.max_per_class=5", "train.init=fer2013", "train.teacher=[fer2013]"])
    result = train(cfg, data_root=data_root, progress=False)
    assert sum(path.endswith("fer2013.pt") for path in reads) == 1, reads
    assert load_checkpoint(result["last"])["warm_start"]["source"].endswith("fer2013.pt")


def test_evaluate_flags_the_carve_a_warm_start_was_selected_on(tmp_path, data_root):
    """A model fine-tuned on FER2013 from weights selected on the RAF-DB carve: that carve is flagged as optimistic."""
    from fer.config import DataConfig
    from fer.evaluate import evaluate

    fer2013_run = load_checkpoint("fer2013")  # 48 px gray: the check is about flags, not the model's cost
    flags = {}
    for name, warm in [("plain", None), ("warm", {"source": "default.pt", "datasets": ["ferplus", "rafdb"]})]:
        path = tmp_path / f"{name}.pt"
        torch.save({**{k: v for k, v in fer2013_run.items() if k != "path"}, **({"warm_start": warm} if warm else {})},
                   path)
        report = evaluate(path, DataConfig(dataset="rafdb", max_per_class=3), "val", tmp_path / name,
                          data_root=data_root)
        flags[name] = (report["data"]["training_val_split"], report["data"]["init_val_split"])
    assert flags == {"plain": (False, False), "warm": (False, True)}, flags
