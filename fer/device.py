"""Where and in which precision to run: resolve `auto | cpu | cuda` and `auto | fp32 | bf16 | fp16`, autocast, copies.

Bad combinations stop before any work with a ConfigError naming the key and the value. fp32 on the CPU adds nothing
(no autocast, no scaler), so a CPU run computes exactly what it computed before devices existed.
"""

import contextlib
import logging

import torch

from fer.config import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto", key: str = "train.device", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is present, else cpu; 'cuda' without CUDA is an error naming `key`."""
    if name not in DEVICES:
        raise ConfigError(f"'{key}': {name!r} is not one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"'{key}': 'cuda' requested but CUDA is not available here "
                          f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use 'cpu' or 'auto'")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"'{key}': local rank {local_rank} needs GPU {local_rank}, but only "
                          f"{torch.cuda.device_count()} GPU(s) are visible")
    return torch.device("cuda", local_rank)


def check_precision(precision: str, device: torch.device, key: str = "train.precision") -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"'{key}': {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"'{key}': 'fp16' needs CUDA (device is {device.type}); use 'bf16' or 'fp32' on a CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"'{key}': 'bf16' is not supported by {torch.cuda.get_device_name(device)}; use 'fp16'")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16.

    Elsewhere oneDNN emulates bf16 and autocast is an order of magnitude slower than fp32; with AMX bf16 is the faster
    one (docs/speed.md, bf16 on a CPU). torch exposes the CPU checks only as private helpers, hence getattr.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device, key: str = "train.precision") -> str:
    """Check `precision` and turn 'auto' into what this device runs fastest: bf16 where it is native, else fp32.

    An explicit bf16 on a CPU without bf16 units runs as asked, with a warning about the speed.
    """
    check_precision(precision, device, key)
    if precision == "auto":
        resolved = "bf16" if native_bf16(device) else "fp32"
        log.info("%s: auto -> %s (%s)", key, resolved, hardware_summary(device))
        return resolved
    if precision == "bf16" and not native_bf16(device):
        log.warning("%s: bf16 on a CPU without bf16 units (%s) is emulated, about 10x slower than fp32; "
                    "'auto' picks fp32 here", key, hardware_summary(device))
    return precision


def hardware_summary(device: torch.device) -> str:
    """'CPU AVX2, native bf16: no' or the GPU's name: what decides the fast precision."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native_bf16(device) else 'no'}"


def autocast(device: torch.device, precision: str):
    """Mixed precision for the model's forward; fp32 is a plain no-op context. The losses switch autocast off and
    compute in float32 themselves (fer/losses.py)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 only; disabled, its scale/step/update are plain backward/step/no-op."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch -> device: pinned memory and a non-blocking copy on CUDA; the same tensor on the CPU."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def cpu_state(state: dict) -> dict:
    """A state_dict with every tensor on the CPU, so checkpoints load anywhere (map_location is then a no-op)."""
    return {k: cpu_state(v) if isinstance(v, dict) else v.cpu() if isinstance(v, torch.Tensor) else v
            for k, v in state.items()}
