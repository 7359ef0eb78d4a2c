"""The dataset registry: every record is whole, config validation, the CLI and evaluation take their dataset facts from
it, and a new dataset is one record (here: FER2013's files under another name, read through the registry alone)."""

import dataclasses

import pytest

from fer import config
from fer.cli import build_parser
from fer.config import DataConfig
from fer.data import readers, registry
from fer.data.paths import data_root, dataset_path
from fer.data.splits import load_eval_split, native_config
from fer.evaluate import REPORT_SPLITS, TEST_SPLITS
from fer.evaluation.faces import completeness_problems


@pytest.mark.parametrize("name", registry.names())
def test_every_record_is_whole(name):
    d = registry.get(name)
    assert d.name == name
    if d.reader is not None:
        assert callable(getattr(readers, d.reader, None)), f"{name}: no reader fer.data.readers.{d.reader}"
    for role, split in d.roles.items():
        assert split in d.splits, f"{name}: its {role} split {split!r} is not one of {d.splits}"
    assert d.test_split in d.splits and set(d.official_sizes) <= set(d.splits), name
    assert d.redetect in ("crops", "photos"), name
    assert d.native_size is None or d.native_size >= 40, name  # a crop the face stage can find a face in


def test_config_cli_and_evaluation_take_the_registry():
    assert config.CHOICES["data.dataset"] == registry.names()
    assert set(config.SOURCE_DATASETS) == {n for n in registry.names() if registry.get(n).native_size}
    parser = build_parser()
    for name in registry.evaluable():
        assert parser.parse_args(["evaluate", "--dataset", name]).dataset == name
    with pytest.raises(SystemExit):  # mixed is evaluated source by source, never as one dataset
        parser.parse_args(["evaluate", "--dataset", registry.MIXED])
    assert REPORT_SPLITS == {n: registry.get(n).report_split for n in registry.evaluable()}
    assert TEST_SPLITS["rafdb"] == "test" and REPORT_SPLITS["rafdb"] == "val", "RAF-DB's test split is never reported"
    with pytest.raises(ValueError, match="unknown dataset 'affectnet'; expected one of fer2013"):
        registry.get("affectnet")


def test_a_new_dataset_is_one_record(monkeypatch):
    root = data_root()
    if not (root / "fer2013" / "test").is_dir():
        pytest.skip(f"FER2013 not found under {root}")
    record = dataclasses.replace(registry.get("fer2013"), name="fer2013-copy", selection_split="val",
                                 splits=("train", "val", "private"), official_sizes={"private": 3589})
    monkeypatch.setitem(registry.DATASETS, "fer2013-copy", record)
    cfg = DataConfig(dataset="fer2013-copy")
    assert dataset_path("fer2013-copy", None, root) == root / "fer2013"
    faces = load_eval_split(cfg, "private", root=root)
    assert len(faces) == 3589 and faces.name == "fer2013/private", (len(faces), faces.name)
    assert completeness_problems(faces, "fer2013-copy", "private") == []
    assert completeness_problems(faces.subset(range(100)), "fer2013-copy", "private"), "the record's size is checked"
    with pytest.raises(ValueError, match="fer2013-copy: unknown split 'public'; expected one of train, val, private"):
        load_eval_split(cfg, "public", root=root)
    assert native_config(cfg).image_size == 48 and native_config(cfg).channels == 3
