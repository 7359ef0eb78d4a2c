"""Typed, frozen experiment configs loaded from YAML.

The builder is strict (modelled on yacs' _merge_a_into_b): unknown keys, wrong types and out-of-range values are errors
that name the file and the dotted key. Command-line overrides (`--set train.lr=0.01`) go through the same checks.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fer.data import registry

DATASETS = registry.names()  # mixed: several at once (data.sources)
SOURCE_DATASETS = registry.sources()  # what data.sources and data.realign may name
LOSSES = ("softmax", "center", "island", "cosine_distance")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fer2013"
    path: str | None = None  # dataset location; None: <data root>/<dataset folder>
    image_size: int = 48
    val_fraction: float = 0.1  # carved from train (stratified, seeded) for datasets without a validation split
    max_per_class: int | None = None  # small real subsets for tests and quick runs
    class_map: dict[str, str] = field(default_factory=dict)
    exclude_unknown: bool = False  # folder layout: drop (and count) classes the model does not know
    dedup_train: bool = False  # drop train images that have a byte-identical copy in the test split
    channels: int = 1  # 1: gray faces; 3: BGR colour faces (gray-at-source datasets such as FER2013 are replicated)
    sources: list[str] = field(default_factory=list)  # dataset mixed: the datasets trained on together (fer.data.mixed)
    realign: list[str] = field(default_factory=list)  # datasets whose crops go through the face stage (fer.data.realign)
    realign_miss: str = "keep"  # a face the face stage does not find: keep (the crop resized) | drop; counted either way
    repeat: dict[str, int] = field(default_factory=dict)  # dataset mixed: a source's training faces seen N times an epoch


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    shift: float = 0.1  # fraction of the image size
    scale: float = 0.1  # zoom range, uniform in [1 - scale, 1 + scale]
    brightness_contrast: float = 0.0  # probability of a random brightness/contrast change
    erase: float = 0.0  # probability of erasing one random rectangle (CoarseDropout)
    crop_scale: float = 1.0  # random resized crop: smallest area fraction kept, in (0, 1]; 1 disables
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 disables
    cutmix: float = 0.0  # cutmix Beta(alpha, alpha); 0 disables (with both on, each mixed batch picks one at random)
    mix_prob: float = 1.0  # probability that a batch is mixed, when mixup or cutmix is on


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mini_xception"
    head: str = "cosine"  # keras | linear | cosine
    width: int = 1  # channel multiplier for the models that take one
    # The model's input when smaller than the data's: each batch is downsampled / turned gray for it (fer.data.view),
    # so a student trains on its teacher's batches (train.teacher at data.image_size and data.channels). None: the data's.
    input_size: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class LossConfig:
    name: str = "cosine_distance"
    scale: float = 10.0  # AM-Softmax s (Wu et al. 2019 tune s at m = 0.35)
    margin: float = 0.35  # AM-Softmax m (Wang et al. 2018)
    lambda_island: float = 0.01  # weight of the center/Island part (Cai et al. 2018)
    lambda1: float = 10.0  # weight of the Island pair term (Cai et al. 2018)
    intra: str = "euclidean"  # euclidean | cosine
    alpha: float = 0.5  # center step size (Wen et al. 2016)
    center_update: str = "delta"  # delta | autograd
    class_weighting: str = "none"  # none | balanced (inverse class frequency in the loss)
    label_smoothing: float = 0.0  # eps; with cosine_distance the margin stays on the target logit
    class_margins: str = "none"  # none | ldam (cosine_distance: m_j ~ n_j^(-1/4), the rarest class gets loss.margin)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 0.003
    weight_decay: float = 0.0001
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"  # onecycle | cosine | plateau | none
    early_stop_patience: int = 0  # epochs without validation improvement; 0 disables
    max_steps: int | None = None  # stop after this many optimizer steps (tests, smoke runs)
    balanced_sampling: bool = False
    seed: int = 0
    threads: int = 0  # torch threads; 0: all cores
    channels_last: bool = True  # ~2.5x faster for mini-Xception on this CPU (benchmarks/train_throughput.py)
    out_dir: str = "runs/default"
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints (last.pt)
    eval_batch_size: int = 256
    ema_decay: float = 0.0  # EMA of the weights per step, in [0, 1); validation, best.pt and export use it; 0 disables
    warmup_epochs: float = 0.0  # linear warm-up of the lr (cosine, none; onecycle: its rising phase); 0 disables
    defer_rebalance_epoch: int = 0  # DRW: class re-weighting from this epoch (counted from 0) on; 0 disables
    init: str = ""  # warm start: a checkpoint or shipped name whose weights start the model (fer/warmstart.py)
    teacher: list[str] = field(default_factory=list)  # checkpoints or shipped names; probabilities averaged
    distill_weight: float = 1.0  # weight of T^2 * KL(teacher_T || student_T), when train.teacher is set
    distill_temperature: float = 4.0  # T
    # Hardware (fer/device.py, fer/distributed.py). Under torchrun, batch_size is the GLOBAL batch: each of the N ranks
    # takes a disjoint batch_size / N slice of every batch of the one-process order.
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    # auto (bf16 where the hardware has it, else fp32) | fp32 | bf16 | fp16 (autocast; losses stay fp32; fp16: CUDA
    # only, with a GradScaler)
    precision: str = "fp32"
    sync_batchnorm: bool = False  # SyncBatchNorm across ranks (CUDA/NCCL only); off: each rank normalises its slice


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES = {
    "data.dataset": DATASETS,
    "data.realign_miss": ("keep", "drop"),
    "model.head": ("keras", "linear", "cosine"),
    "loss.name": LOSSES,
    "loss.intra": ("euclidean", "cosine"),
    "loss.center_update": ("delta", "autograd"),
    "loss.class_weighting": ("none", "balanced"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.schedule": ("onecycle", "cosine", "plateau", "none"),
    "loss.class_margins": ("none", "ldam"),
    "data.channels": (1, 3),
    "model.channels": (1, 3),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}
# Inclusive bounds: the sizes the models are tested at (tests/test_models.py); 40 px leaves a 3x3 map after the stages.
BOUNDS = {"data.image_size": (40, 112), "model.input_size": (40, 112)}
POSITIVE = {"data.image_size", "model.width", "loss.scale", "train.epochs", "train.batch_size", "train.lr", "train.eval_batch_size", "train.checkpoint_every",
            "data.max_per_class", "train.max_steps", "augment.crop_scale", "train.distill_temperature"}
NON_NEGATIVE = {"loss.margin", "loss.lambda_island", "loss.lambda1", "loss.alpha", "train.weight_decay", "train.momentum",
                "train.early_stop_patience", "train.threads", "augment.rotate", "augment.shift", "augment.scale",
                "augment.mixup", "augment.cutmix", "train.warmup_epochs", "train.defer_rebalance_epoch", "train.distill_weight"}
PROBABILITIES = {"data.val_fraction", "augment.hflip", "augment.brightness_contrast", "augment.erase", "loss.label_smoothing",
                 "augment.crop_scale", "augment.mix_prob", "train.ema_decay"}
BELOW_ONE = {"train.ema_decay"}  # a decay of 1 would freeze the average at the initial weights


class ConfigError(ValueError):
    pass


def _check_type(value, annotation, where: str):
    """Return value converted to the annotated type, or raise ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        annotation = next(a for a in options if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is list:  # a single string is a list of one
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a string or a list of strings, got {value!r}")
        return list(value)
    if origin is dict:
        kind = typing.get_args(annotation)[1]  # str or int values
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool)
                                                  for k, v in value.items()):
            raise ConfigError(f"{where}: expected a mapping of strings to {'strings' if kind is str else 'integers'}, "
                              f"got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool) or not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _check_range(key: str, value, where: str):
    if value is None:
        return
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, CHOICES[key]))}")
    if key in BOUNDS and not BOUNDS[key][0] <= value <= BOUNDS[key][1]:
        raise ConfigError(f"{where}: must be in [{BOUNDS[key][0]}, {BOUNDS[key][1]}], got {value!r}")
    if key in POSITIVE and value <= 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    if key in PROBABILITIES and not 0 <= value <= 1:
        raise ConfigError(f"{where}: must be in [0, 1], got {value!r}")
    if key in BELOW_ONE and value >= 1:
        raise ConfigError(f"{where}: must be < 1, got {value!r}")


