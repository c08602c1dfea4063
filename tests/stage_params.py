"""Typed params for calling a stage runner in a test: the project's params.yaml with some blocks replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supportlm.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def project_params(**blocks: Any) -> Params:
    """What `dvc repro` hands a runner, with `blocks` (e.g. report=ReportParams(...)) in place of those."""
    return load_params(ROOT / "params.yaml").model_copy(update=blocks)
