"""Integration tier: real `dvc` commands in a throw-away copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    dst = tmp_path_factory.mktemp("project")
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    run(["git", "init", "-q"], dst)
    run(["git", "config", "user.email", "ci@example.invalid"], dst)
    run(["git", "config", "user.name", "ci"], dst)
    run([str(BIN / "supportlm"), "params", "apply-profile", "smoke"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "init"], dst)
    return dst
