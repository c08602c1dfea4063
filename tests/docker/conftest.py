"""The docker tier (marker `docker`): real images, real containers, talking only to 127.0.0.1.

Skipped with one line when no Docker engine answers. Images are built through the Makefile (the same
command a user runs), so BuildKit's layer cache makes every run after the first one fast.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 right now (for a container's published port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> str | None:
    """None when a Docker engine answers, else the reason."""
    if shutil.which("docker") is None:
        return "docker CLI not installed (apt-get install docker.io)"
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    return None if proc.returncode == 0 else f"no Docker engine answers: {proc.stderr.strip()[:200]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    for item in items:
        if "tests/docker/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.docker)
            reason = reason or docker_available() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
