"""Fairness between API keys, measured through the real gateway and llama-server.

One abusive key sends long streamed requests at full speed from many connections (ignoring Retry-After),
from its own process at lower CPU priority so that on a 2-core box the load generator's Python is not
billed to the gateway; one polite key sends one short non-streamed request per second. Both start
together; the abuser's tokens/s is what it received inside the window (open streams are cut at its end).
Phases:

| stack | phase | what it shows |
|---|---|---|
| fair (the configured `serve.limits`) | polite alone | the polite key's solo latency (the reference) |
| fair | abuser alone | what one key gets when nobody else wants the engine (work-conserving) |
| fair | abuser + polite | the polite key's success rate and p95 under the flood |
| unfair (the old gateway: same request rate, no per-key caps or token budget) | abuser alone | the engine's full throughput for one key |
| unfair | abuser + polite | the same flood without the defence |

Goals (reports/fairness.json `targets`): under the flood the polite key gets no 429/503 at all and its p95
stays within `p95_ratio_target` x its solo p95; the abuser alone keeps >= 90% of the unfair stack's
tokens/s. Written to reports/fairness.json, fairness.md and plots/fairness/latency.png.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from supportlm.bench.console import say
from supportlm.bench.inputs import build_prompts, resolve_primary, resolve_variants
from supportlm.bench.stack import Stack, bench_settings, serving_stack, warm_up
from supportlm.bench.targets import hardware_info
from supportlm.config import Params
from supportlm.paths import Paths
from supportlm.render import Document, fmt


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _request(client: Any, url: str, key: str, messages: list[dict[str, str]], max_tokens: int) -> dict:
    """One non-streamed request (the polite key): status, seconds, completion tokens."""
    t0 = time.perf_counter()
    try:
        r = await client.post(
            f"{url}/v1/chat/completions",
            json={"messages": messages, "max_tokens": max_tokens},
            headers={"Authorization": f"Bearer {key}"},
        )
        status = r.status_code
        usage = r.json().get("usage", {}) if status == 200 else {}
    except Exception as exc:  # noqa: BLE001 - a transport failure is a result here, not a crash
        status, usage = type(exc).__name__, {}
    return {
        "status": status,
        "s": time.perf_counter() - t0,
        "tokens": int(usage.get("completion_tokens") or 0),
    }


async def _streamed(client: Any, url: str, key: str, messages: list[dict[str, str]], max_tokens: int,
                    row: dict) -> None:  # fmt: skip
    """One streamed request (the abuser), filling `row` as it goes so a request cut at the end of the
    window still counts the tokens it received inside it."""
    t0 = time.perf_counter()
    row.update(status="sent", s=None, tokens=0)
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions",
            json={"messages": messages, "max_tokens": max_tokens, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as r:  # fmt: skip
            row["status"] = r.status_code
            if r.status_code != 200:
                await r.aread()
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    row["tokens"] += 1  # llama-server streams one token per chunk
            row["s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a transport failure is a result here, not a crash
        row["status"] = type(exc).__name__


async def _flood(url: str, key: str, prompts: list, p: Any, start_at: float, stop_at: float) -> list[dict]:
    """`p.abuser_clients` connections sending streamed `abuser_max_tokens` requests back to back until
    `stop_at` (time.monotonic, shared by every process on Linux), then every open stream is cut."""
    import httpx2

    rows: list[dict] = []
    limits = httpx2.Limits(max_connections=p.abuser_clients, max_keepalive_connections=p.abuser_clients)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    async with httpx2.AsyncClient(timeout=p.request_timeout_s, limits=limits) as client:

        async def connection(i: int) -> None:
            while time.monotonic() < stop_at:
                row: dict = {}
                rows.append(row)
                await _streamed(client, url, key, prompts[i % len(prompts)], p.abuser_max_tokens, row)
                if row["status"] != 200:
                    # Retry-After is ignored; a refused request is retried after abuser_retry_s per
                    # connection (a zero-delay spin would measure this 2-core box's client, not the gateway)
                    await asyncio.sleep(p.abuser_retry_s)

        tasks = [asyncio.ensure_future(connection(i)) for i in range(p.abuser_clients)]
        await asyncio.wait(tasks, timeout=max(0.0, stop_at - time.monotonic()))
        for t in tasks:
            t.cancel()  # cuts the open streams: the gateway cancels them upstream
        await asyncio.gather(*tasks, return_exceptions=True)
    for row in rows:
        if row.get("status") == "sent":
            row["status"] = "cut"  # still queued or streaming at the end of the window
    return rows


def _flood_process(url: str, key: str, prompts: list, p: dict, start_at: float, stop_at: float) -> list[dict]:
    """The flood in its own process at lower CPU priority: on a 2-core box the load generator's own
    Python must not be billed to the gateway (what the gateway spends refusing the flood still is)."""
    import os
    from types import SimpleNamespace

    os.nice(FLOOD_NICE)
    return asyncio.run(_flood(url, key, prompts, SimpleNamespace(**p), start_at, stop_at))


FLOOD_NICE = 10


async def _polite(url: str, key: str, prompts: list, p: Any, start_at: float, stop_at: float) -> list[dict]:
    """`p.polite_rps` short non-streamed requests per second, on schedule whatever the answers take."""
    import httpx2

    async with httpx2.AsyncClient(timeout=p.request_timeout_s) as client:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        tasks, i = [], 0
        while time.monotonic() < stop_at:
            msgs = prompts[-1 - i % len(prompts)]
            tasks.append(asyncio.ensure_future(_request(client, url, key, msgs, p.polite_max_tokens)))
            i += 1
            await asyncio.sleep(max(0.0, start_at + i / p.polite_rps - time.monotonic()))
        return list(await asyncio.gather(*tasks))


def _summary(rows: list[dict], seconds: float) -> dict[str, Any]:
    """Statuses, latency of completed 200s, completion tokens/s. A streamed request still running at the
    end of the window is a 200 with the tokens it received inside it, so tokens/s is the window's own
    rate (512-token requests in a 30 s window would otherwise make it a boundary artefact); one still
    waiting for its answer is `cut` and counts neither as served nor as refused."""
    statuses = Counter(str(r["status"]) for r in rows)
    ok = [r for r in rows if r["status"] == 200]
    lat = [r["s"] * 1000 for r in ok if r.get("s") is not None]
    answered = len(rows) - statuses.get("cut", 0)
    return {
        "requests": len(rows),
        "ok": len(ok),
        "refused": statuses.get("429", 0) + statuses.get("503", 0),
        "success_rate": round(len(ok) / answered, 4) if answered else None,
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": round(percentile(lat, 50), 1) if lat else None,
        "p95_ms": round(percentile(lat, 95), 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "tokens_per_s": round(sum(r["tokens"] for r in ok) / seconds, 1),
    }


def _phase(stack: Stack, keys: dict[str, str], prompts: list, p: Any, abuser: bool, polite: bool,
           seconds: float) -> dict:  # fmt: skip
    """Run the clients for `seconds` from a common start; per key: _summary()."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    lead = 3.0 if abuser else 0.2  # the flood process imports httpx before the common start
    start_at = time.monotonic() + lead
    stop_at = start_at + seconds
    out: dict[str, Any] = {"wall_s": seconds}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        flood = (
            pool.submit(
                _flood_process, stack.gateway_url, keys["abuser"], prompts, p.model_dump(), start_at, stop_at
            )
            if abuser
            else None
        )
        if polite:
            rows = asyncio.run(_polite(stack.gateway_url, keys["polite"], prompts, p, start_at, stop_at))
            out["polite"] = _summary(rows, seconds)
        if flood is not None:
            out["abuser"] = _summary(flood.result(), seconds)
    return out