def _build(cls, raw: dict, source: str, prefix: str = ""):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(fields)})")
    values = {}
    for name, value in raw.items():
        key = prefix + name
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], value, source, key + ".")
        else:
            values[name] = _check_type(value, hints[name], f"{source}: '{key}'")
            _check_range(key, values[name], f"{source}: '{key}'")
    return cls(**values)


def _check_data(data: DataConfig, source: str) -> None:
    """What no single key can check: the sources of a mixed dataset and which datasets are re-aligned."""
    for key in ("sources", "realign"):
        bad = [name for name in getattr(data, key) if name not in SOURCE_DATASETS]
        if bad:
            raise ConfigError(f"{source}: 'data.{key}': {bad[0]!r} is not one of {', '.join(SOURCE_DATASETS)}")
        if len(set(getattr(data, key))) != len(getattr(data, key)):
            raise ConfigError(f"{source}: 'data.{key}' names a dataset twice: {getattr(data, key)}")
    if data.dataset == registry.MIXED:
        if len(data.sources) < 2:
            raise ConfigError(f"{source}: 'data.sources' must name at least two datasets for dataset mixed")
        for images in dict.fromkeys(registry.get(name).images for name in data.sources):
            same = [name for name in data.sources if registry.get(name).images == images]
            if len(same) > 1:
                raise ConfigError(f"{source}: 'data.sources': {' and '.join(same)} are the same images; pick one")
        if data.path is not None:
            raise ConfigError(f"{source}: 'data.path' does not apply to dataset mixed (each source under the data root)")
    elif data.sources:
        raise ConfigError(f"{source}: 'data.sources' applies to dataset mixed only, not {data.dataset!r}")
    for name, times in data.repeat.items():
        if name not in data.sources:
            raise ConfigError(f"{source}: 'data.repeat': {name!r} is not among data.sources ({', '.join(data.sources)})")
        if times < 1:
            raise ConfigError(f"{source}: 'data.repeat.{name}': must be >= 1, got {times!r}")
    allowed = data.sources if data.dataset == registry.MIXED else [data.dataset]
    stray = [name for name in data.realign if name not in allowed]
    if stray:
        raise ConfigError(f"{source}: 'data.realign': {stray[0]!r} is not a dataset of this config ({', '.join(allowed)})")


