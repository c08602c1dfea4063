"""One check run: its config and work dirs, what a step hands to later ones, and the step runner."""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.gpu_check.config import CheckConfig
from supportlm.gpu_check.probe import free_memory

log = logging.getLogger("supportlm.gpu_check")


@dataclass
class Run:
    """One check: its config, its places, and what a step hands to later ones."""

    cfg: CheckConfig
    work: Path
    cuda: bool
    info: dict[str, Any]
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    steps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> ok, seconds, error
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> the step's numbers
    tokenizer: Any = None
    ref_result: dict[str, Any] | None = None  # the uninterrupted QLoRA run, for the resume comparison
    prompts: list[list[int]] = dataclasses.field(default_factory=list)

    model_dir = property(lambda self: self.work / "base")
    data_dir = property(lambda self: self.work / "data")
    adapter_dir = property(lambda self: self.work / "adapter")
    merged_dir = property(lambda self: self.work / "merged")
    log_dir = property(lambda self: Path(self.cfg.out_dir) / "logs")

    @property
    def dev(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def save_dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.cuda else torch.float32

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_step(run: Run, name: str, fn: Callable[[Run], dict[str, Any]], needs: tuple[str, ...] = ()) -> None:
    """fn(run) -> its numbers (a `failed` key marks a failed check); an exception is recorded, never raised."""
    from supportlm.train.device import peak_memory_mb, reset_peak_memory, resolve_device

    device = resolve_device()
    rec: dict[str, Any] = {"ok": False, "seconds": 0.0}
    run.steps[name] = rec
    missing = [n for n in needs if not run.steps.get(n, {}).get("ok")]
    if missing:
        rec["error"] = f"not run: needs {', '.join(missing)} (failed or not run)"
        log.warning("[%6.1f s] %s: %s", run.elapsed(), name, rec["error"])
        return
    log.info("[%6.1f s] %s: start", run.elapsed(), name)
    free_memory()
    reset_peak_memory(device)
    t = time.perf_counter()
    try:
        out = fn(run) or {}
        run.results[name] = out
        rec["ok"] = not out.get("failed")
        if out.get("failed"):
            rec["error"] = out["failed"]
    except Exception as exc:  # noqa: BLE001 - one failed step must not stop the others
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        rec["traceback"] = traceback.format_exc()[-4000:]
        log.error("%s failed:\n%s", name, rec["traceback"])
    rec["seconds"] = round(time.perf_counter() - t, 2)
    rec["peak_mem_mb"] = peak_memory_mb(device)
    free_memory()
    log.info(
        "[%6.1f s] %s: %s in %.1f s, peak %s MB%s",
        run.elapsed(),
        name,
        "ok" if rec["ok"] else "FAILED",
        rec["seconds"],
        f"{rec['peak_mem_mb']:,.0f}",
        "" if rec["ok"] else f" ({rec['error'][:300]})",
    )
