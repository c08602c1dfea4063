"""`make all DOCKER=1 PROFILE=smoke` in the training image, against `dvc repro` of the same profile on the
host, each in its own throw-away copy of the project: data outputs byte-equal, model metrics within the
tolerances in supportlm.bench.containers, outputs owned by the caller, a rerun resumes (nothing redone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supportlm.bench.containers import (
    compare_runs,
    containers_command,
    project_copy,
    run_host,
    run_in_containers,
)

from .conftest import ROOT

pytestmark = [pytest.mark.slow]
BIN = Path(sys.executable).parent
CALLER = (1234, 1234)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict]:
    host = project_copy(ROOT, tmp_path_factory.mktemp("host"))
    # not under pytest's tmp (mode 700, root's): the non-root caller must reach it
    box = project_copy(ROOT, Path(tempfile.mkdtemp(prefix="supportlm-docker-smoke-")))
    # as a non-root caller when the tests run as root, so that ownership of the outputs means something
    caller = CALLER if os.getuid() == 0 else None
    docker_s = run_in_containers(box, as_user=caller)  # builds (or reuses) the image first, as a user's make does
    host_s = run_host(host, BIN)
    yield {"host": host, "box": box, "docker_s": docker_s, "host_s": host_s}
    shutil.rmtree(box, ignore_errors=True)


def test_every_stage_ran_in_containers_and_matches_the_host(runs) -> None:
    host, box = runs["host"], runs["box"]
    assert (box / "params.yaml").read_text() == (host / "params.yaml").read_text()  # the profile applied in the image
    result = compare_runs(host, box)
    unequal = [s for s, r in result["data_stages"].items() if not r["equal"]]
    assert set(result["data_stages"]) >= {"ingest", "clean", "split", "format"} and not unequal, result
    assert len(result["metrics"]) >= 3, result
    off = [m for m in result["metrics"] if not m["within"]]
    assert not off, off
    for report in ("train.json", "eval.json", "quantization.json", "bench.json", "index.html"):
        assert (box / "reports" / report).is_file(), report


def test_outputs_on_the_mounted_checkout_belong_to_the_caller(runs) -> None:
    box = runs["box"]
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in box.rglob("*") if ".git" not in p.parts}
    caller = CALLER if os.getuid() == 0 else (os.getuid(), os.getgid())
    assert owners == {caller}, owners


def test_a_rerun_redoes_nothing(runs) -> None:
    box = runs["box"]
    cmd, env = containers_command(box, "smoke", CALLER if os.getuid() == 0 else None)
    proc = subprocess.run(cmd, cwd=box, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Running stage" not in proc.stdout and proc.stdout.count("didn't change, skipping") >= 10, proc.stdout[-3000:]
