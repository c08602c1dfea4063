"""The container plan (supportlm.docker_plan) and the host script that runs it (scripts/docker_all.sh),
without Docker: the plan is computed for real; the host script runs against a fake `docker` on PATH, so
its stop-and-resume behaviour on a failing container is exercised, not read."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from supportlm.docker_plan import TGI_CONTAINER, Host, plan, render, stage_order
from supportlm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML = ROOT / "dvc.yaml"


def _host(tmp_path: Path, gpu: bool) -> Host:
    return Host(root=ROOT, uid=os.getuid(), gid=os.getgid(), hf_home=tmp_path / "hf", gpu=gpu)


def test_stage_order_respects_the_graph():
    order = stage_order(DVC_YAML)
    assert sorted(order) == sorted(yaml.safe_load(DVC_YAML.read_text())["stages"])
    pos = {s: i for i, s in enumerate(order)}
    for before, after in [("ingest", "clean"), ("base_model", "clean"), ("clean", "split"), ("split", "format"),
                          ("train", "merge"), ("merge", "evaluate"), ("quantize", "bench"), ("bench", "report")]:
        assert pos[before] < pos[after], order


def test_gpu_plan_runs_every_stage_on_the_gpu_as_the_caller_and_keeps_secrets_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    steps = plan("gpu", _host(tmp_path, gpu=True), dvc_yaml=DVC_YAML)
    labels = [label for label, _ in steps]
    assert labels[0] == "profile" and "apply-profile gpu" in steps[0][1]
    assert labels[1] == "dvc-cache" and "dvc config --local cache.type reflink,hardlink,copy" in steps[1][1]
    stages = [x for x in labels if x not in ("profile", "dvc-cache", "tgi", "cleanup")]
    assert list(dict.fromkeys(stages)) == stage_order(DVC_YAML)
    for stage in stage_order(DVC_YAML):  # each stage's outputs are relinked to the cache right after it
        repro, relink = (line for label, line in steps if label == stage)
        assert repro.endswith(f"dvc repro --single-item {stage}") and relink.endswith(f"dvc checkout --relink {stage}")
    # TGI serves models/merged for the bench stage: started (and waited for) after merge, removed after it
    bench = labels.index("bench")
    assert labels[bench - 3: bench] == ["tgi", "tgi", "tgi"] and labels[bench + 1] == "cleanup"
    assert bench > labels.index("merge")
    assert "--gpus all" in steps[bench - 2][1] and "/models/merged:/data/merged:ro" in steps[bench - 2][1]
    assert "wait-url http://127.0.0.1:8080/health" in steps[bench - 1][1]
    assert steps[bench + 1][1].startswith(f"docker rm --force {TGI_CONTAINER}")
    assert "--network host" in steps[bench][1]
    for label, line in steps:
        if label in ("tgi", "cleanup"):
            continue
        argv = shlex.split(line)
        assert argv[:3] == ["docker", "run", "--rm"] and "--gpus" in argv
        assert f"--user {os.getuid()}:{os.getgid()}" in line and f"-v {ROOT}:/workspace" in line
        assert f"-v {tmp_path / 'hf'}:/cache/huggingface" in line
        assert "-e HF_TOKEN " in line and "hf_secret_value_123" not in line  # passed by name only
        assert "HF_HUB_OFFLINE" not in line  # the GPU profile downloads its base model
        assert re.search(r"supportlm-train:\d+\.\d+\.\d+ ", line)


def test_cpu_plan_is_the_same_plan_without_gpu_flags(tmp_path):
    steps = plan("smoke", _host(tmp_path, gpu=False), dvc_yaml=DVC_YAML)
    assert [label for label, _ in steps] == ["profile", *stage_order(DVC_YAML)]
    for label, line in steps:
        assert "--gpus" not in line and "--network" not in line and "text-generation-inference" not in line
        assert "-e HF_HUB_OFFLINE=1" in line
        if label != "profile":
            assert line.endswith(f"dvc repro --single-item {label}")
    # no profile: params.yaml as it is, no overlay step
    assert [label for label, _ in plan(None, _host(tmp_path, gpu=False), dvc_yaml=DVC_YAML)] == stage_order(DVC_YAML)


def test_gpus_reach_the_profile_step(tmp_path):
    steps = dict(plan("gpu", _host(tmp_path, gpu=True), dvc_yaml=DVC_YAML, sets=["train.num_processes=4"]))
    assert steps["profile"].endswith("params apply-profile gpu --set train.num_processes=4")
    with pytest.raises(ConfigError, match="needs a profile"):
        plan(None, _host(tmp_path, gpu=True), dvc_yaml=DVC_YAML, sets=["train.num_processes=4"])


def test_gpu_profile_without_a_gpu_stops_before_running_anything(tmp_path):
    with pytest.raises(ConfigError, match=r"PROFILE=gpu: no GPU .*Fix:"):
        plan("gpu", _host(tmp_path, gpu=False), dvc_yaml=DVC_YAML)


def test_render_is_one_tab_separated_line_per_step_and_round_trips(tmp_path):
    steps = plan("smoke", Host(root=Path("/with space/repo"), uid=1000, gid=1000, hf_home=tmp_path), dvc_yaml=DVC_YAML)
    text = render(steps)
    rows = [line.split("\t", 1) for line in text.splitlines()]
    assert [tuple(r) for r in rows] == steps
    assert "-v '/with space/repo:/workspace'" in rows[1][1]  # quoted for the host's shell
    with pytest.raises(ConfigError, match="one line"):
        render([("x", "echo a\necho b")])


def test_cli_prints_the_plan():
    out = subprocess.run([sys.executable, "-m", "supportlm", "docker-plan", "--root", str(ROOT), "--uid", "1000",
                          "--gid", "1000", "--hf-home", "/tmp/hf", "--profile", "smoke"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert len(out) == 1 + len(stage_order(DVC_YAML)) and out[0].startswith("profile\tdocker run --rm ")
    bad = subprocess.run([sys.executable, "-m", "supportlm", "docker-plan", "--root", str(ROOT), "--uid", "1",
                          "--gid", "1", "--hf-home", "/tmp/hf", "--profile", "gpu"],
                         cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode != 0 and "no GPU" in bad.stderr and "Traceback" not in bad.stderr


# ---- scripts/docker_all.sh against a fake docker -----------------------------------------------------------

FAKE_DOCKER = r"""#!/usr/bin/env bash
# fake docker: `info`/`image inspect` answer as configured; the plan run prints $FAKE_PLAN; any other
# `docker run` records its last argument and exits with the code in $FAKE_RC_<that argument>
echo "$*" >> "$FAKE_LOG"
case "$1" in
  info) exit "${FAKE_INFO_RC:-0}";;
  image) exit 0;;
  version) echo 20.10.24;;
  buildx) exit 1;;
  build) exit "${FAKE_BUILD_RC:-0}";;
  run)
    for a in "$@"; do [ "$a" = docker-plan ] && { printf '%b' "$FAKE_PLAN"; exit 0; }; done
    last="${@: -1}"; rc_var="FAKE_RC_$last"; exit "${!rc_var:-0}";;
