"""The training image on its own: one torch for CPU and CUDA, the locked set, llama.cpp from the shared
build, the checkout's code (not a baked copy), no build secret in any layer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

IMAGE = "supportlm-train:0.1.0"


@pytest.fixture(scope="module")
def image() -> str:
    proc = subprocess.run(["make", "docker-build-train"], cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return IMAGE


def _in_image(image: str, code: str, *, mount: bool = False) -> str:
    vol = ["-v", f"{ROOT}:/workspace:ro"] if mount else []
    proc = subprocess.run(["docker", "run", "--rm", *vol, image, "python", "-c", code], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_one_torch_for_cpu_and_cuda_and_the_locked_set(image: str) -> None:
    out = json.loads(_in_image(image, (
        "import json, re, torch, importlib.metadata as m; "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
        "'x': float(torch.ones(2, 2).sum()), 'dists': {re.sub('[-_.]+', '-', d.metadata['Name']).lower(): d.version "
        "for d in m.distributions()}}))")))  # fmt: skip
    assert out["torch"].startswith("2.13.0+cu") and out["cuda"] and out["x"] == 4.0  # the CUDA build, computing on the CPU
    lock = dict(line.split(" ")[0].split("==") for line in (ROOT / "requirements/lock-train-image.txt").read_text()
                .splitlines() if line and not line.startswith("#"))  # fmt: skip
    venv_own = ("pip", "setuptools")  # from the venv's ensurepip (setuptools is replaced when the lock has it)
    installed = {k: v for k, v in out["dists"].items() if k not in venv_own}
    lock = {k: v for k, v in lock.items() if k not in venv_own}
    assert installed == lock, set(installed.items()) ^ set(lock.items())


def test_runs_the_mounted_checkout_and_finds_llama_cpp(image: str) -> None:
    out = json.loads(_in_image(image, (
        "import json, supportlm, supportlm.llamacpp as l; "
        "print(json.dumps({'file': supportlm.__file__, 'server': str(l.find_tool('llama-server')), "
        "'quantize': str(l.find_tool('llama-quantize')), 'converter': str(l.converter()[0]), "
        "'mode': l.build_info().get('cpu_mode')}))"), mount=True))  # fmt: skip
    assert out["file"] == "/workspace/src/supportlm/__init__.py"
    assert out["server"].startswith("/opt/supportlm-cache/") and out["quantize"].endswith("llama-quantize")
    assert out["converter"].endswith("convert_hf_to_gguf.py") and out["mode"] == "portable"


def test_runs_as_non_root_and_holds_no_build_secret(image: str) -> None:
    config = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True,
                                       check=True).stdout)[0]["Config"]  # fmt: skip
    assert config["User"] == "10001"
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    for text in (history, json.dumps(config)):
        assert "BEGIN CERTIFICATE" not in text and "HF_TOKEN=" not in text
    size = _in_image(image, "import os; p='/run/secrets/ca'; print(os.path.getsize(p) if os.path.exists(p) else 0)")
    assert size.strip() == "0"


def test_no_image_of_ours_holds_the_build_ca_or_a_token(image: str) -> None:
    """Every image built here (llama, serve, train, prometheus): the CA went in as a BuildKit secret only."""
    from supportlm.bench.containers import IMAGES

    ca_lines = [line for line in Path("/etc/ssl/certs/ca-certificates.crt").read_text().splitlines()[1:4]
                if line.strip()] if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else []  # fmt: skip
    checked = 0
    for name in IMAGES.values():
        inspect = subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True, check=False)
        if inspect.returncode != 0:
            continue  # not built in this run
        history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        for text in (history, inspect.stdout):
            assert "BEGIN CERTIFICATE" not in text and "HF_TOKEN=" not in text, name
            assert not any(line in text for line in ca_lines), name
        checked += 1
    assert checked >= 2  # at least the llama image and this one
