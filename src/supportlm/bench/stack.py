"""The serving stack under test: `serve()` in a child process, its settings, warm-up and overhead pairs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.bench.console import BenchError
from supportlm.llamacpp import LLAMA_BUILD_ENV
from supportlm.runtime import describe_exit

log = logging.getLogger("supportlm.bench")


@dataclass
class Stack:
    gateway_url: str
    engine_url: str
    api_key: str
    parallel: int
    settings: Any  # the ServeSettings the gateway runs with
    pid: int | None = None  # the gateway's process (serve(); a managed llama-server is its child)

    @property
    def served_name(self) -> str:
        return str(self.settings.model.served_name)


def bench_settings(serve_params: Any, model: Path | None, *, threads: int | None, slot_dir: Path | None,
                   max_level: int, **overrides: Any) -> Any:  # fmt: skip
    """ServeSettings for the bench, built by `load_settings` as `supportlm serve` builds them: params.serve
    plus what a load test needs (a fresh gateway port, a generated key, no rate limit). From the environment
    only the secrets (the engine's key, the Redis URL): the report describes params.yaml's serve block, so
    no other SUPPORTLM_* variable may change what is measured. Embedded llama.cpp: this model on a fresh
    port with slot erase and no RAM prompt cache. `model=None`: the external engine at serve.engine.url
    (TGI / vLLM / any OpenAI-compatible server) exactly as configured. `overrides` (nested, e.g.
    `limits={...}`) win over the bench's own."""
    from supportlm.bench.engine_tuning import free_port
    from supportlm.config import ServeParams
    from supportlm.serve.settings import load_settings, merge_overrides, secrets_from_env

    serve_params = serve_params if serve_params is not None else ServeParams()
    queue = max(serve_params.limits.max_queue, max_level)
    llama: dict[str, Any] = {} if threads is None else {"threads": threads}
    engine: dict[str, Any] = {}
    if model is not None:
        engine = {"kind": "llamacpp", "url": None, "cmd": None, "host": "127.0.0.1", "port": free_port()}
        slots = ["--slot-save-path", str(slot_dir), "--cache-ram", "0"]
        llama["extra_args"] = [*serve_params.llama.extra_args, *slots]
    bench = {
        "host": "127.0.0.1",
        "port": free_port(),
        "engine": engine,
        "model": {"fallback_bundled": False, **({"path": model} if model is not None else {})},
        "llama": llama,
        "api_keys": f"bench:sk-bench-{secrets.token_urlsafe(18)}",
        "api_keys_file": None,
        # the load generator is one key: per-key limits would measure the cap, not the engine
        "limits": {"rate_per_s": 1e6, "burst": 1_000_000, "per_key_concurrency": None,  # all slots
                   "per_key_queue": queue, "fair_window_s": 0.0, "token_rate_per_s": None,
                   "max_queue": queue},
        "log": {"stdout": False, "file": None},
    }  # fmt: skip
    return load_settings(serve_params, env=secrets_from_env(), **merge_overrides(bench, overrides))


@contextlib.contextmanager
def serving_stack(settings: Any, work: Path, start_timeout_s: float = 240.0) -> Iterator[Stack]:
    """`serve(settings)` in a child process (`python -m supportlm.bench.stack --serve-child`), ready."""
    import httpx2

    from supportlm.serve.settings import dump_with_secrets

    data = dump_with_secrets(settings)  # the child runs load_settings(**data)
    key = data["api_keys"].split(",")[0].split(":", 1)[1]  # the first key's secret ("bench:<key>")
    cfg = work / "serve-settings.json"
    cfg.touch(mode=0o600)
    cfg.write_text(json.dumps(data))
    # the serve settings travel in cfg; only the llama.cpp build selection (one build for all) stays
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTLM_") or k in LLAMA_BUILD_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    logf = (work / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "supportlm.bench.stack", "--serve-child", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf, env=env)  # fmt: skip
    gw = f"http://127.0.0.1:{settings.port}"
    managed = settings.engine.kind == "llamacpp" and settings.manages_engine
    # slots are llama-server's (erased between runs); an external engine gets parallel=0: nothing to erase
    stack = Stack(gw, settings.engine_base_url, key, settings.llama.parallel if managed else 0, settings, proc.pid)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"serve() exited ({describe_exit(proc.returncode)}) before ready:\n"
                    f"{(work / 'serve.log').read_text()[-2500:]}"
                )
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{gw}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"gateway not ready after {start_timeout_s:g} s; log: {work / 'serve.log'}")
            time.sleep(0.3)
        cfg.unlink(missing_ok=True)  # it holds the key; the child has read it
        yield stack
    finally:
        cfg.unlink(missing_ok=True)
        proc.send_signal(signal.SIGTERM)  # graceful: drains, then stops llama-server
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        logf.close()


def engine_model(stack: Stack) -> str:
    """The model name a request straight to the engine carries (vLLM checks it; llama-server and TGI do not)."""
    return str(stack.settings.engine.model or stack.served_name)


def erase_slots(engine_url: str, parallel: int) -> None:
    """Empty every llama-server slot's KV cache (needs --slot-save-path) so each run starts cold."""
    import httpx2

    for i in range(parallel):
        r = httpx2.post(f"{engine_url}/slots/{i}?action=erase", timeout=10)
        if r.status_code != 200:
            raise BenchError(f"erasing llama-server slot {i} failed ({r.status_code}): {r.text[:200]}")


