"""Fixed work, through the gateway and straight at the engine: what the gateway costs, and nothing else.

Locust's levels run for a time and take whatever replies the model writes, so two runs differ in how many
requests, how long the replies and where the load drifted. Here both targets get *identical work*:

- the same `prompts` fixed conversations, user u's request j always prompt (u * per_user + j) % prompts;
- the same output length: `max_tokens` with `ignore_eos` (llama-server and vLLM honour it; the gateway
  passes it on), greedy, every reply exactly `max_tokens` tokens (checked, and counted if not);
- the same users (closed loop, no wait), half streamed and half plain, slots erased before each round;
- rounds in pairs, engine and gateway back to back, the order alternating (ABBA), so load drifting on a
  shared box cancels within a pair.

Per level: tokens/s of each round, the pairs' gateway/engine ratio with a bootstrap 95% interval, ms per
100 tokens per request (paired: the same user's same request in both rounds of a pair), and the CPU seconds every process spent in the
round (gateway, llama-server, this client; /proc via psutil). On a box whose cores all decode, each
CPU-second the gateway spends is taken from llama.cpp's threads: `gateway_cpu_share` is that cost.

`profile_gateway` samples the gateway's Python stacks with py-spy during one more gateway round and sums
them by function and by library ("where the gateway's CPU goes").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.bench.stack import Stack, engine_model, erase_slots

TARGETS = ("engine", "gateway")


@dataclass
class Call:
    """One request's outcome."""

    ms: float
    tokens: int
    stream: bool
    prompt: int
    slot: tuple[int, int]  # (user, request number): the same work in both rounds of a pair
    error: str | None = None
    ttft_ms: float | None = None  # streamed: until the first event with content


def _body(stack: Stack, target: str, messages: list[dict[str, str]], max_tokens: int, stream: bool) -> dict:
    body: dict[str, Any] = {
        "model": engine_model(stack) if target == "engine" else stack.served_name,
        "messages": messages, "max_tokens": max_tokens, "ignore_eos": True,
        "temperature": 0, "seed": 1, "stream": stream,
    }  # fmt: skip
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _call(client: Any, url: str, headers: dict[str, str], body: dict[str, Any], prompt: int,
                slot: tuple[int, int]) -> Call:
    """One request, timed until its last byte; tokens from `usage` (streamed: the usage chunk)."""
    stream = bool(body["stream"])
    t0 = time.perf_counter()
    try:
        if stream:
            tokens, done, ttft = 0, False, None
            async with client.stream("POST", url, json=body, headers=headers) as r:
                if r.status_code != 200:
                    return Call(0.0, 0, stream, prompt, slot, f"HTTP {r.status_code}")
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and '"usage"' in line:
                        tokens = int((json.loads(line[6:]).get("usage") or {}).get("completion_tokens") or 0)
                    elif ttft is None and '"content":"' in line and '"content":""' not in line:
                        ttft = (time.perf_counter() - t0) * 1000
            if not done:
                return Call(0.0, 0, stream, prompt, slot, "incomplete stream")
            return Call((time.perf_counter() - t0) * 1000, tokens, stream, prompt, slot, ttft_ms=ttft)
        else:
            r = await client.post(url, json=body, headers=headers)
            if r.status_code != 200:
                return Call(0.0, 0, stream, prompt, slot, f"HTTP {r.status_code}")
            tokens = int(r.json()["usage"]["completion_tokens"])
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not a crash of the bench
        return Call(0.0, 0, stream, prompt, slot, type(exc).__name__)
    return Call((time.perf_counter() - t0) * 1000, tokens, stream, prompt, slot)


async def _round(stack: Stack, target: str, prompts: list[list[dict[str, str]]], users: int, per_user: int,
                 max_tokens: int) -> tuple[list[Call], float]:  # fmt: skip
    import httpx2

    url = (stack.gateway_url if target == "gateway" else stack.engine_url) + "/v1/chat/completions"
    # a fresh connection per call on both sides (the same cost for both): llama-server closes a kept-alive
    # connection after a streamed reply
    headers = {"Connection": "close"}
    if target == "gateway":
        headers["Authorization"] = f"Bearer {stack.api_key}"
    calls: list[Call] = []
    limits = httpx2.Limits(max_connections=users, max_keepalive_connections=0)
    async with httpx2.AsyncClient(timeout=300, limits=limits) as client:

        async def user(u: int) -> None:
            for j in range(per_user):
                k = (u * per_user + j) % len(prompts)
                body = _body(stack, target, prompts[k], max_tokens, stream=(u + j) % 2 == 0)
                calls.append(await _call(client, url, headers, body, k, (u, j)))

        t0 = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(users)))
        wall = time.perf_counter() - t0
    return calls, wall


