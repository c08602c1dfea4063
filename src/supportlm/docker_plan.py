"""The GPU profile's execution plan: every DVC stage, in graph order, inside the pinned CUDA image.

`make all PROFILE=gpu` runs it; `DRY_RUN=1` prints the exact commands instead. Stages run one
by one with `dvc repro --single-item <stage>` so a failure names its stage and a rerun
resumes there. The host's uid/gid own the files written to the mounted repo, the HF token
is passed by *name* from the host environment (never its value, never baked in), and the
HF cache is a mounted volume so 7B weights are downloaded once.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from graphlib import TopologicalSorter
from pathlib import Path

import yaml

from supportlm import __version__
from supportlm.errors import ConfigError

IMAGE = f"supportlm-train:{__version__}"


def stage_order(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Stages sorted so that each comes after the stages whose outs it depends on."""
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
    order = list(TopologicalSorter(graph).static_order())
    # ties in static_order follow insertion order only loosely: make it stable by dvc.yaml order
    position = {n: i for i, n in enumerate(stages)}
    ranked: list[str] = []
    remaining = dict(graph)
    while remaining:
        ready = sorted((n for n, d in remaining.items() if not d - set(ranked)), key=position.__getitem__)
        ranked.append(ready[0])
        remaining.pop(ready[0])
    assert set(ranked) == set(order)
    return ranked


def docker_run(stage: str, root: Path, image: str = IMAGE, gpus: str = "all", network: str | None = None) -> list[str]:
    hf_cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [
        "docker", "run", "--rm",
        "--gpus", gpus,
        *(["--network", network] if network else []),
        "--ipc=host",  # PyTorch dataloader workers need more than Docker's 64 MB /dev/shm
        "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", f"{root.resolve()}:/workspace",
        "-v", f"{hf_cache}:/cache/huggingface",
        "-e", "HF_TOKEN",  # by name: docker copies the host's value, the command line never shows it
        "-e", "HOME=/tmp",
        "-e", "DVC_NO_ANALYTICS=1",
        "-w", "/workspace",
        image,
        "repro", "--single-item", stage,
    ]  # fmt: skip


COMPOSE = ["docker", "compose", "-f", "docker/compose.yaml", "--profile", "gpu"]
# the bench stage measures TGI (profiles/gpu.yaml: serve.engine.url = TGI's host port) serving the
# merge stage's model, so TGI starts after merge has written models/merged and stops after the bench
TGI_UP = [*COMPOSE, "up", "--detach", "--wait", "tgi"]
TGI_DOWN = [*COMPOSE, "stop", "tgi"]


def plan(profile: str, root: Path = Path("."), image: str = IMAGE) -> list[list[str]]:
    if profile != "gpu":
        raise ConfigError(f"docker plan: only PROFILE=gpu runs stages in containers. Given: {profile}")
    cmds = [["supportlm", "params", "apply-profile", profile]]
    for stage in stage_order(root / "dvc.yaml"):
        if stage == "bench":
            # host network: the bench reaches TGI on 127.0.0.1 and serves its gateway there, as on the host
            cmds += [TGI_UP, docker_run(stage, root, image, network="host"), TGI_DOWN]
        else:
            cmds.append(docker_run(stage, root, image))
    return cmds


def run(profile: str, dry_run: bool, root: Path = Path(".")) -> list[str]:
    lines = [shlex.join(c) for c in plan(profile, root)]
    if dry_run:
        return lines
    for cmd, line in zip(plan(profile, root), lines, strict=True):
        print(f"+ {line}", flush=True)
        subprocess.run(cmd, check=True)
    return lines