def warm_up(stack: Stack, prompts: list[list[dict[str, str]]], n: int, max_tokens: int) -> None:
    """A few requests through the gateway (plain and streamed): page cache, graphs, connection pools."""
    import httpx2

    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx2.Client(timeout=300) as c:
        for i in range(n):
            body = {
                "messages": prompts[-1 - i % len(prompts)],
                "max_tokens": max_tokens,
                "stream": bool(i % 2),
            }
            for attempt in range(5):  # a 503 + Retry-After (engine probe flapping) is waited out, not fatal
                r = c.post(f"{stack.gateway_url}/v1/chat/completions", json=body, headers=headers)
                if r.status_code == 200:
                    break
                if r.status_code not in (429, 503) or attempt == 4:
                    raise BenchError(f"warm-up request failed ({r.status_code}): {r.text[:300]}")
                time.sleep(min(float(r.headers.get("Retry-After") or 1), 5.0))


def paired_overhead(
    stack: Stack, prompts: list[list[dict[str, str]]], pairs: int, max_tokens: int
) -> dict[str, Any]:
    """Gateway overhead from interleaved pairs: each prompt goes to the engine and to the gateway back to
    back (order alternating, slots erased before each call, greedy, streamed and plain in turn), so both
    calls do identical engine work under the same machine load; overhead = median(gateway / engine) - 1.

    On a shared box the load drifts between two 20-second Locust runs by more than the few percent a
    gateway adds; a pair is ~2 s apart, so the drift cancels."""
    import statistics

    import httpx2

    # a fresh connection per call for both targets (same cost on both sides): llama-server closes a kept-alive
    # connection after a streamed reply, and reusing it fails with RemoteProtocolError
    plain = {"Connection": "close"}
    auth = {**plain, "Authorization": f"Bearer {stack.api_key}"}
    ratios, gw_ms, en_ms, failed, same_tokens = [], [], [], 0, 0
    with httpx2.Client(timeout=300) as c:

        def call(target: str, messages: list[dict[str, str]], stream: bool) -> tuple[float, int] | None:
            """(latency ms, completion tokens) or None if the call failed."""
            url = (stack.gateway_url if target == "gateway" else stack.engine_url) + "/v1/chat/completions"
            model = engine_model(stack) if target == "engine" else stack.served_name
            body = {"model": model, "messages": messages, "max_tokens": max_tokens,
                    "temperature": 0, "seed": 1, "stream": stream}  # fmt: skip
            headers = auth if target == "gateway" else plain
            erase_slots(stack.engine_url, stack.parallel)
            t0 = time.perf_counter()
            tokens, done = 0, False
            try:
                if stream:
                    body["stream_options"] = {"include_usage": True}
                    with c.stream("POST", url, json=body, headers=headers) as r:
                        if r.status_code != 200:
                            return None
                        for line in r.iter_lines():
                            if line.strip() == "data: [DONE]":
                                done = True
                                break
                            if line.startswith("data: ") and '"usage"' in line:
                                tokens = int(
                                    (json.loads(line[6:]).get("usage") or {}).get("completion_tokens") or 0
                                )
                else:
                    r = c.post(url, json=body, headers=headers)
                    if r.status_code != 200:
                        return None
                    done, tokens = True, int(r.json()["usage"]["completion_tokens"])
            except (httpx2.HTTPError, ValueError, KeyError, TypeError):
                return None
            ms = (time.perf_counter() - t0) * 1000
            return (ms, tokens) if done and tokens > 0 else None

        for i in range(pairs):
            messages, stream = prompts[i % len(prompts)], bool(i % 2)
            order = ("engine", "gateway") if i % 2 == 0 else ("gateway", "engine")
            got = {t: call(t, messages, stream) for t in order}
            g, e = got["gateway"], got["engine"]
            if g is None or e is None:
                failed += 1
                continue
            gw_ms.append(g[0])
            en_ms.append(e[0])
            same_tokens += g[1] == e[1]
            ratios.append((g[0] / g[1]) / (e[0] / e[1]))  # per completion token: robust if the replies differ
    return {
        "overhead": round(statistics.median(ratios) - 1, 4) if ratios else None,
        "pairs": len(ratios),
        "failed_pairs": failed,
        "pairs_with_equal_tokens": same_tokens,  # greedy + cold slots: both replies should be identical
        "gateway_median_ms": round(statistics.median(gw_ms), 1) if gw_ms else None,
        "engine_median_ms": round(statistics.median(en_ms), 1) if en_ms else None,
        "ratio_p10_p90": [round(q, 3) for q in statistics.quantiles(ratios, n=10)[::8]]
        if len(ratios) >= 2
        else None,
        "method": "interleaved pairs, same prompt, greedy, slots erased before each call; "
        "median over pairs of (gateway ms per token / engine ms per token) - 1",
    }


def _serve_child(cfg: Path) -> None:  # pragma: no cover - runs in the serve subprocess
    from supportlm.serve.server import serve
    from supportlm.serve.settings import load_settings

    serve(load_settings(**json.loads(cfg.read_text())))


if __name__ == "__main__":  # pragma: no cover - `python -m supportlm.bench.stack --serve-child CFG`
    import argparse

    ap = argparse.ArgumentParser(description="serve() for the bench, in a child process")
    ap.add_argument("--serve-child", type=Path, required=True)
    _serve_child(ap.parse_args().serve_child)
