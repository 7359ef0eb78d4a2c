"""fer.device: `train.precision: auto` takes bf16 only where the hardware computes it. A CPU without bf16 units
(AVX2 only) emulates it, several times slower than fp32, so there 'auto' must mean fp32."""

import logging
from pathlib import Path

import pytest
import torch

from fer import device as fer_device
from fer.config import ConfigError, load_config
from fer.device import native_bf16, resolve_precision
from fer.train import train

CPU = torch.device("cpu")
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def cpu_flags() -> set[str] | None:
    """The x86 feature flags the kernel reports, or None where /proc/cpuinfo has none (not Linux, not x86)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_native_bf16_on_this_cpu_agrees_with_the_kernels_feature_flags():
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no x86 feature flags in /proc/cpuinfo")
    expected = bool(flags & {"amx_tile", "avx512_bf16"})
    assert native_bf16(CPU) == expected, f"native_bf16 says {native_bf16(CPU)}; the CPU flags say {expected}"


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_resolves_to_bf16_only_where_it_is_native(monkeypatch, native, expected):
    monkeypatch.setattr(fer_device, "native_bf16", lambda device: native)
    assert resolve_precision("auto", CPU) == expected


def test_explicit_precisions_are_kept_and_emulated_bf16_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(fer_device, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="fer.device"):
        assert resolve_precision("fp32", CPU) == "fp32"
        assert caplog.text == "", "fp32 needs no warning"
        assert resolve_precision("bf16", CPU) == "bf16"
    assert "bf16 on a CPU without bf16 units" in caplog.text and "'auto' picks fp32" in caplog.text


def test_an_unknown_precision_is_an_error_naming_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match="'train.precision': 'bf32' is not one of auto, fp32, bf16, fp16"):
        resolve_precision("bf32", CPU)
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(TINY, [f"train.out_dir={tmp_path}", "train.precision=bf32"])


@pytest.mark.parametrize("native, same_as", [(False, "fp32"), (True, "bf16")])
def test_a_run_with_auto_precision_trains_exactly_like_the_precision_it_resolves_to(
        monkeypatch, tmp_path, data_root, caplog, native, same_as):
    monkeypatch.setattr(fer_device, "native_bf16", lambda device: native)

    def weights(precision: str) -> dict:
        cfg = load_config(TINY, [f"train.out_dir={tmp_path / precision}", "train.threads=1", "train.max_steps=2",
                                 f"train.precision={precision}"])
        result = train(cfg, data_root=data_root, progress=False)
        return torch.load(result["last"], weights_only=True)["state_dict"]

    with caplog.at_level(logging.INFO, logger="fer.device"):
        auto = weights("auto")
    assert f"train.precision: auto -> {same_as}" in caplog.text
    explicit = weights(same_as)
    assert auto.keys() == explicit.keys()
    assert all(torch.equal(auto[k], explicit[k]) for k in auto), f"auto did not train like {same_as}"
    if same_as == "bf16":  # and the two precisions really differ, so the comparison could have failed
        fp32 = weights("fp32")
        assert not all(torch.equal(auto[k], fp32[k]) for k in auto), "bf16 and fp32 runs gave identical weights"
