"""What each llama.cpp knob buys on this machine: a small matrix, one change at a time.

    python -m supportlm.bench.engine_tuning models/gguf/model-q4_k_m.gguf     # prints the table as JSON

The bench stage runs `run_tuning` (bench.tuning.enabled) and writes the table into reports/bench.json
(`tuning`) and reports/bench.md; its `recommended` block is what `serve.llama` in params.yaml should say.

Rows, each against its group's baseline (the first row of the group):

- **quant type** (llama-bench tg, single stream): every GGUF variant at the bench's thread count;
- **decode threads** (llama-bench tg): the primary variant at each of `tuning.threads`. On a shared
  2-core box two threads spin on a barrier while a neighbour's process holds a core: decode collapses;
- **prompt ubatch** (llama-bench pp256): time to ingest a 256-token prompt at each `tuning.ubatch`;
- **server, end to end** (llama-server, one client, greedy, the same prompts each time): the bench
  config; `cache_prompt: false` (what the slot prompt cache buys); each `--spec-type` (n-gram lookup
  speculative decoding: drafts copied from earlier text, no draft model; support replies repeat the
  customer's words and placeholders, so some drafts are accepted).

ms per 100 tokens = 100 000 / decode tokens/s for llama-bench rows; for server rows the whole request
(prompt + decode + HTTP) x 100 / completion tokens, median over the requests.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supportlm.errors import SupportLMError
from supportlm.runtime import check_exit, describe_exit

LOOKUP_LABEL = "--spec-type ngram-cache + training-reply cache"  # the row drafting from the quantize stage's cache
BENCH_TIMEOUT_S = 300  # one llama-bench call; a collapsed 2-thread decode is the slowest case


class TuningError(SupportLMError):
    """llama-bench / llama-server failed during the tuning matrix."""

    exit_code = 5


def _tool(name: str) -> Path:
    from supportlm.llamacpp import tool

    return Path(tool(name))


# ---------------------------------------------------------------- llama-bench


def llama_bench(
    model: Path,
    *,
    threads: int,
    n_prompt: int = 0,
    n_gen: int = 64,
    repeats: int = 3,
    ubatch: int | None = None,
    batch: int | None = None,
    exe: Path | None = None,
) -> dict[str, Any]:
    """One llama-bench test (`-p n_prompt -n n_gen`); returns {tokens_per_s, stddev, ms_per_100_tokens, ...}.

    Exactly one of n_prompt / n_gen should be non-zero (pp or tg test). `exe`: another llama-bench
    binary (build comparisons); default the project's."""
    cmd = [str(exe or _tool("llama-bench")), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
           "-t", str(threads), "-r", str(repeats), "-o", "json"]  # fmt: skip
    if ubatch:
        cmd += ["-ub", str(ubatch)]
    if batch:
        cmd += ["-b", str(batch)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise TuningError(f"llama-bench ran past {BENCH_TIMEOUT_S} s: {' '.join(cmd)}") from None
    if res.returncode != 0:
        check_exit(cmd[0], res.returncode, res.stderr)
        raise TuningError(
            f"llama-bench failed ({describe_exit(res.returncode)}): {' '.join(cmd)}\n{res.stderr[-1500:]}"
        )
    rows = json.loads(res.stdout)
    if len(rows) != 1:
        raise TuningError(f"llama-bench: expected one result row, got {len(rows)}")
    r = rows[0]
    tps = float(r["avg_ts"])
    return {
        "test": f"pp{n_prompt}" if n_prompt else f"tg{n_gen}",
        "threads": int(r["n_threads"]),
        "ubatch": int(r["n_ubatch"]),
        "batch": int(r["n_batch"]),
        "tokens_per_s": round(tps, 2),
        "stddev_tokens_per_s": round(float(r["stddev_ts"]), 2),
        "ms_per_100_tokens": round(100_000 / tps, 1),
        "model_bytes": int(r["model_size"]),
        "model_type": r.get("model_type"),
        "repeats": repeats,
    }


# ---------------------------------------------------------------- llama-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    model: Path, *, threads: int, parallel: int = 1, ctx_size: int = 2048, extra: list[str] | None = None,
    start_timeout_s: float = 120.0, log_path: Path | None = None,
) -> Iterator[str]:  # fmt: skip
    """llama-server on 127.0.0.1:<free port> for the duration of the block; yields its base URL."""
    import httpx2

    port = free_port()
    cmd = [str(_tool("llama-server")), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--alias", "supportlm", "--threads", str(threads), "--ctx-size", str(ctx_size * parallel),
           "--parallel", str(parallel), "--cont-batching", *(extra or [])]  # fmt: skip
    log = log_path.open("w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-1500:] if log_path else ""
                check_exit(cmd[0], proc.returncode, tail)
                raise TuningError(f"llama-server exited ({describe_exit(proc.returncode)}): {' '.join(cmd)}\n{tail}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TuningError(f"llama-server not healthy after {start_timeout_s:g} s: {' '.join(cmd)}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if log_path:
            log.close()  # type: ignore[union-attr]


def sequential_requests(
    url: str, prompts: list[list[dict[str, str]]], *, max_tokens: int = 100, extra: dict[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:  # fmt: skip
    """One client, greedy, each prompt once, straight to llama-server's OpenAI endpoint.

    Returns {ms_per_100_tokens (median per request), p50_ms, tokens_per_s (all tokens / all time),
    requests, completion_tokens, draft_acceptance (speculative runs: accepted / drafted)}."""
    import httpx2

    per100, lat, tokens, drafted, accepted = [], [], 0, 0, 0
    total_s = 0.0
    with httpx2.Client(timeout=timeout_s) as c:
        for messages in prompts:
            body = {"model": "supportlm", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                    "seed": 1, **(extra or {})}  # fmt: skip
            t0 = time.perf_counter()
            r = c.post(f"{url}/v1/chat/completions", json=body)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise TuningError(f"llama-server answered {r.status_code}: {r.text[:300]}")
            data = r.json()
            n = int(data["usage"]["completion_tokens"])
            timings = data.get("timings") or {}
            drafted += int(timings.get("draft_n") or 0)
            accepted += int(timings.get("draft_n_accepted") or 0)
            tokens += n
            total_s += dt
            lat.append(dt * 1000)
            per100.append(dt * 1000 * 100 / max(n, 1))
    return {
        "ms_per_100_tokens": round(statistics.median(per100), 1),
        "p50_ms": round(statistics.median(lat), 1),
        "tokens_per_s": round(tokens / total_s, 2) if total_s else None,
        "requests": len(prompts),
        "completion_tokens": tokens,
        "draft_acceptance": round(accepted / drafted, 3) if drafted else None,
    }


# ---------------------------------------------------------------- the matrix


def _row(group: str, config: str, m: dict[str, Any], base: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    ms, tps = m.get("ms_per_100_tokens"), m.get("tokens_per_s")
    row = {"group": group, "config": config, "ms_per_100_tokens": ms, "tokens_per_s": tps, **extra}
    if base and base.get("ms_per_100_tokens") and ms:
        row["vs_baseline"] = round(base["ms_per_100_tokens"] / ms, 3)  # > 1 = faster than the group's first row
    else:
        row["vs_baseline"] = 1.0 if base is None else None
    return row


def run_tuning(
    models: dict[str, Path],
    primary: str,
    prompts: list[list[dict[str, str]]],
    tuning: Any,
    *,
    threads: int,
    parallel: int,
    ctx_size: int,
    max_tokens: int,
    decode_tokens: int = 64,
    decode_repeats: int = 3,
    decode: dict[str, dict[str, Any]] | None = None,
    log_dir: Path | None = None,
    log: Any = print,
    lookup_cache: Path | None = None,
) -> dict[str, Any]:
    """Run the matrix; returns {"rows": [...], "recommended": {...}, "seconds": s}.

    Args:
        models: variant name -> GGUF path (the "quant type" group).
        primary: the variant the other groups tune.
        prompts: chat prompts for the server rows (`tuning.requests` of them are used).
        tuning: BenchTuningParams (threads, ubatch, spec_types, requests).
        threads / parallel / ctx_size / max_tokens: the bench's serving config (the baselines).
        decode: llama-bench tg results already measured per variant at `threads` (reused, not rerun).
        lookup_cache: the quantize stage's n-gram cache of the training replies: one more server row,
            `--spec-type ngram-cache` drafting from it (--lookup-cache-static).
    """
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    decode = dict(decode or {})

    # 1. quant type: single-stream decode per variant
    for name, path in models.items():
        if name not in decode:
            decode[name] = llama_bench(path, threads=threads, n_gen=decode_tokens, repeats=decode_repeats)
    base = decode.get(primary)
    for name in models:
        rows.append(_row("quant type (llama-bench tg)", f"{name}, {threads} thread(s)", decode[name], base,
                         size_bytes=decode[name]["model_bytes"]))
        log(f"tuning  quant {name:8s} {decode[name]['tokens_per_s']:7.1f} tok/s")

    # 2. decode threads
    by_threads = {threads: decode[primary]}
    for t in tuning.threads:
        if t not in by_threads:
            by_threads[t] = llama_bench(models[primary], threads=t, n_gen=decode_tokens, repeats=decode_repeats)
        log(f"tuning  threads {t}: {by_threads[t]['tokens_per_s']:7.1f} tok/s")
    for t in sorted(by_threads):
        rows.append(_row("decode threads (llama-bench tg)", f"{primary}, {t} thread(s)", by_threads[t],
                         by_threads[threads]))

    # 3. prompt ubatch: pp256 time
    pp: dict[int, dict[str, Any]] = {}
    for ub in tuning.ubatch:
        pp[ub] = llama_bench(models[primary], threads=threads, n_prompt=256, n_gen=0, repeats=decode_repeats,
                             ubatch=ub, batch=max(ub, 512))
        log(f"tuning  ubatch {ub}: {pp[ub]['tokens_per_s']:7.1f} prompt tok/s")
    first_ub = tuning.ubatch[0] if tuning.ubatch else None
    for ub, m in pp.items():
        rows.append(_row("prompt ubatch (llama-bench pp256)", f"{primary}, -ub {ub}", m, pp[first_ub],
                         prompt_256_ms=round(256_000 / m["tokens_per_s"], 1)))

    # 4. server end to end, one client
    sample = prompts[: tuning.requests]
    server: dict[str, dict[str, Any]] = {}

    def serve_rows(label: str, extra_args: list[str], body_extra: dict[str, Any] | None = None) -> None:
        lp = (log_dir / f"tuning-{label.replace(' ', '_')}.log") if log_dir else None
        with llama_server(models[primary], threads=threads, parallel=parallel, ctx_size=ctx_size,
                          extra=extra_args, log_path=lp) as url:
            sequential_requests(url, sample[:1], max_tokens=8)  # warm up (page cache, first graph)
            server[label] = sequential_requests(url, sample, max_tokens=max_tokens)
            log(f"tuning  server {label}: {server[label]['ms_per_100_tokens']:7.1f} ms/100 tokens")
            if body_extra is not None:
                nocache = f"{label}, cache_prompt false"
                server[nocache] = sequential_requests(url, sample, max_tokens=max_tokens, extra=body_extra)
                log(f"tuning  server {nocache}: {server[nocache]['ms_per_100_tokens']:7.1f} ms/100 tokens")

    serve_rows("bench config", [], {"cache_prompt": False})
    specs = [(f"--spec-type {spec}", ["--spec-type", spec]) for spec in tuning.spec_types]
    if lookup_cache is not None:
        specs.append((LOOKUP_LABEL, ["--spec-type", "ngram-cache", "--lookup-cache-static", str(lookup_cache)]))
    for label, args in specs:
        try:
            serve_rows(label, args)
            server[label]["args"] = args
        except TuningError as exc:  # an unknown/unsupported type: recorded, not fatal
            server[label] = {"error": str(exc).splitlines()[0][:200]}
            log(f"tuning  server {label}: failed ({exc})")
    for label, m in server.items():
        rows.append(_row("server, 1 client (llama-server)", f"{primary}, {label}", m, server["bench config"],
                         p50_ms=m.get("p50_ms"), draft_acceptance=m.get("draft_acceptance"),
                         error=m.get("error")))

    return {
        "rows": rows,
        "recommended": recommend(by_threads, pp, server, threads, decode),
        "primary": primary,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def recommend(
    by_threads: dict[int, dict[str, Any]],
    pp: dict[int, dict[str, Any]],
    server: dict[str, dict[str, Any]],
    threads: int,
    decode: dict[str, dict[str, Any]],
    min_gain: float = 1.05,
    min_acceptance: float = 0.1,
) -> dict[str, Any]:
    """The serve.llama settings the matrix supports: a change is taken only if it is >= 5% faster (and a
    speculative mode only if >= 10% of its drafted tokens were accepted)."""
    best_t = max(by_threads, key=lambda t: by_threads[t]["tokens_per_s"])
    if by_threads[best_t]["tokens_per_s"] < min_gain * by_threads[threads]["tokens_per_s"]:
        best_t = threads
    best_ub = max(pp, key=lambda u: pp[u]["tokens_per_s"]) if pp else None
    extra: list[str] = []
    base_ms = (server.get("bench config") or {}).get("ms_per_100_tokens")
    # a speculative mode counts only if its drafts are accepted: a "gain" with ~0% acceptance is noise
    specs = {k: v for k, v in server.items() if k.startswith("--spec-type") and v.get("ms_per_100_tokens")
             and (v.get("draft_acceptance") or 0) >= min_acceptance}  # fmt: skip
    if specs and base_ms:
        label = min(specs, key=lambda k: specs[k]["ms_per_100_tokens"])
        if base_ms / specs[label]["ms_per_100_tokens"] >= min_gain:
            extra = list(specs[label].get("args") or label.split())
    fastest = max(decode, key=lambda k: decode[k]["tokens_per_s"]) if decode else None
    out: dict[str, Any] = {"threads": best_t, "extra_args": extra, "fastest_variant": fastest}
    if best_ub:
        out["ubatch_size"] = best_ub
        out["batch_size"] = max(best_ub, 512)
    return out


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use
    import argparse

    from supportlm.config import BenchTuningParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    prompts = [[{"role": "user", "content": "My parcel arrived damaged. How do I return it and get a refund?"}]] * 4
    out = run_tuning({"model": args.model}, "model", prompts, BenchTuningParams(requests=4), threads=args.threads,
                     parallel=1, ctx_size=2048, max_tokens=100, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
