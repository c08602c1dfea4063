"""Headless Locust runs and their `--json-file` output turned into one run's latency/throughput numbers."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from supportlm.bench.console import BenchError

log = logging.getLogger("supportlm.bench")

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


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
    entries: list[dict[str, Any]],
    *,
    target: str,
    model: str,
    concurrency: int,
    duration_s: float | None = None,
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
