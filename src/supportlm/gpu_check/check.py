"""The whole check: every step in order on one work dir, the report rewritten after each step."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from supportlm.gpu_check.config import CheckConfig
from supportlm.gpu_check.probe import device_info
from supportlm.gpu_check.report import write_report
from supportlm.gpu_check.runner import Run, run_step
from supportlm.gpu_check.steps import STEPS

log = logging.getLogger("supportlm.gpu_check")


def run_check(cfg: CheckConfig) -> dict[str, Any]:
    """Run every step; gpu_check.json + .md under cfg.out_dir are rewritten after each one (a run cut
    short by a timeout still leaves the steps it finished). Returns the report."""
    import torch

    from supportlm.errors import ConfigError
    from supportlm.train.device import resolve_device

    cuda = resolve_device().type == "cuda"
    if not cuda and cfg.shape != "tiny" and cfg.hidden is None:
        raise ConfigError(
            f"the {cfg.shape} check needs a CUDA GPU (hidden 4096 on a CPU would take hours): on CPU use --tiny, "
            "or shrink the model (--hidden 256 --intermediate 512 --heads 4 --kv-heads 2 --layers 1 ...)"
        )
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="supportlm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, work=work, cuda=cuda, info=device_info())
    shutil.rmtree(run.log_dir, ignore_errors=True)
    log.info(
        "gpu check: %s shape, %d layers (full depth %d), batch %d x %d, %d steps on %s; work dir %s",
        cfg.shape,
        cfg.layers,
        cfg.depth,
        cfg.batch_size,
        cfg.seq_len,
        cfg.steps,
        run.info.get("name", "cpu"),
        work,
    )
    report: dict[str, Any] = {}
    try:
        for name, fn, needs in STEPS:
            if name == "full_depth" and cfg.depth <= 0:
                continue
            run_step(run, name, fn, needs)
            if name == "bnb" and not cfg.keep_work:  # free the disk before the full-depth model is written
                for d in (run.merged_dir, run.model_dir, work / "ckpt-resume", work / "ckpt-ref"):
                    shutil.rmtree(d, ignore_errors=True)
            report = write_report(run)
    finally:
        torch.set_num_threads(threads)
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    log.info(
        "[%6.1f s] wrote %s: %s",
        run.elapsed(),
        Path(cfg.out_dir) / "gpu_check.json",
        "every step ok" if report["ok"] else f"FAILED: {', '.join(report['failed'])}",
    )
    return report
