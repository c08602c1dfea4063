"""Training device and precision: CUDA or CPU, the resolved `train.precision`, and peak-memory readings."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from supportlm.errors import ConfigError
from supportlm.lineage import peak_rss_mb

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 (CUDA with bf16), fp16 (older CUDA), fp32 (CPU). Explicit values are checked."""
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not cuda:
        raise ConfigError(
            "train.precision=fp16 needs a CUDA GPU (fp16 autocast + loss scaling); use fp32 or auto on CPU"
        )
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.precision=bf16: {torch.cuda.get_device_name()} has no bf16 support; use fp16 or auto"
        )
    return precision


def device_name(device: torch.device) -> str:
    """`cuda (<GPU name>)` or `cpu (<n> thread(s))`, as the train report records it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({torch.get_num_threads()} thread(s))"


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size since the last reset (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return peak_rss_mb()


def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak counter so a phase reports its own peak (Linux: clear_refs 5 resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