def _stack_settings(serve_p: Any, model: Path, threads: int | None, slot_dir: Path, keys: dict[str, str],
                    fair: bool) -> Any:  # fmt: skip
    """The bench's engine settings with two keys and `serve.limits` exactly as configured (fair), or the
    gateway before the defence (unfair): the same request rate per key and refusal delay, but no per-key
    slot or queue caps and no token budget. Both refuse the flood's excess requests at the same rate, so the difference
    between them is the per-key caps, not the cost of refusing."""
    limits = {**serve_p.limits.model_dump(), "backend": "memory"}
    if not fair:
        limits |= {"per_key_concurrency": None, "per_key_queue": serve_p.limits.max_queue, "fair_window_s": 0.0,
                   "shared_concurrency": None, "token_rate_per_s": None}  # fmt: skip
    keys_spec = ",".join(f"{name}:{key}" for name, key in keys.items())
    return bench_settings(serve_p, model, threads=threads, slot_dir=slot_dir, max_level=0, limits=limits,
                          api_keys=keys_spec)  # fmt: skip


def run_fairness(params: Params, paths: Paths) -> dict[str, Any]:
    """The fairness stage: reads params.fairness, params.serve and bench.{primary,prompts,seed,threads}."""
    import secrets

    from supportlm.io import write_json
    from supportlm.lineage import git_sha, params_hash
    from supportlm.serve.settings import default_threads

    bench_p, p, serve_p = params.bench, params.fairness, params.serve
    bench_p = resolve_primary(bench_p, paths.gguf)  # `served`: the quantize stage's choice
    reports = paths.reports
    variants, source = resolve_variants(bench_p, paths.gguf)
    model = variants[bench_p.primary].path
    prompts = build_prompts(paths.formatted / "test.jsonl", bench_p.prompts, bench_p.seed)
    threads = bench_p.threads or serve_p.llama.threads or default_threads()
    keys = {
        "abuser": "sk-abuser-" + secrets.token_urlsafe(16),
        "polite": "sk-polite-" + secrets.token_urlsafe(16),
    }
    load_before = __import__("os").getloadavg()
    t_start = time.perf_counter()
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="supportlm-fairness-") as tmp:
        work = Path(tmp)
        for stack_name, fair in (("fair", True), ("unfair", False)):
            (work / stack_name).mkdir()
            settings = _stack_settings(serve_p, model, threads, work / stack_name, keys, fair)
            with serving_stack(settings, work / stack_name) as stack:
                stack.api_key = keys["polite"]
                warm_up(stack, prompts, 4, p.polite_max_tokens)
                plan = [("polite_alone", False, True)] if fair else []
                plan += [("abuser_alone", True, False), ("abuser_and_polite", True, True)]
                for phase, abuser, polite in plan:
                    seconds = p.seconds if polite else p.short_seconds
                    say(f"fairness: {stack_name} / {phase} ({seconds:g} s)")
                    phases[f"{stack_name}/{phase}"] = _phase(stack, keys, prompts, p, abuser, polite, seconds)
                    say(
                        f"  {json.dumps({k: v for k, v in phases[f'{stack_name}/{phase}'].items() if k != 'wall_s'})}"
                    )
                    # let the engine finish what the flood left running, and let every key's fair window pass
                    time.sleep(2 + settings.limits.fair_window_s)
    result = summarize(phases, p, serve_p)
    result |= {
        "model": bench_p.primary, "model_source": source, "seconds": round(time.perf_counter() - t_start, 1),
        "hardware": hardware_info(threads, serve_p.llama.parallel, load_before),
        "params_hash": params_hash(p), "git_sha": git_sha(paths.root),
    }  # fmt: skip
    result["plots"] = [str(x) for x in plot(result, reports / "plots" / "fairness")]
    write_json(reports / "fairness.json", result)
    (reports / "fairness.md").write_text(render_markdown(result), encoding="utf-8")
    return result