def _processes(stack: Stack) -> dict[str, Any]:
    """psutil handles: the gateway (serve()'s process) and its llama-server child, when there is one."""
    import psutil

    if stack.pid is None:
        return {}
    gw = psutil.Process(stack.pid)
    procs = {"gateway": gw}
    engine = [c for c in gw.children(recursive=True) if "llama-server" in (c.name() or "")]
    if engine:
        procs["engine"] = engine[0]
    return procs


def _cpu_s(procs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, proc in procs.items():
        t = proc.cpu_times()
        out[name] = t.user + t.system
    out["client"] = time.process_time()  # this process: the load generator
    return out


def run_round(stack: Stack, target: str, prompts: list[list[dict[str, str]]], users: int, per_user: int,
              max_tokens: int) -> dict[str, Any]:  # fmt: skip
    """One round from empty slots: {target, users, wall_s, tokens, tokens_per_s, requests, errors,
    short_replies, ms_per_100 (per request, in order), cpu_s {gateway, engine, client}}."""
    erase_slots(stack.engine_url, stack.parallel)
    procs = _processes(stack)
    before = _cpu_s(procs)
    calls, wall = asyncio.run(_round(stack, target, prompts, users, per_user, max_tokens))
    after = _cpu_s(procs)
    ok = [c for c in calls if c.error is None and c.tokens > 0]
    tokens = sum(c.tokens for c in ok)
    return {
        "target": target,
        "users": users,
        "wall_s": round(wall, 3),
        "requests": len(calls),
        "errors": dict(Counter(c.error for c in calls if c.error is not None)),
        "tokens": tokens,
        "short_replies": sum(c.tokens != max_tokens for c in ok),  # ignore_eos not honoured, or a stop
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "calls": [{"user": c.slot[0], "seq": c.slot[1], "prompt": c.prompt, "stream": c.stream, "ms": round(c.ms, 1),
                   "tokens": c.tokens, "ttft_ms": None if c.ttft_ms is None else round(c.ttft_ms, 1)}
                  for c in sorted(ok, key=lambda c: c.slot)],
        "cpu_s": {k: round(after[k] - before[k], 3) for k in after},
    }


def ratio_interval(ratios: list[float], seed: int = 0) -> dict[str, Any]:
    """Geometric mean of paired ratios with a percentile-bootstrap 95% interval (scipy); with fewer than 3
    pairs, the range instead of an interval."""
    if not ratios:
        return {"ratio": None, "low": None, "high": None, "n": 0}
    logs = [math.log(r) for r in ratios]
    mean = math.exp(statistics.fmean(logs))
    if len(ratios) < 3 or len(set(ratios)) == 1:
        lo, hi = min(ratios), max(ratios)
        method = "range (fewer than 3 distinct pairs)"
    else:
        from scipy.stats import bootstrap

        res = bootstrap((logs,), statistics.fmean, n_resamples=2000, confidence_level=0.95,
                        method="percentile", random_state=seed)  # fmt: skip
        lo, hi = math.exp(res.confidence_interval.low), math.exp(res.confidence_interval.high)
        method = "geometric mean, percentile bootstrap 95% (2000 resamples)"
    return {"ratio": round(mean, 4), "low": round(lo, 4), "high": round(hi, 4), "n": len(ratios),
            "method": method}  # fmt: skip


def summarise_level(rounds: list[dict[str, Any]], users: int, max_tokens: int) -> dict[str, Any]:
    """One level's pairs -> the gateway/engine tokens/s ratio (interval), ms per 100 tokens per target,
    and the CPU each process spent per 100 tokens."""
    by = {t: [r for r in rounds if r["target"] == t] for t in TARGETS}
    pairs = list(zip(by["engine"], by["gateway"], strict=False))
    tps_ratios = [g["tokens_per_s"] / e["tokens_per_s"] for e, g in pairs if e["tokens_per_s"] and g["tokens_per_s"]]
    out: dict[str, Any] = {"users": users, "pairs": len(pairs), "tokens_per_s_ratio": ratio_interval(tps_ratios)}
    # per request, paired by (round pair, user, request number): same prompt, same stream flag
    lat_ratios = []
    for e, g in pairs:
        ge = {(c["user"], c["seq"]): c for c in e["calls"]}
        for c in g["calls"]:
            m = ge.get((c["user"], c["seq"]))
            if m and m["ms"] > 0 and c["tokens"] == m["tokens"]:
                lat_ratios.append(c["ms"] / m["ms"])
    out["latency_ratio"] = ratio_interval(lat_ratios)
    for t in TARGETS:
        rs = by[t]
        ms100 = [c["ms"] * 100 / c["tokens"] for r in rs for c in r["calls"]]
        streamed = [c for r in rs for c in r["calls"] if c.get("ttft_ms") is not None and c["tokens"] > 1]
        ttft = [c["ttft_ms"] for c in streamed]
        decode = [(c["ms"] - c["ttft_ms"]) / (c["tokens"] - 1) for c in streamed]
        tokens = sum(r["tokens"] for r in rs) or 1
        cpu = {k: sum(r["cpu_s"].get(k, 0.0) for r in rs) for k in ("gateway", "engine", "client")}
        wall = sum(r["wall_s"] for r in rs) or 1.0
        out[t] = {
            "rounds": len(rs),
            "tokens_per_s": [r["tokens_per_s"] for r in rs],
            "tokens_per_s_median": statistics.median([r["tokens_per_s"] for r in rs]) if rs else None,
            "requests": sum(r["requests"] for r in rs),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "short_replies": sum(r["short_replies"] for r in rs),
            "ms_per_100_tokens_p50": round(statistics.median(ms100), 1) if ms100 else None,
            "ms_per_100_tokens_mean": round(statistics.fmean(ms100), 1) if ms100 else None,
            "ms_per_100_tokens_interval": _mean_interval(ms100),
            # streamed requests: the first token (prompt processing + one step) and each token after it
            "ttft_ms_p50": round(statistics.median(ttft), 1) if ttft else None,
            "decode_ms_per_token_p50": round(statistics.median(decode), 3) if decode else None,
            # CPU-seconds per 100 generated tokens, and as cores busy on average over the rounds
            "cpu_ms_per_100_tokens": {k: round(v * 1000 * 100 / tokens, 2) for k, v in cpu.items()},
            "cores_busy": {k: round(v / wall, 3) for k, v in cpu.items()},
        }
    g, e = out["gateway"]["cores_busy"], out["engine"]["cores_busy"]
    out["gateway_cpu_share"] = round(g["gateway"] / max(g["gateway"] + g["engine"], 1e-9), 4)
    out["gateway_cores_busy_extra"] = round(g["gateway"] - e["gateway"], 3)  # minus its idle probing
    out["max_tokens"] = max_tokens
    return out


def _mean_interval(xs: list[float], seed: int = 0) -> list[float] | None:
    if len(xs) < 3 or len(set(xs)) == 1:
        return None
    from scipy.stats import bootstrap

    res = bootstrap((xs,), statistics.fmean, n_resamples=2000, confidence_level=0.95, method="percentile",
                    random_state=seed)  # fmt: skip
    return [round(res.confidence_interval.low, 1), round(res.confidence_interval.high, 1)]


def fixed_load(stack: Stack, prompts: list[list[dict[str, str]]], *, levels: list[int], pairs: int,
               per_user: int, max_tokens: int, log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Every level: `pairs` engine/gateway round pairs (ABBA); returns {levels: {users: summary}, rounds}."""
    out: dict[str, Any] = {"levels": {}, "rounds": []}
    for users in levels:
        rounds = []
        for i in range(pairs):
            order = TARGETS if i % 2 == 0 else TARGETS[::-1]
            for target in order:
                r = run_round(stack, target, prompts, users, per_user, max_tokens)
                rounds.append(r)
                log(
                    f"fixed work {target:7s} {users} user(s) pair {i + 1}/{pairs}: {r['tokens_per_s']:.1f} tok/s, "
                    f"{r['requests']} req x {max_tokens} tok in {r['wall_s']:.1f} s; cpu s gateway "
                    f"{r['cpu_s'].get('gateway', 0):.2f} engine {r['cpu_s'].get('engine', 0):.2f} client "
                    f"{r['cpu_s']['client']:.2f}" + (f"; errors {r['errors']}" if r["errors"] else "")
                )
        s = summarise_level(rounds, users, max_tokens)
        out["levels"][str(users)] = s
        t = s["tokens_per_s_ratio"]
        if t["ratio"] is not None:
            log(f"fixed work {users} user(s): gateway/engine tokens/s {t['ratio']:.3f} [{t['low']:.3f}, "
                f"{t['high']:.3f}]; gateway CPU share {s['gateway_cpu_share']:.1%}")  # fmt: skip
        out["rounds"].extend({k: v for k, v in r.items() if k != "calls"} for r in rounds)
    out["setup"] = {"levels": levels, "pairs": pairs, "requests_per_user": per_user, "max_tokens": max_tokens,
                    "prompts": len(prompts), "ignore_eos": True, "temperature": 0,
                    "mix": "user u's request j: prompt (u * requests_per_user + j) % prompts, streamed when u + j is even"}  # fmt: skip
    return out


# ---------------------------------------------------------------- where the gateway's CPU goes

# the leaf frame's file (py-spy prints it relative to its sys.path entry) -> what is spending the CPU
EVENT_LOOP = {"asyncio", "selectors", "uvloop", "socket", "ssl"}


def _library(frame: str) -> str:
    """`func (path/to/file.py:12)` -> its top package (`supportlm/serve` for ours; `event loop` for asyncio's
    own machinery: selecting, socket reads and writes, callbacks)."""
    path = frame.rpartition("(")[2].rpartition(":")[0]
    parts = path.replace("\\", "/").split("/")
    top = parts[0].removesuffix(".py") if parts else ""
    if top == "supportlm" and len(parts) > 2:
        return f"supportlm/{parts[1]}"
    if top in EVENT_LOOP:
        return "event loop"
    return top or "other"


def parse_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """py-spy `--format raw` (collapsed stacks: `frame;frame;... count`) -> samples by leaf function (self),
    by function anywhere on the stack (inclusive) and by the leaf's library."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    libs: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        libs[_library(frames[-1])] += count
        for f in set(frames):
            incl[f] += count

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": n, "share": round(n / total, 4)} for f, n in c.most_common(top)]

    return {"samples": total, "self": rows(self_c), "inclusive": rows(incl),
            "by_library": [{"library": k, "samples": v, "share": round(v / total, 4)}
                           for k, v in libs.most_common()] if total else []}  # fmt: skip


def profile_gateway(stack: Stack, prompts: list[list[dict[str, str]]], *, users: int, per_user: int,
                    max_tokens: int, rate: int = 200) -> dict[str, Any]:  # fmt: skip
    """One more gateway round at `users` while py-spy samples the gateway (`--nonblocking`: it does not stop
    the process to read it). {skipped: why} when py-spy is missing or may not attach (ptrace refused)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).is_file():
        return {"skipped": "py-spy is not installed (pip install py-spy; the bench extra declares it)"}
    if stack.pid is None:
        return {"skipped": "no gateway process to attach to"}
    with tempfile.TemporaryDirectory(prefix="supportlm-pyspy-") as tmp:
        out = Path(tmp) / "gateway.txt"
        cmd = [spy, "record", "--pid", str(stack.pid), "--rate", str(rate), "--format", "raw", "--function",
               "--nonblocking", "--output", str(out)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # attach
        if proc.poll() is not None:
            return {"skipped": f"py-spy could not attach: {(proc.stdout.read() if proc.stdout else '')[-300:]}"}
        r = run_round(stack, "gateway", prompts, users, per_user, max_tokens)
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            log_text, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            log_text, _ = proc.communicate()
        if not out.is_file():
            return {"skipped": f"py-spy wrote no profile: {(log_text or '')[-300:]}"}
        prof = parse_collapsed(out.read_text())
    with contextlib.suppress(KeyError, TypeError):
        prof["gateway_cpu_s"] = r["cpu_s"]["gateway"]
    prof.update({"users": users, "rate_hz": rate, "tokens": r["tokens"], "wall_s": r["wall_s"],
                 "tokens_per_s": r["tokens_per_s"], "tool": "py-spy record --nonblocking --function",
                 "note": "a separate round: py-spy's own sampling costs CPU, so this round is not in the ratio"})  # fmt: skip
    return prof


def describe_profile(prof: dict[str, Any]) -> str:
    """One line for the console: where the sampled gateway CPU went, by library."""
    if prof.get("skipped"):
        return f"gateway profile skipped: {prof['skipped']}"
    libs = ", ".join(f"{r['library']} {r['share']:.0%}" for r in prof.get("by_library", [])[:6])
    return (f"gateway profile (py-spy, {prof['samples']} samples, {prof['users']} users, "
            f"{prof.get('gateway_cpu_s', 0):.2f} CPU-s): {libs}")  # fmt: skip
