"""The serving image, built here on the pinned Debian base (or the local one from `make base-image`):
gateway + llama-server in one non-root container, the bundled model served, the error contract kept,
and no build secret left in any layer."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx2
import pytest

from .conftest import ROOT, free_port

IMAGE = "supportlm-serve:0.1.0"
CA = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def image() -> str:
    proc = subprocess.run(["make", "docker-build-serve"], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def served(image: str):
    port, name = free_port(), f"supportlm-test-{uuid.uuid4().hex[:8]}"
    cmd = ["docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000",
           "-e", "SUPPORTLM_API_KEYS=alice:sk-alice-0123456789", "-e", "SUPPORTLM_LIMITS_BURST=3",
           "-e", "SUPPORTLM_LIMITS_RATE_PER_S=0.05", "-e", "SUPPORTLM_LLAMA_THREADS=2", image]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx2.get(f"{url}/readyz", timeout=3).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                                   text=True, check=False).stdout.strip()  # fmt: skip
            logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True,
                                  check=False)  # fmt: skip
            assert state == "true", f"container exited:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() < deadline, f"not ready after 240 s:\n{logs.stderr[-3000:]}"
            time.sleep(1)
        yield url, name
    finally:
        subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True, check=False, timeout=60)


ALICE = {"Authorization": "Bearer sk-alice-0123456789"}


def _chat(stream: bool = False) -> dict:
    return {"messages": [{"role": "user", "content": "How do I track my order?"}], "max_tokens": 8, "stream": stream}


def test_the_container_serves_the_bundled_model(served) -> None:
    url, _ = served
    assert httpx2.get(f"{url}/readyz", timeout=5).json() == {"status": "ready", "model": "supportlm"}
    logs = subprocess.run(["docker", "logs", served[1]], capture_output=True, text=True, check=False, timeout=30)
    assert "serving bundled model" in logs.stdout + logs.stderr  # which model: the server log, not /readyz
    r = httpx2.post(f"{url}/v1/chat/completions", json=_chat(), headers=ALICE, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip()
    with httpx2.stream("POST", f"{url}/v1/chat/completions", json=_chat(stream=True), headers=ALICE,
                       timeout=120) as resp:  # fmt: skip
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_auth_and_rate_limit_in_the_container(served) -> None:
    url, _ = served
    bad = httpx2.post(f"{url}/v1/chat/completions", json=_chat(), headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
    codes = [httpx2.post(f"{url}/v1/chat/completions", json={**_chat(), "max_tokens": 1}, headers=ALICE,
                         timeout=60).status_code for _ in range(5)]  # fmt: skip
    assert 429 in codes


def test_processes_run_as_non_root(served) -> None:
    _, name = served
    # `docker top` = the host's ps: UID PID PPID C STIME TTY TIME CMD (the uid is numeric: no such user here)
    rows = subprocess.run(["docker", "top", name], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    procs = [(r.split()[0], " ".join(r.split()[7:])) for r in rows if r.strip()]
    cmds = " ".join(cmd for _, cmd in procs)
    assert "supportlm.serve.server" in cmds and "llama-server" in cmds, procs
    assert all(uid not in ("0", "root") for uid, _ in procs), procs


def test_no_build_secret_in_the_image(image: str) -> None:
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    config = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    for text in (history, config):
        assert "BEGIN CERTIFICATE" not in text and "sk-" not in text
    # the CA bundle was a secret mount: nothing of it is in the final filesystem
    probe = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
                            "cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null | wc -c"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert probe == "0", f"{probe} bytes of a CA bundle in the image"
