"""Several datasets as one training set (data.dataset: mixed, fer.data.mixed): config checks, the union of the sources'
training and selection parts on a small real data root (conftest.small_root), no test split read, a short real run."""

import json
from pathlib import Path

import numpy as np
import pytest

from fer.config import ConfigError, config_from_dict, load_config
from fer.data.paths import REPO_ROOT, data_root
from fer.data.splits import load_train_val
from fer.labels import FER2013_CLASSES

DATA = data_root()
pytestmark = pytest.mark.skipif(not (DATA / "rafdb" / "Image").is_dir() or not (DATA / "fer2013" / "test").is_dir(),
                                reason=f"FER2013 / RAF-DB not found under {DATA}")


@pytest.mark.parametrize("data, message", [
    ({"dataset": "mixed", "sources": ["fer2013"]}, "at least two"),
    ({"dataset": "mixed", "sources": ["fer2013", "ferplus"]}, "same images"),
    ({"dataset": "mixed", "sources": ["fer2013", "folder"]}, "'folder' is not one of"),
    ({"dataset": "mixed", "sources": ["fer2013", "rafdb"], "path": "/x"}, "data.path"),
    ({"dataset": "mixed", "sources": ["fer2013", "rafdb"], "realign": ["ferplus"]}, "not a dataset of this config"),
    ({"dataset": "rafdb", "sources": ["fer2013", "rafdb"]}, "mixed only"),
    ({"dataset": "mixed", "sources": ["rafdb", "rafdb"]}, "twice"),
    ({"dataset": "mixed", "sources": ["fer2013", "rafdb"], "repeat": {"ferplus": 2}}, "'data.repeat': 'ferplus' is not"),
    ({"dataset": "mixed", "sources": ["fer2013", "rafdb"], "repeat": {"rafdb": 0}}, "'data.repeat.rafdb': must be >= 1"),
    ({"dataset": "mixed", "sources": ["fer2013", "rafdb"], "repeat": {"rafdb": 1.5}}, "mapping of strings to integers"),
])
def test_mixed_config_mistakes_are_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": data}, "x.yaml")


def test_shipped_multi_dataset_configs_load():
    default = load_config(REPO_ROOT / "configs" / "default_resnet_cosine.yaml")
    assert default.data.dataset == "mixed" and default.data.sources == ["ferplus", "rafdb"]
    assert default.data.realign == ["rafdb"] and default.model.name == "resnet_small"
    assert load_config(REPO_ROOT / "configs" / "ferplus_resnet_cosine.yaml").data.dataset == "ferplus"


@pytest.mark.parametrize("first", ["fer2013", "ferplus"])
def test_union_of_training_and_selection_parts_without_test_splits(small_root, first):
    base = {"sources": [first, "rafdb"], "realign": ["rafdb"], "val_fraction": 0.25}
    mixed_train, mixed_val = load_train_val(config_from_dict({"data": {"dataset": "mixed", **base}}).data, 0, small_root)
    own = {name: load_train_val(config_from_dict({"data": {"dataset": name, "val_fraction": 0.25}}).data, 0, small_root)
           for name in (first, "rafdb")}
    assert mixed_train.class_names == FER2013_CLASSES
    for mixed, part in ((mixed_train, 0), (mixed_val, 1)):
        expected = [p for name in (first, "rafdb") for p, label in zip(own[name][part].paths, own[name][part].labels)
                    if own[name][part].class_names[label] in FER2013_CLASSES]
        assert mixed.paths == expected, "the union keeps each source's own protocol and order"
        names = [own[n][part].class_names[k] for n in (first, "rafdb") for k in own[n][part].labels]
        assert [mixed.class_names[k] for k in mixed.labels] == [n for n in names if n != "contempt"]
        assert not any("PrivateTest_" in p or "/test_" in p for p in mixed.paths), "a test split was read"
    assert any("PublicTest_" in p for p in mixed_val.paths) and any("rafdb" in p for p in mixed_val.paths)
    assert mixed_train.notes["rafdb:realign"]["faces"] == len(own["rafdb"][0])
    if first == "ferplus":
        contempt = int(np.sum(np.array(own["ferplus"][0].labels) == own["ferplus"][0].class_names.index("contempt")))
        assert mixed_train.excluded.get("ferplus:contempt", 0) == contempt, mixed_train.excluded


def test_repeat_lists_a_sources_training_faces_again_and_leaves_selection_alone(small_root):
    base = {"dataset": "mixed", "sources": ["fer2013", "rafdb"], "val_fraction": 0.25}
    once = load_train_val(config_from_dict({"data": base}).data, 0, small_root)
    twice = load_train_val(config_from_dict({"data": {**base, "repeat": {"rafdb": 2}}}).data, 0, small_root)
    rafdb = [p for p in once[0].paths if "rafdb" in p]
    assert twice[0].paths == [p for p in once[0].paths if "rafdb" not in p] + rafdb + rafdb
    assert twice[1].paths == once[1].paths, "the selection union is not repeated"
    assert twice[0].notes["rafdb:repeat"] == 2 and "fer2013:repeat" not in twice[0].notes


def tiny_mixed_run(small_root, out):
    from fer.train import train

    cfg = config_from_dict({"data": {"dataset": "mixed", "sources": ["ferplus", "rafdb"], "realign": "rafdb",
                                     "val_fraction": 0.25},
                            "model": {"name": "mini_xception", "head": "cosine"}, "loss": {"name": "cosine_distance"},
                            "train": {"epochs": 1, "batch_size": 16, "threads": 1, "out_dir": str(out)}})
    return cfg, train(cfg, data_root=small_root, progress=False)


def test_mixed_training_run_records_its_data(small_root, tmp_path):
    _, result = tiny_mixed_run(small_root, tmp_path / "run")
    assert Path(result["best"]).is_file()
    manifest = json.loads((tmp_path / "run" / "data.json").read_text())
    assert manifest["train"]["name"].startswith("mixed[ferplus/train + rafdb/train")
    assert "rafdb:realign" in manifest["train"]["notes"] and "rafdb:realign" in manifest["val"]["notes"]
    assert sum(manifest["val"]["class_counts"].values()) == manifest["val"]["n"] > 0


@pytest.mark.slow  # ~20 s: evaluates on FER+ PrivateTest and the whole RAF-DB carve
def test_mixed_run_is_evaluated_on_each_source_report_split(small_root, tmp_path):
    from fer.evaluate import evaluate_after_training

    cfg, result = tiny_mixed_run(small_root, tmp_path / "run")
    reports = evaluate_after_training(cfg, result["best"])  # each source's whole report split (the real data root)
    assert set(reports) == {"ferplus", "rafdb"}
    assert reports["ferplus"]["data"]["split"] == "private" and reports["ferplus"]["excluded"]["contempt"] > 0
    assert reports["rafdb"]["data"]["split"] == "val" and reports["rafdb"]["data"]["detect_faces"]
    assert reports["rafdb"]["data"]["training_val_split"], "the carve the run selected on, recarved with its seed"
    for source in reports:
        assert (tmp_path / "run" / "eval" / source / "report.json").is_file()
