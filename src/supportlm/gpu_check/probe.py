"""The environment probe: the device, package versions and the memory the check holds."""

from __future__ import annotations

import contextlib
import gc
import platform
import subprocess
from typing import Any


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def free_memory() -> None:
    gc.collect()
    if _cuda():
        import torch

        torch.cuda.empty_cache()


def allocated_mb() -> float | None:
    if not _cuda():
        return None
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1)


def device_info() -> dict[str, Any]:
    import torch

    from supportlm.runtime import cpu_info

    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu.get("model"),
        "cpu_cores": cpu.get("cores"),
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "name": torch.cuda.get_device_name(0),
            "total_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"sm_{props.major}{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
            "count": torch.cuda.device_count(),
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            info["driver"] = out.stdout.strip().splitlines()[0]
    return info


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "bitsandbytes",
        "safetensors",
        "tokenizers",
        "pydantic",
        "numpy",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
