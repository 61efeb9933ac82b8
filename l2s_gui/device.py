"""Device selection and out-of-memory detection."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from .errors import ConfigError


def available_devices() -> list[str]:
    """Devices this machine can run on, best first (for device pickers)."""
    out = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def resolve_device(name: str = "auto", key: str = "training.device") -> torch.device:
    """'auto' -> CUDA if present, else MPS, else CPU; explicit requests are checked."""
    if name == "auto":
        return torch.device(available_devices()[0] if available_devices()[0] != "mps" else "mps")
    if name.startswith("cuda"):
        if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise ConfigError(f"{key}: unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)")
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: '{name}' requested but no CUDA device is available (use auto or cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{key}: '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError(f"{key}: 'mps' requested but MPS is not available (use auto or cpu)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"{key}: unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)")


def describe_device(device: torch.device) -> str:
    """Human-readable name, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def autocast_factory(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """A zero-argument context factory: bf16 autocast for the networks, or nothing."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext
