"""docker/compose.yaml's cpu profile, up for real: gateway + llama.cpp engine + Prometheus from images built
here, the gateway's contract through the published port, Prometheus scraping it, nobody running as root."""

from __future__ import annotations

import json
import subprocess
import time

import httpx2
import pytest

from supportlm.bench.containers import COMPOSE_PROJECT, compose_cli, compose_stack

from .conftest import ROOT, free_port

ALICE = {"Authorization": "Bearer sk-alice-0123456789"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if compose_cli() is None:
        pytest.skip("no compose (apt-get install docker-compose, or the compose v2 plugin)")
    proc = subprocess.run(["make", "docker-build-serve", "docker-build-prometheus"], cwd=ROOT, capture_output=True,
                          text=True, timeout=3600, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    models = tmp_path_factory.mktemp("models")  # empty: the engine serves the bundled base model
    env = {"SUPPORTLM_API_KEYS": "alice:sk-alice-0123456789", "GATEWAY_PORT": str(free_port()),
           "PROMETHEUS_PORT": str(free_port()), "SUPPORTLM_MODELS_DIR": str(models),
           "SUPPORTLM_LIMITS_BURST": "3", "SUPPORTLM_LIMITS_RATE_PER_S": "0.05"}  # fmt: skip
    with compose_stack(ROOT, env, timeout_s=300) as ready_s:
        yield {"gateway": f"http://127.0.0.1:{env['GATEWAY_PORT']}", "prom": f"http://127.0.0.1:{env['PROMETHEUS_PORT']}",
               "ready_s": ready_s}  # fmt: skip


def _chat(stream: bool = False, max_tokens: int = 8) -> dict:
    return {"messages": [{"role": "user", "content": "How do I track my order?"}], "max_tokens": max_tokens,
            "stream": stream}  # fmt: skip


def test_gateway_serves_through_the_engine_container(stack) -> None:
    url = stack["gateway"]
    ready = httpx2.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "model": "supportlm"}, ready.text
    r = httpx2.post(f"{url}/v1/chat/completions", json=_chat(), headers=ALICE, timeout=120)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip(), r.text
    with httpx2.stream("POST", f"{url}/v1/chat/completions", json=_chat(stream=True), headers=ALICE,
                       timeout=120) as resp:  # fmt: skip
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[0][6:])["object"] == "chat.completion.chunk"
    bad = httpx2.post(f"{url}/v1/chat/completions", json=_chat(), headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401
    codes = [httpx2.post(f"{url}/v1/chat/completions", json=_chat(max_tokens=1), headers=ALICE,
                         timeout=60).status_code for _ in range(5)]  # fmt: skip
    assert 429 in codes, codes


def test_prometheus_scrapes_the_gateway_request_count(stack) -> None:
    httpx2.post(f"{stack['gateway']}/v1/chat/completions", json=_chat(max_tokens=1), headers=ALICE, timeout=60)
    deadline, value = time.monotonic() + 60, 0.0
    while time.monotonic() < deadline:  # scrape_interval is 5 s
        res = httpx2.get(f"{stack['prom']}/api/v1/query", params={"query": "sum(supportlm_request_count_total)"},
                         timeout=10).json()  # fmt: skip
        if res["data"]["result"]:
            value = float(res["data"]["result"][0]["value"][1])
            if value > 0:
                break
        time.sleep(2)
    assert value > 0, res
    targets = httpx2.get(f"{stack['prom']}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    health = {t["labels"]["job"] + "@" + t["labels"]["instance"]: t["health"] for t in targets}
    assert health.get("gateway@gateway:8000") == "up" and health.get("engine@engine:8080") == "up", health


def test_no_container_of_the_stack_runs_as_root(stack) -> None:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={COMPOSE_PROJECT}"],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert len(ids) == 3, ids  # engine, gateway, prometheus
    for cid in ids:
        # `docker top` = the host's ps: UID PID PPID C STIME TTY TIME CMD (numeric uid: no such user here)
        rows = subprocess.run(["docker", "top", cid], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
        uids = {r.split()[0] for r in rows if r.strip()}
        assert uids and not uids & {"0", "root"}, (cid, rows)


def test_ports_are_published_on_loopback_only(stack) -> None:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={COMPOSE_PROJECT}"],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    bound = subprocess.run(["docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}", *ids],
                           capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    host_ips = {b["HostIp"] for line in bound for spec in (json.loads(line) or {}).values() for b in spec}
    assert host_ips == {"127.0.0.1"}, host_ips
