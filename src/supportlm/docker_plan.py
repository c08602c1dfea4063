"""The container execution plan: every DVC stage, in graph order, inside the training image.

`make all DOCKER=1 [PROFILE=...]` (and `make all PROFILE=gpu`) run it through scripts/docker_all.sh,
which needs only Docker on the host: the plan is computed *inside* the image (this module) and printed
as one `label<TAB>shell line` per step, which the host script runs one by one. Stages run with
`dvc repro --single-item <stage>` so a failure names its stage and a rerun resumes there (finished
stages are up to date in dvc.lock). The same plan serves every profile; GPU flags are added only when
the host has a GPU, so the GPU profile's plan is exercised on a CPU host too.

Each stage runs as the caller (`--user uid:gid`: files on the mounted checkout are theirs), on the
checkout's own code (mounted at /workspace; the image's PYTHONPATH points there), with the HF token
passed by *name* (never its value) and the HF cache mounted so base weights are downloaded once.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

import yaml

from supportlm import __version__
from supportlm.errors import ConfigError

IMAGE = f"supportlm-train:{__version__}"
# the bench stage of the GPU profile measures TGI (profiles/gpu.yaml: serve.engine.url = TGI's host port)
# serving the merge stage's model: TGI starts after merge and is removed after the bench
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
TGI_CONTAINER = "supportlm-tgi"
TGI_PORT = 8080
TGI_READY_TIMEOUT_S = 1200  # a 7B model's weights load before /health answers
# steps with this label also run when an earlier step failed (scripts/docker_all.sh): TGI never outlives the run
CLEANUP = "cleanup"
# DVC links outputs to its cache instead of copying them: ~75 GB of 7B weights (base, merged, GGUF) would
# otherwise be stored twice. reflink where the filesystem can (XFS, btrfs), else a hardlink (the cache is
# inside the checkout: same filesystem); never a symlink, which would point outside models/merged when TGI
# mounts that folder alone. Linked files are read-only; every stage writes to a temp dir and renames.
# DVC 3 still saves a new output into the cache as a copy; `dvc checkout --relink <stage>` right after
# the stage swaps the workspace copy for the link, so only one output is ever doubled, and only briefly.
DVC_CACHE_TYPE = "reflink,hardlink,copy"


@dataclass(frozen=True)
class Host:
    """What the host script knows and the container does not: paths, ids, whether a GPU is there."""

    root: Path  # the checkout, as the host sees it (mounted at /workspace)
    uid: int
    gid: int
    hf_home: Path  # the host's HF cache (created by the host script, so not root-owned)
    gpu: bool = False


def stage_order(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Stages sorted so that each comes after the stages whose outs it depends on (ties: dvc.yaml order)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    outs: dict[str, str] = {}
    for name, st in stages.items():
        for out in list(st.get("outs", [])) + list(st.get("metrics", [])):
            outs[next(iter(out)) if isinstance(out, dict) else out] = name
    graph: dict[str, set[str]] = {}
    for name, st in stages.items():
        deps = set()
        for dep in st.get("deps", []):
            for out_path, producer in outs.items():
                if producer != name and (dep == out_path or dep.startswith(out_path.rstrip("/") + "/")):
                    deps.add(producer)
        graph[name] = deps
    TopologicalSorter(graph).prepare()  # raises CycleError on a cycle
    position = {n: i for i, n in enumerate(stages)}
    ranked: list[str] = []
    remaining = dict(graph)
    while remaining:
        ready = sorted((n for n, d in remaining.items() if not d - set(ranked)), key=position.__getitem__)
        ranked.append(ready[0])
        remaining.pop(ready[0])
    return ranked


def docker_run(host: Host, args: list[str], image: str = IMAGE, *, network: str | None = None,
               offline: bool = True) -> list[str]:
    """`docker run` of `args` in the training image, as the caller, on the mounted checkout."""
    return [
        "docker", "run", "--rm",
        *(["--gpus", "all"] if host.gpu else []),
        *(["--network", network] if network else []),
        "--ipc=host",  # PyTorch dataloader workers need more than Docker's 64 MB /dev/shm
        "--user", f"{host.uid}:{host.gid}",
        "-v", f"{host.root}:/workspace",
        "-v", f"{host.hf_home}:/cache/huggingface",
        "-e", "HF_TOKEN",  # by name: docker copies the host's value, the command line never shows it
        *(["-e", "HF_HUB_OFFLINE=1", "-e", "HF_DATASETS_OFFLINE=1"] if offline else []),
        "-w", "/workspace",
        image,
        *args,
    ]  # fmt: skip


def tgi_steps(host: Host, image: str) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """(steps that start TGI on models/merged and wait for it, the step that removes it)."""
    remove = f"docker rm --force {TGI_CONTAINER} >/dev/null 2>&1 || true"
    start = [
        "docker", "run", "--detach", "--name", TGI_CONTAINER, "--gpus", "all", "--shm-size", "1g",
        "-p", f"127.0.0.1:{TGI_PORT}:80",
        "-v", f"{host.root}/models/merged:/data/merged:ro",
        TGI_IMAGE, "--model-id", "/data/merged", "--max-input-tokens", "2048", "--max-total-tokens", "4096",
    ]  # fmt: skip
    wait = docker_run(host, ["python", "-m", "supportlm", "wait-url", f"http://127.0.0.1:{TGI_PORT}/health",
                             "--timeout", str(TGI_READY_TIMEOUT_S)], image, network="host")
    return [("tgi", remove), ("tgi", shlex.join(start)), ("tgi", shlex.join(wait))], (CLEANUP, remove)


def plan(
    profile: str | None, host: Host, image: str = IMAGE, dvc_yaml: Path = Path("dvc.yaml"), sets: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The steps as (label, shell line): the profile overlay (+ `sets`, e.g. train.num_processes=4), then one
    container per stage."""
    if profile == "gpu" and not host.gpu:
        raise ConfigError(
            "PROFILE=gpu: no GPU on this host (nvidia-smi finds none, or Docker has no NVIDIA runtime). "
            "Fix: run it on a GPU host with the NVIDIA container toolkit, or use PROFILE=smoke|cpu here"
        )
    online = profile == "gpu"  # the GPU profile downloads its base model; every other profile is offline
    steps: list[tuple[str, str]] = []
    if sets and not profile:
        raise ConfigError(f"--set {' '.join(sets)} needs a profile to apply it with (PROFILE=gpu GPUS=4)")
    if profile:
        apply = ["python", "-m", "supportlm", "params", "apply-profile", profile, *(a for s in sets for a in ("--set", s))]
        steps.append(("profile", shlex.join(docker_run(host, apply, image, offline=not online))))
    if profile == "gpu":  # .dvc/config.local: this checkout only, not committed
        steps.append(("dvc-cache", shlex.join(docker_run(host, ["dvc", "config", "--local", "cache.type",
                                                                DVC_CACHE_TYPE], image, offline=False))))
    for stage in stage_order(dvc_yaml):
        run = docker_run(host, ["dvc", "repro", "--single-item", stage], image,
                         network="host" if stage == "bench" and profile == "gpu" else None, offline=not online)
        if stage == "bench" and profile == "gpu":
            start, stop = tgi_steps(host, image)
            steps += [*start, (stage, shlex.join(run)), stop]
        else:
            steps.append((stage, shlex.join(run)))
        if profile == "gpu":
            steps.append((stage, shlex.join(docker_run(host, ["dvc", "checkout", "--relink", stage], image,
                                                       offline=False))))
    return steps


def render(steps: list[tuple[str, str]]) -> str:
    """One `label<TAB>shell line` per step: what scripts/docker_all.sh reads (the host has no Python)."""
    for label, line in steps:
        if "\t" in label or "\n" in line or "\t" in line:
            raise ConfigError(f"docker plan: step {label!r} cannot be written as one line: {line!r}")
    return "".join(f"{label}\t{line}\n" for label, line in steps)
