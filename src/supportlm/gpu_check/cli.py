"""The check's command line: `python -m supportlm.gpu_check [--tiny] [overrides]`; `--child SPEC`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

import supportlm.gpu_check
from supportlm.gpu_check.check import run_check
from supportlm.gpu_check.config import SHAPES, CheckConfig
from supportlm.gpu_check.training import child_main

log = logging.getLogger("supportlm.gpu_check")


def parse_args(argv: list[str] | None = None) -> tuple[CheckConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(
        prog="python -m supportlm.gpu_check", description=supportlm.gpu_check.__doc__.split("\n\n")[0]
    )
    ap.add_argument("--tiny", action="store_true", help="CPU-sized check (2-layer 64-wide Llama, seconds)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--shape", choices=sorted(SHAPES))
    for name in (
        "hidden",
        "intermediate",
        "heads",
        "kv-heads",
        "vocab",
        "layers",
        "full-layers",
        "batch-size",
        "seq-len",
        "steps",
        "save-steps",
        "eval-steps",
        "kill-at",
        "gen-tokens",
        "gen-repeats",
        "prompt-tokens",
        "bnb-tokens",
        "full-steps",
        "seed",
        "lora-r",
        "threads",
    ):
        ap.add_argument(f"--{name}", type=int)
    ap.add_argument("--learning-rate", type=float)
    ap.add_argument("--child-timeout-s", type=float)
    ap.add_argument(
        "--budget-s", type=float, help="skip the full-depth QLoRA steps when the run is past this"
    )
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--keep-work", action="store_true", default=None)
    ns = ap.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(CheckConfig)}
    over = {k: v for k, v in vars(ns).items() if k in fields and v is not None}
    return (CheckConfig.tiny(**over) if ns.tiny else CheckConfig(**over)), ns


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a network the device does not have
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # "Loading weights" bars would bury the progress lines in the device log
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    cfg, ns = parse_args(argv)
    if ns.child:
        return child_main(ns.child)
    from supportlm.errors import SupportLMError

    try:
        report = run_check(cfg)
    except SupportLMError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0 if report["ok"] else 1
