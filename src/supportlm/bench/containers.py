"""Containers, measured and compared: the numbers behind reports/containers.json.

- image sizes and build times (`make docker-build`; cold = BuildKit cache pruned first),
- the smoke pipeline run by `make all DOCKER=1 PROFILE=smoke` in a throw-away copy of the project
  against `dvc repro` of the same profile on the host (time ratio from one run; data outputs compared
  byte for byte through dvc.lock, model metrics within a stated tolerance, since the image's torch is
  PyPI's CUDA build and the host's is the CPU build),
- the compose stack's time to ready.

tests/docker uses the same helpers, so what is measured is what is tested.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from supportlm import __version__
from supportlm.runtime import cpu_info, wait_http

# what a user's checkout has that the pipeline and `make all DOCKER=1` need (no outputs, no venv)
PROJECT_FILES = ("dvc.yaml", "params.yaml", "profiles", "stages", "src", "Makefile", "pyproject.toml", "README.md",
                 "docker", "requirements", "scripts", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore")  # fmt: skip
DATA_STAGES = ("ingest", "base_model", "clean", "split", "format", "quality")
IMAGES = {name: f"supportlm-{name}:{__version__}" for name in ("llama", "serve", "train", "prometheus")}
# metrics of the model stages compared between the image (PyPI's CUDA torch, on CPU) and the host (CPU torch):
# (report file, dotted key, absolute tolerance)
METRIC_TOLERANCES = (
    ("reports/train.json", "base_val_loss", 1e-3),
    ("reports/train.json", "best_val_loss", 1e-3),
    ("reports/eval.json", "finetuned.perplexity", 0.1),
    ("reports/eval.json", "finetuned.rougeL", 0.02),
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 3600) -> float:
    """Run, raising with the command and its output tail on failure; return the seconds it took."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` in {cwd} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")  # fmt: skip
    return time.perf_counter() - t0


def project_copy(root: Path, dst: Path, files: tuple[str, ...] | list[str] = PROJECT_FILES) -> Path:
    """A git repository holding `files` as they are in `root` (uncommitted edits included), committed once
    (the repo's own identity is set, so later commits in it work anywhere)."""
    dst.mkdir(parents=True, exist_ok=True)
    for rel in files:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    _run(["git", "init", "-q"], dst)
    _run(["git", "config", "user.email", "ci@example.invalid"], dst)
    _run(["git", "config", "user.name", "ci"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "copy"], dst)
    return dst


def host_env(project: Path, bin_dir: Path) -> dict[str, str]:
    """The host venv's tools, running the copy's code (PYTHONPATH first), offline as `make all` is."""
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(project / "src"),
            "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def run_host(project: Path, bin_dir: Path, profile: str = "smoke") -> float:
    env = host_env(project, bin_dir)
    t0 = time.perf_counter()
    _run([str(bin_dir / "python"), "-m", "supportlm", "params", "apply-profile", profile], project, env)
    _run([str(bin_dir / "dvc"), "repro"], project, env)
    return time.perf_counter() - t0