def _check_model_input(config: "Config", source: str) -> None:
    """A model may take smaller or gray input than the data (a downsampled view), never larger or colour from gray."""
    model, data = config.model, config.data
    if model.input_size is not None and model.input_size > data.image_size:
        raise ConfigError(f"{source}: 'model.input_size' {model.input_size} is larger than 'data.image_size' "
                          f"{data.image_size}; the model's view is a downsampled batch")
    if model.channels is not None and model.channels > data.channels:
        raise ConfigError(f"{source}: 'model.channels' {model.channels} needs colour data ('data.channels' is "
                          f"{data.channels})")


def model_input(config: "Config") -> tuple[int, int]:
    """(size, channels) the model takes: model.input_size / model.channels, else the data's."""
    return (config.model.input_size or config.data.image_size, config.model.channels or config.data.channels)


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    config = _build(Config, raw or {}, source)
    _check_data(config.data, source)
    _check_model_input(config, source)
    return config


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Merge `section.key=value` strings (value parsed as YAML) into a raw config dict."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in (raw or {}).items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: expected key=value, got {item!r}")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"{source}: key must be 'section.key', got {dotted!r}")
        section, key = parts
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: '{section}' is not a section")
        raw[section][key] = yaml.safe_load(text)
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from error
    config = config_from_dict(raw, str(path))  # file errors name the file
    if overrides:
        config = config_from_dict(apply_overrides(raw, list(overrides)), f"{path} with --set")
    return config


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
