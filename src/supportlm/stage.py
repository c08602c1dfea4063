"""The one way a stage runs: validate params.yaml, print the block, call `run_<stage>(params, paths)`.

Every runner has the shape `run_<stage>(params: Params, paths: Paths) -> dict` (the metrics it wrote).
`stages/<stage>.py` names its runner and calls `stage_main`; `supportlm <stage>` calls `run_stage`
with the same runner. A SupportLMError becomes one red line and its exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from supportlm.config import Params, load_params
from supportlm.errors import SupportLMError
from supportlm.paths import Paths

Runner = Callable[[Params, Paths], dict[str, Any]]

err = Console(stderr=True)
out = Console()


class StageFailed(Exception):
    """A stage ended on a user error (already printed); `exit_code` is the error's."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def run_stage(name: str, runner: Runner, params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Load and validate params, print `params.<name>`, run, print a one-line summary of the metrics."""
    try:
        params = load_params(params_path)
        out.print(f"[bold]{name}[/] params: {getattr(params, name).model_dump_json()}", highlight=False)
        metrics = runner(params, Paths())
    except SupportLMError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise StageFailed(exc.exit_code) from None
    out.print(json.dumps(summary(metrics), indent=None, default=str)[:2000], highlight=False)
    return metrics


def stage_main(name: str, runner: Runner) -> None:
    """Entry point of stages/<name>.py: exit code 0 on success, the error's code otherwise."""
    try:
        run_stage(name, runner)
    except StageFailed as exc:
        sys.exit(exc.exit_code)


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics (and the two small tables people look for first) for the console line."""
    return {
        k: v for k, v in metrics.items() if not isinstance(v, (list, dict)) or k in ("counts", "by_reason")
    }