def containers_command(project: Path, profile: str = "smoke",
                       as_user: tuple[int, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """(`make all DOCKER=1 PROFILE=<profile>`, its environment); as_user=(uid, gid): run as that user with
    the docker group, so that "outputs belong to the caller" is checked for a caller who is not root."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    cmd = ["make", "all", "DOCKER=1", f"PROFILE={profile}"]
    if as_user is not None:
        uid, gid = as_user
        env["HOME"] = str(project / ".home")
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={grp.getgrnam('docker').gr_gid}", *cmd]
    return cmd, env


def run_in_containers(project: Path, profile: str = "smoke", as_user: tuple[int, int] | None = None) -> float:
    """`make all DOCKER=1 PROFILE=<profile>` in the copy (the image is built or reused by make); with
    as_user the copy is handed to that user first."""
    if as_user is not None:
        _run(["chown", "-R", f"{as_user[0]}:{as_user[1]}", str(project)], project)
    cmd, env = containers_command(project, profile, as_user)
    return _run(cmd, project, env)


def _lock_outs(project: Path) -> dict[str, dict[str, str]]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {stage: {o["path"]: o.get("md5", "") for o in entry.get("outs", [])} for stage, entry in lock.items()}


def _dig(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part] if isinstance(data, dict) and part in data else None  # type: ignore[assignment]
    return data


def compare_runs(host: Path, box: Path) -> dict[str, Any]:
    """Data outputs by their dvc.lock md5 (byte-equal or not) and model metrics with their deltas.

    A stage's reports/*.json are left out of the byte comparison: they record wall times and the machine.
    """
    a, b = _lock_outs(host), _lock_outs(box)
    data = {}
    for stage in DATA_STAGES:
        outs = {p: a[stage][p] == b.get(stage, {}).get(p) for p in a.get(stage, {}) if not p.startswith("reports/")}
        if outs:
            data[stage] = {"equal": all(outs.values()), "outs": outs}
    metrics = []
    for file, key, tol in METRIC_TOLERANCES:
        if not (host / file).is_file() or not (box / file).is_file():
            continue
        ha, hb = _dig(json.loads((host / file).read_text()), key), _dig(json.loads((box / file).read_text()), key)
        if isinstance(ha, int | float) and isinstance(hb, int | float):
            metrics.append({"file": file, "key": key, "host": ha, "containers": hb, "abs_diff": abs(ha - hb),
                            "tolerance": tol, "within": abs(ha - hb) <= tol})  # fmt: skip
    return {"data_stages": data, "metrics": metrics}


def image_sizes() -> dict[str, int]:
    sizes = {}
    for name, image in IMAGES.items():
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                             text=True, check=False).stdout.strip()  # fmt: skip
        if out.isdigit():
            sizes[name] = int(out)
    return sizes


def time_builds(root: Path, cold: bool) -> dict[str, float]:
    """Seconds per `make docker-build-<name>` in dependency order; cold: BuildKit's cache and the images
    removed first (the base image is kept: it is an input, `make base-image`)."""
    if cold:
        subprocess.run(["docker", "rmi", "-f", *IMAGES.values()], capture_output=True, check=False)
        _run(["docker", "builder", "prune", "-af"], root)
    return {name: round(_run(["make", f"docker-build-{name}"], root), 1) for name in IMAGES}


COMPOSE_PROJECT = "supportlm-test"


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")  # Debian's docker-compose 1.29
    return [legacy] if legacy else None


@contextmanager
def compose_stack(root: Path, env: dict[str, str], timeout_s: float = 300) -> Iterator[float]:
    """The cpu profile up (gateway, engine, prometheus); yields seconds until the gateway is ready; down after."""
    cli = compose_cli()
    if cli is None:
        raise RuntimeError("no compose: install Debian's docker-compose or the compose v2 plugin")
    base = [*cli, "-p", COMPOSE_PROJECT, "-f", str(root / "docker/compose.yaml"), "--profile", "cpu"]
    full_env = {**os.environ, **env}
    try:
        t0 = time.perf_counter()
        _run([*base, "up", "-d"], root, full_env, timeout=600)
        port = env.get("GATEWAY_PORT", "8000")
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s)
        yield time.perf_counter() - t0
    finally:
        subprocess.run([*base, "down", "-v", "--timeout", "20"], cwd=root, env=full_env, capture_output=True,
                       check=False, timeout=300)  # fmt: skip


def write_report(path: Path, record: dict[str, Any]) -> None:
    old = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**old, **record, "cpu": cpu_info()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def base_image(root: Path) -> str:
    """The base the builds use here (the pinned public one, else the local Debian build)."""
    return subprocess.run(["bash", "scripts/docker_base.sh", "docker/Dockerfile.llama", "supportlm-base:bookworm"],
                          cwd=root, capture_output=True, text=True, check=False).stdout.strip() or "?"  # fmt: skip


def measure(root: Path, bin_dir: Path, workdir: Path, *, cold: bool, smoke: bool, compose: bool) -> dict[str, Any]:
    """Everything in reports/containers.json, measured now on this machine (see the module docstring)."""
    record: dict[str, Any] = {}
    cold_s = time_builds(root, cold=True) if cold else {}
    warm_s = time_builds(root, cold=False)
    sizes, base = image_sizes(), base_image(root)
    record["images"] = [{"name": IMAGES[n], "base": base, "size_bytes": sizes.get(n), "build_cold_s": cold_s.get(n),
                         "build_warm_s": warm_s[n]} for n in IMAGES]  # fmt: skip
    if smoke:
        box = project_copy(root, workdir / "containers")
        host = project_copy(root, workdir / "host")
        record["docker_smoke_s"] = round(run_in_containers(box), 1)
        record["host_smoke_s"] = round(run_host(host, bin_dir), 1)
        record["comparison"] = compare_runs(host, box)
    if compose:
        with compose_stack(root, {"SUPPORTLM_API_KEYS": "bench:sk-bench", "SUPPORTLM_MODELS_DIR": str(workdir)}) as ready:
            record["compose_ready_s"] = round(ready, 1)
    return record