def summarize(phases: dict[str, dict[str, Any]], p: Any, serve_p: Any) -> dict[str, Any]:
    """The phases plus the three targets."""
    solo = phases["fair/polite_alone"]["polite"]
    under = phases["fair/abuser_and_polite"]["polite"]
    capped = phases["fair/abuser_alone"]["abuser"]["tokens_per_s"]
    full = phases["unfair/abuser_alone"]["abuser"]["tokens_per_s"]
    refused = under["refused"]
    ratio = under["p95_ms"] / solo["p95_ms"] if under["p95_ms"] and solo["p95_ms"] else None
    share = capped / full if full else None
    limits = serve_p.limits
    return {
        "phases": phases,
        "limits": {
            k: getattr(limits, k)
            for k in (
                "max_concurrency",
                "max_queue",
                "per_key_concurrency",
                "shared_concurrency",
                "per_key_queue",
                "fair_window_s",
                "rate_per_s",
                "burst",
                "token_rate_per_s",
                "token_burst",
                "refusal_delay_s",
            )
        },
        "load": {
            "abuser_clients": p.abuser_clients,
            "abuser_max_tokens": p.abuser_max_tokens,
            "abuser_retry_s": p.abuser_retry_s,
            "polite_rps": p.polite_rps,
            "polite_max_tokens": p.polite_max_tokens,
            "seconds": p.seconds,
            "short_seconds": p.short_seconds,
        },
        "polite_p95_ratio": round(ratio, 2) if ratio else None,
        "abuser_alone_share": round(share, 3) if share else None,
        "targets": [
            {
                "name": "polite key refused (429/503) under the flood",
                "goal": "0",
                "measured": refused,
                "met": refused == 0,
            },
            {
                "name": "polite p95 under the flood / solo p95",
                "goal": f"<= {p.p95_ratio_target:g}x",
                "measured": round(ratio, 2) if ratio else None,
                "met": ratio is not None and ratio <= p.p95_ratio_target,
            },
            {
                "name": "one key alone: tokens/s vs no per-key caps",
                "goal": ">= 90%",
                "measured": round(share, 3) if share else None,
                "met": share is not None and share >= 0.9,
            },
        ],
    }


