from pathlib import Path

import pytest

from fer.checkpoint import load_checkpoint, shipped_models
from fer.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 3, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    from fer.train import check_compatible

    check_compatible(cfg)


def write(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, "train:\n  lr_sheduler: cosine\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown key 'train\.lr_sheduler'"):
        load_config(path)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(write(tmp_path, "trian:\n  lr: 0.1\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"x\.yaml: 'train\.epochs': expected int, got str"):
        load_config(write(tmp_path, "train:\n  epochs: ten\n"))
    with pytest.raises(ConfigError, match=r"'train\.channels_last': expected bool"):
        load_config(write(tmp_path, "train:\n  channels_last: 1\n"))


def test_out_of_range_values(tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.lr': must be > 0"):
        load_config(write(tmp_path, "train:\n  lr: -0.1\n"))
    with pytest.raises(ConfigError, match=r"'augment\.hflip': must be in \[0, 1\]"):
        load_config(write(tmp_path, "augment:\n  hflip: 2\n"))
    with pytest.raises(ConfigError, match=r"'loss\.name': 'arcface' is not one of"):
        load_config(write(tmp_path, "loss:\n  name: arcface\n"))


@pytest.mark.parametrize("text, message", [
    ("data:\n  image_size: 39\n", r"x\.yaml: 'data\.image_size': must be in \[40, 112\], got 39"),
    ("data:\n  image_size: 113\n", r"x\.yaml: 'data\.image_size': must be in \[40, 112\], got 113"),
    ("data:\n  channels: 2\n", r"x\.yaml: 'data\.channels': 2 is not one of 1, 3"),
    ("data:\n  channels: rgb\n", r"x\.yaml: 'data\.channels': expected int, got str"),
])
def test_input_size_and_channels_are_checked(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_input_size_and_channels_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    default = load_config(path).data
    assert (default.image_size, default.channels) == (48, 1), "48 px gray stays the default"
    both = load_config(path, ["data.channels=3", "data.image_size=100"]).data
    assert (both.image_size, both.channels) == (100, 3)
    for edge in (40, 112):
        assert load_config(path, [f"data.image_size={edge}"]).data.image_size == edge
    with pytest.raises(ConfigError, match=r"with --set: 'data\.channels': 4 is not one of 1, 3"):
        load_config(path, ["data.channels=4"])


def test_override_goes_through_the_same_checks(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    assert load_config(path, ["train.lr=0.01"]).train.lr == 0.01
    assert load_config(path, ["data.max_per_class=null"]).data.max_per_class is None
    with pytest.raises(ConfigError, match=r"x\.yaml with --set: unknown key 'train\.learning_rate'"):
        load_config(path, ["train.learning_rate=0.01"])
    with pytest.raises(ConfigError, match=r"'train\.batch_size': expected int, got str"):
        load_config(path, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.lr"])


def test_int_accepted_for_float_and_round_trip(tmp_path):
    cfg = config_from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


STARTS_FROM_SHIPPED = [p for p in CONFIGS if load_config(p).train.init in shipped_models()]


def test_the_configs_that_start_from_a_shipped_model_are_the_expected_ones():
    assert [p.name for p in STARTS_FROM_SHIPPED] == ["default_distill.yaml", "finetune_default.yaml"]


@pytest.mark.parametrize("path", STARTS_FROM_SHIPPED, ids=lambda p: p.name)
def test_a_config_that_starts_from_a_shipped_model_has_its_architecture(path):
    """`train.init: NAME` copies weights from fer/weights/NAME.pt, which needs the same network and head."""
    cfg = load_config(path)
    spec = load_checkpoint(cfg.train.init)["model_spec"]
    assert (cfg.model.name, cfg.model.head) == (spec["name"], spec["head"]), f"{path.name}: init {cfg.train.init}"
    for teacher in cfg.train.teacher:  # a teacher sees the student's batch, so it takes the same input
        spec = load_checkpoint(teacher)["model_spec"]
        assert (spec["image_size"], spec.get("channels", 1)) == (cfg.data.image_size, cfg.data.channels), teacher