esac
"""


HOST_TOOLS = ("bash", "dirname", "mkdir", "id", "grep", "cut", "env", "awk")


def _run_host_script(tmp_path: Path, plan_text: str, **env: str) -> subprocess.CompletedProcess[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "docker").write_text(FAKE_DOCKER)
    (bindir / "docker").chmod(0o755)
    # PATH holds only what the host needs besides Docker: no python, so a host-side python call would fail
    for tool in HOST_TOOLS:
        if not (bindir / tool).exists():
            (bindir / tool).symlink_to(shutil.which(tool))
    full_env = {"PATH": str(bindir), "HOME": str(tmp_path), "FAKE_LOG": str(tmp_path / "log"),
                "FAKE_PLAN": plan_text, "PROFILE": "smoke", **env}  # fmt: skip
    return subprocess.run(["bash", str(ROOT / "scripts/docker_all.sh"), "supportlm-train:test"], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_host_script_runs_the_steps_and_stops_at_a_failed_stage_with_the_fix(tmp_path):
    plan_text = "ingest\\tdocker run --rm img ingest\\nclean\\tdocker run --rm img clean\\nsplit\\tdocker run --rm img split\\n"
    res = _run_host_script(tmp_path, plan_text, FAKE_RC_clean="137")
    assert res.returncode == 1
    log = (tmp_path / "log").read_text()
    assert "run --rm img ingest" in log and "run --rm img clean" in log and "img split" not in log  # stopped
    assert "stage 'clean' failed: killed by SIGKILL" in res.stderr and "out-of-memory" in res.stderr
    assert "command: docker run --rm img clean" in res.stderr
    assert "rerun `make all DOCKER=1 PROFILE=smoke`" in res.stderr and "resumes at 'clean'" in res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / ".cache/huggingface").is_dir()  # created by the caller before any mount
    ok = _run_host_script(tmp_path, plan_text)
    assert ok.returncode == 0 and "every stage done" in ok.stdout


@pytest.mark.parametrize(("rc", "meaning"), [("125", "docker could not start the container"),
                                             ("3", "exit status 3"), ("255", "exit status 255"), ("143", "killed by signal SIGTERM"), ("132", "killed by signal SIGILL (illegal instruction")])
def test_host_script_names_what_an_exit_status_means(tmp_path, rc, meaning):
    res = _run_host_script(tmp_path, "train\\tdocker run --rm img train\\n", FAKE_RC_train=rc)
    assert res.returncode == 1 and f"stage 'train' failed: {meaning}" in res.stderr


def test_host_script_without_an_engine_says_how_to_start_one(tmp_path):
    res = _run_host_script(tmp_path, "", FAKE_INFO_RC="1")
    assert res.returncode == 1 and "no Docker engine answers" in res.stderr and "dockerd" in res.stderr
    assert not (tmp_path / "log").read_text().count("run ")


def test_host_script_dry_run_prints_commands_only(tmp_path):
    res = _run_host_script(tmp_path, "ingest\\tdocker run --rm img ingest\\n", DRY_RUN="1")
    assert res.returncode == 0 and res.stdout.strip() == "docker run --rm img ingest"
    assert "img ingest" not in (tmp_path / "log").read_text().replace("docker-plan", "")


def test_host_script_needs_no_python(tmp_path):
    """The DOCKER=1 path runs with only bash, a few coreutils and docker on PATH."""
    res = _run_host_script(tmp_path, "ingest\\tdocker run --rm img ingest\\n")
    assert res.returncode == 0, res.stderr
    assert shutil.which("python3", path=str(tmp_path / "bin")) is None


def test_a_failed_image_build_names_the_dockerfile_and_how_to_resume(tmp_path):
    _run_host_script(tmp_path, "")  # creates the fake docker on a minimal PATH
    env = {"PATH": str(tmp_path / "bin"), "FAKE_LOG": str(tmp_path / "log"), "FAKE_BUILD_RC": "17"}
    res = subprocess.run(["bash", str(ROOT / "scripts/docker_build.sh"), "-f", "docker/Dockerfile.train", "-t", "x", "."],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 17 and "docker build of docker/Dockerfile.train failed (exit 17)" in res.stderr
    assert "resumes at the failed step" in res.stderr
    assert "build -f docker/Dockerfile.train -t x ." in (tmp_path / "log").read_text()
    down = subprocess.run(["bash", str(ROOT / "scripts/docker_build.sh"), "-f", "docker/Dockerfile.serve", "."], cwd=ROOT,
                          env={**env, "FAKE_INFO_RC": "1"}, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert down.returncode == 2 and "no Docker engine answers" in down.stderr and "Dockerfile.serve" in down.stderr


def test_cleanup_steps_run_even_when_a_stage_fails(tmp_path):
    """TGI is removed after a failed bench too (the GPU plan labels its removal `cleanup`)."""
    plan_text = ("tgi\\tdocker run --rm img tgistart\\nbench\\tdocker run --rm img bench\\n"
                 "cleanup\\tdocker run --rm img tgiremove\\nreport\\tdocker run --rm img report\\n")
    res = _run_host_script(tmp_path, plan_text, FAKE_RC_bench="1")
    log = (tmp_path / "log").read_text()
    assert res.returncode == 1 and "stage 'bench' failed" in res.stderr
    assert "img tgiremove" in log and "img report" not in log


def test_gpu_cache_type_stores_a_model_file_once(tmp_path):
    """The GPU plan's `dvc config --local cache.type ...` and per-stage relink, run for real: a stage's
    output file and its cache entry are one file on disk (a link, not a second copy of the weights)."""
    from supportlm.docker_plan import DVC_CACHE_TYPE

    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*argv):
        subprocess.run(argv, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)

    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "config", "--local", "cache.type", DVC_CACHE_TYPE)
    (tmp_path / "make_weights.py").write_text(
        "import os\nos.makedirs('models/merged', exist_ok=True)\n"
        "open('models/merged/model.safetensors', 'wb').write(os.urandom(4 << 20))\n"
    )
    run(*dvc, "stage", "add", "-q", "-n", "merge", "-d", "make_weights.py", "-o", "models/merged",
        sys.executable, "make_weights.py")
    run(*dvc, "repro", "-q")
    run(*dvc, "checkout", "--relink", "merge")  # the plan's step after each GPU stage
    out = tmp_path / "models" / "merged" / "model.safetensors"
    cached = [p for p in (tmp_path / ".dvc" / "cache").rglob("*") if p.is_file() and p.stat().st_size == 4 << 20]
    assert len(cached) == 1
    assert out.stat().st_ino == cached[0].stat().st_ino, "the output is a copy of its cache entry"
    assert out.stat().st_mode & 0o222 == 0  # read-only: nothing can write through the link into the cache