def render_markdown(r: dict[str, Any]) -> str:
    """fairness.md: the load and limits under test, the targets, every phase per key, the plot."""
    doc = Document()
    doc.h(1, "Fairness between API keys")
    doc.p(_setup_text(r))
    doc.p(
        f"Limits under test (`serve.limits`): {', '.join(f'{k}={v}' for k, v in r['limits'].items())}. "
        "The *unfair* stack is the gateway before the defence: the same request rate per key, no per-key "
        "slot or queue caps, no token budget."
    )
    targets = [[t["name"], t["goal"], t["measured"], t["met"]] for t in r["targets"]]
    doc.table(["target", "goal", "measured", "met"], targets, align_right=[2])
    doc.table(["phase", "key", "requests", "ok", "statuses", "p50 ms", "p95 ms", "tokens/s"], _phase_rows(r),
              align_right=[2, 3, 5, 6, 7])  # fmt: skip
    for x in r.get("plots", []):
        doc.image(f"plots/fairness/{Path(x).name}", Path(x).stem)
    return doc.to_md()


def _setup_text(r: dict[str, Any]) -> str:
    load, hw = r["load"], r["hardware"]
    retry, rps = fmt(load["abuser_retry_s"], "g"), fmt(load["polite_rps"], "g")
    return (
        f"One abusive key ({load['abuser_clients']} connections at full speed, {load['abuser_max_tokens']}"
        f"-token requests; Retry-After ignored, a refusal retried after {retry} s) and one polite key "
        f"({rps} request/s, {load['polite_max_tokens']} tokens), {fmt(load['seconds'], 'g')} s for the "
        f"polite key's phases and {fmt(load['short_seconds'], 'g')} s for the others, through the gateway "
        f"and llama-server ({r['model']}). CPU: {hw['cpu']} ({hw['cores']} cores; {', '.join(hw['isa'])}). "
        "Ratios are measured within this one run."
    )


def _phase_rows(r: dict[str, Any]) -> list[list[Any]]:
    return [
        [phase, who, d["requests"], d["ok"], ", ".join(f"{s}: {n}" for s, n in d["statuses"].items()),
         fmt(d["p50_ms"], ",.1f"), fmt(d["p95_ms"], ",.1f"), fmt(d["tokens_per_s"], ",.1f")]
        for phase, data in r["phases"].items()
        for who in ("polite", "abuser")
        if (d := data.get(who))
    ]  # fmt: skip


def plot(r: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names, p50, p95 = [], [], []
    for phase, data in r["phases"].items():
        if "polite" in data and data["polite"]["p95_ms"] is not None:
            names.append(phase.replace("/", "\n"))
            p50.append(data["polite"]["p50_ms"])
            p95.append(data["polite"]["p95_ms"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p95, 0.4, label="p95")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("polite key latency (ms)")
    ax.set_title("Polite key: alone, under a flood with per-key caps, and without them")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
