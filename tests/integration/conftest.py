"""Integration tier: real `dvc` commands in a throw-away copy of the project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supportlm.bench.containers import project_copy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COPY = ["dvc.yaml", "params.yaml", "profiles", "stages", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900, env: dict | None = None):
    full_env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
                             "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"} | (env or {})
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A git + DVC copy of the project on the smoke profile, with its own local remote."""
    dst = project_copy(ROOT, tmp_path_factory.mktemp("project"), COPY)
    run([str(BIN / "supportlm"), "params", "apply-profile", "smoke"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "smoke profile"], dst)
    return dst
