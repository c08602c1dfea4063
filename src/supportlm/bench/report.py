"""reports/bench.md (a render.Document) and reports/plots/bench/*.png from bench.json (nothing measured)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from supportlm.render import Code, Document, Strong, fmt, pct

log = logging.getLogger("supportlm.bench")


def render_markdown(r: dict[str, Any], reports: Path) -> str:
    """bench.md: setup, targets, runs, bandwidth bound, engine tuning, serving config, plots, lineage."""
    doc = Document()
    for part in (_intro, _targets, _runs, _fixed, _bandwidth, _tuning, _serving, _plots, _lineage):
        part(doc, r)
    return doc.to_md(reports)


def _intro(doc: Document, r: dict[str, Any]) -> None:
    hw, s = r["hardware"], r["setup"]
    doc.h(1, "Serving benchmark")
    doc.p(
        f"Model `{r['primary']}` ({r['model_source']}); base model `{r.get('base_model')}`. "
        f"{hw['cores']} CPU cores ({hw['cpu']}), {hw['memory_gb']} GB RAM, no GPU; llama.cpp threads "
        f"{hw['llama_threads']}, {hw['llama_parallel']} parallel slots. Load average before/after: "
        f"{fmt(hw['loadavg_before'][0], '.2f')} / {fmt(hw['loadavg_after'][0], '.2f')} ({hw['note']})."
    )
    doc.p(
        f"Locust, headless: {s['users']}; no think time (closed loop: concurrency = users); "
        f"{fmt(s['level_seconds'], 'g')} s per level, {s['max_new_tokens']} max new tokens, temperature "
        f"{fmt(s['temperature'], 'g')}, {s['prompts']} prompts from the test split. "
        "*engine* = llama-server's own OpenAI endpoint (no gateway)."
    )


def _targets(doc: Document, r: dict[str, Any]) -> None:
    doc.h(2, "Targets")
    rows = [[t["name"], t["goal"], t["display"], "met" if t["met"] else Strong("missed"), t["note"]]
            for t in r["targets"]]  # fmt: skip
    doc.table(["target", "goal", "measured", "", "note"], rows, align_right=[2])


_RUN_COLUMNS = (  # (header, key) of the ms columns, all printed as whole milliseconds
    ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"), ("p99 ms", "p99_ms"), ("mean ms", "mean_ms"),
    ("TTFT p50 ms", "ttft_ms"), ("ms/100 tok p50", "ms_per_100_tokens"),
    ("decode ms/100 tok p50", "decode_ms_per_100_tokens"),
)  # fmt: skip


def _runs(doc: Document, r: dict[str, Any]) -> None:
    doc.h(2, "Runs")
    header = ["model", "target", "users", "req", "req/s", "tok/s", *(h for h, _ in _RUN_COLUMNS), "errors"]
    rows = [[x["model"], x["target"], x["concurrency"], x["requests"], fmt(x["rps"], ".2f"),
             fmt(x["tokens_per_s"], ",.1f"), *(fmt(x.get(k), ",.0f") for _, k in _RUN_COLUMNS),
             pct(x["error_rate"])] for x in r["runs"]]  # fmt: skip
    doc.table(header, rows, align_right=range(2, len(header)))
    o = r.get("gateway_overhead")
    if o and o.get("pairs"):
        gateway, engine = fmt(o["gateway_median_ms"], ",.0f"), fmt(o["engine_median_ms"], ",.0f")
        doc.p(
            f"Gateway overhead, paired: {o['pairs']} pairs ({o['failed_pairs']} failed), median latency "
            f"gateway {gateway} ms vs engine {engine} ms, identical replies in "
            f"{o['pairs_with_equal_tokens']}/{o['pairs']} pairs; per-pair ratio p10-p90 "
            f"{o['ratio_p10_p90']}. Method: {o['method']}."
        )
    failed = [x for x in r["runs"] if x.get("errors")]
    if failed:
        causes = (
            f"{x['model']} {x['target']} {x['concurrency']} user{'s' if x['concurrency'] > 1 else ''}: "
            + ", ".join(f"{k} x{v}" for k, v in x["errors"].items())
            for x in failed
        )
        doc.p("Failed requests by cause: " + "; ".join(causes) + ".")
    doc.p(
        "Latency percentiles come from Locust's histogram (100 ms buckets above 1 s); means are exact. "
        "ms/100 tok = each request's latency x 100 / its completion tokens (prompt processing included); "
        "decode ms/100 tok = streamed requests' time after the first token x 100 / (tokens - 1)."
    )


def _fixed(doc: Document, r: dict[str, Any]) -> None:
    """Fixed work: the gateway's cost per level (tokens/s ratio, latency, CPU per process), its profile."""
    f = r.get("fixed")
    if not f:
        return
    doc.h(2, "Fixed work: what the gateway costs")
    if f.get("skipped"):
        doc.p(f"Not measured: {f['skipped']}.")
        return
    s = f["setup"]
    doc.p(
        f"The same {s['prompts']} prompts, every reply exactly {s['max_tokens']} tokens (`ignore_eos`, greedy), "
        f"{s['requests_per_user']} requests per user per round, half streamed; each level runs {s['pairs']} "
        "round pairs, engine and gateway back to back in alternating order, slots erased before each round. "
        "Ratios are per pair (geometric mean, bootstrap 95% interval over pairs; latency pairs are the same "
        "user's same request in the same pair). CPU: CPU-seconds each process spent in the rounds, per 100 generated tokens "
        "(psutil); *gateway share* = gateway / (gateway + llama-server) in the gateway rounds."
    )
    rows = []
    for users, lv in sorted(f["levels"].items(), key=lambda kv: int(kv[0])):
        tr, lr = lv["tokens_per_s_ratio"], lv["latency_ratio"]
        for t in ("engine", "gateway"):
            x = lv[t]
            cpu = x["cpu_ms_per_100_tokens"]
            iv = x.get("ms_per_100_tokens_interval")
            rows.append([
                users, t, fmt(x["tokens_per_s_median"], ",.1f"), fmt(x["ms_per_100_tokens_p50"], ",.0f"),
                f"{fmt(x['ms_per_100_tokens_mean'], ',.0f')}" + (f" [{iv[0]:,.0f}, {iv[1]:,.0f}]" if iv else ""),
                fmt(cpu.get("gateway"), ",.1f"), fmt(cpu.get("engine"), ",.0f"), fmt(cpu.get("client"), ",.1f"),
                x["short_replies"] + x["errors"],
                "" if t == "engine" else f"{fmt(tr['ratio'], '.3f')} [{fmt(tr['low'], '.3f')}, {fmt(tr['high'], '.3f')}]",
                "" if t == "engine" else f"{fmt(lr['ratio'], '.3f')} [{fmt(lr['low'], '.3f')}, {fmt(lr['high'], '.3f')}]",
                "" if t == "engine" else pct(lv["gateway_cpu_share"]),
            ])  # fmt: skip
    doc.table(
        ["users", "target", "tok/s (median round)", "ms/100 tok p50", "ms/100 tok mean [95%]",
         "CPU ms/100 tok: gateway", "llama-server", "client", "short or failed", "tok/s vs engine",
         "latency vs engine", "gateway share"],
        rows, align_right=range(2, 12),
    )  # fmt: skip
    one = f["levels"].get("1")
    if one and one["engine"].get("decode_ms_per_token_p50") and one["gateway"].get("decode_ms_per_token_p50"):
        e, g = one["engine"], one["gateway"]
        bench = (r.get("decode") or {}).get(r.get("primary") or "", {}).get("tokens_per_s")
        pure = f"; llama-bench's pure decode in this run: {1000 / bench:.2f} ms per token" if bench else ""
        doc.p(
            f"1 user, streamed requests: first token p50 {fmt(e['ttft_ms_p50'], ',.0f')} ms at the engine, "
            f"{fmt(g['ttft_ms_p50'], ',.0f')} ms through the gateway; then {e['decode_ms_per_token_p50']:.2f} ms "
            f"per token at the engine, {g['decode_ms_per_token_p50']:.2f} through the gateway{pure}."
        )
    prof = f.get("profile")
    if not prof:
        return
    doc.h(3, "Where the gateway's CPU goes")
    if prof.get("skipped"):
        doc.p(f"Not profiled: {prof['skipped']}.")
        return
    doc.p(
        f"{prof['tool']} at {prof['rate_hz']} Hz over one more gateway round at {prof['users']} users "
        f"({prof['tokens']} tokens, {fmt(prof['wall_s'], '.1f')} s, the gateway spent "
        f"{fmt(prof.get('gateway_cpu_s'), '.2f')} CPU-s): {prof['samples']} samples of running Python stacks. "
        f"{prof['note']}. By the library of the innermost frame (*event loop* = asyncio or uvloop selecting, "
        "reading and writing sockets):"
    )
    doc.table(["library", "samples", "share"],
              [[x["library"], x["samples"], pct(x["share"])] for x in prof["by_library"][:10]], align_right=[1, 2])  # fmt: skip
    doc.table(["function (innermost frame)", "samples", "share"],
              [[Code(x["function"]), x["samples"], pct(x["share"])] for x in prof["self"][:10]], align_right=[1, 2])  # fmt: skip


def _bandwidth(doc: Document, r: dict[str, Any]) -> None:
    bw = r["bandwidth"]
    copy = (
        f" For reference, a 1-thread copy: {fmt(bw['copy']['gb_s'], '.1f')} GB/s read+write."
        if bw.get("copy")
        else ""
    )
    doc.h(2, "Memory-bandwidth bound")
    doc.p(
        f"Read bandwidth {fmt(bw['gb_s'], '.1f')} GB/s ({bw['method']}). Bound = read bandwidth / GGUF bytes "
        f"(decoding reads every weight once per token).{copy}"
    )
    rows = [[b["model"], fmt(b["size_bytes"] / 1e6, ",.1f"), fmt(b["bound_tokens_per_s"], ",.0f"),
             fmt(b["decode_tokens_per_s"], ",.1f"), pct(b["fraction_of_bound"], 0)]
            for b in bw["models"]]  # fmt: skip
    doc.table(["model", "size MB", "bound tok/s", "decode tok/s (llama-bench)", "fraction"], rows,
              align_right=[1, 2, 3, 4])  # fmt: skip


def _tuning_row(row: dict[str, Any]) -> list[str]:
    vs = row.get("vs_baseline")
    return [row["group"], row["config"], fmt(row["ms_per_100_tokens"], ",.0f"),
            fmt(row["tokens_per_s"], ",.1f"), "–" if vs is None else f"{vs:.2f}x", _tuning_note(row)]  # fmt: skip


def _tuning_note(row: dict[str, Any]) -> str:
    note = []
    if row.get("prompt_256_ms") is not None:
        note.append(f"256-token prompt {fmt(row['prompt_256_ms'], ',.0f')} ms")
    if row.get("draft_acceptance") is not None:
        note.append(f"draft acceptance {pct(row['draft_acceptance'], 0)}")
    if row.get("error"):
        note.append(f"failed: {row['error']}")
    return "; ".join(note)


def _tuning(doc: Document, r: dict[str, Any]) -> None:
    t = r.get("tuning")
    if not t:
        return
    doc.h(2, f"Engine tuning ({fmt(t['seconds'], '.0f')} s)")
    doc.p("One change at a time; *vs first* = the group's first row's ms / this row's ms (> 1 = faster).")
    rows = [_tuning_row(row) for row in t["rows"]]
    doc.table(
        ["group", "config", "ms / 100 tokens", "tok/s", "vs first", "note"], rows, align_right=[2, 3, 4]
    )
    rec = t["recommended"]
    batch = (
        f", `batch_size: {rec['batch_size']}`, `ubatch_size: {rec['ubatch_size']}`"
        if rec.get("ubatch_size")
        else ""
    )
    doc.p(
        f"Recommended `serve.llama` (changes >= 5% faster only): `threads: {rec['threads']}`{batch}, "
        f"`extra_args: {json.dumps(rec['extra_args'])}`; fastest decode: `{rec['fastest_variant']}`."
    )


def _serving(doc: Document, r: dict[str, Any]) -> None:
    if r.get("serving"):
        doc.h(2, "Serving config under test")
        doc.table(["setting", "value"], [[k, Code(str(v))] for k, v in r["serving"].items()])


def _plots(doc: Document, r: dict[str, Any]) -> None:
    if r.get("plots"):
        doc.h(2, "Plots")
        for pth in r["plots"]:
            doc.image(Path(pth).resolve(), Path(pth).stem)  # to_md links it relative to reports/


def _lineage(doc: Document, r: dict[str, Any]) -> None:
    doc.h(2, "Lineage")
    doc.bullets([
        f"params hash `{r['params_hash']}` (bench + serve blocks)",
        f"base model `{r.get('base_model')}`",
        f"git `{r['git_sha']}`",
        f"stage wall time {fmt(r['seconds'], ',.0f')} s",
    ])  # fmt: skip


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
        axes[1].plot(
            cs, [x["ms_per_100_tokens_p95"] for x in xs], "s--", color=colors[t], alpha=0.7, label=f"{t} p95"
        )
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
    axes[0].bar(
        models, [by_model[m].get(c_lo, {}).get("ms_per_100_tokens") or 0 for m in models], color="#1f77b4"
    )
    axes[0].set(title=f"gateway, {c_lo} user: ms / 100 tokens (p50)", ylabel="ms")
    axes[1].bar(models, [by_model[m].get(c_hi, {}).get("tokens_per_s") or 0 for m in models], color="#2ca02c")
    axes[1].set(title=f"gateway, {c_hi} users: tokens/s", ylabel="tokens/s")
    bws = r["bandwidth"]["models"]
    names = [b["model"] for b in bws]
    axes[2].bar(names, [b["bound_tokens_per_s"] for b in bws], color="#cccccc", label="bandwidth bound")
    axes[2].bar(
        names,
        [b["decode_tokens_per_s"] or 0 for b in bws],
        color="#d62728",
        width=0.5,
        label="measured decode (llama-bench)",
    )
    axes[2].set(title="single-stream decode vs bound", ylabel="tokens/s")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    paths.append(out_dir / "variants.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    fixed = (r.get("fixed") or {}).get("levels")
    if fixed:
        paths.append(_plot_fixed(plt, r, out_dir / "fixed_work.png"))
    return paths


def _plot_fixed(plt: Any, r: dict[str, Any], out: Path) -> Path:
    """fixed_work.png: each round pair's gateway/engine tokens/s ratio per level, with the interval and the
    goal; and the CPU each process spent per 100 tokens."""
    f = r["fixed"]
    levels = sorted(f["levels"], key=int)
    goal = (r.get("setup") or {}).get("gateway_throughput_ratio_goal")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    by_level: dict[str, list[float]] = {}
    for users in levels:
        rounds = [x for x in f["rounds"] if str(x["users"]) == users]
        eng = [x for x in rounds if x["target"] == "engine"]
        gw = [x for x in rounds if x["target"] == "gateway"]
        by_level[users] = [g["tokens_per_s"] / e["tokens_per_s"] for e, g in zip(eng, gw, strict=False)
                           if e["tokens_per_s"] and g["tokens_per_s"]]  # fmt: skip
    for i, users in enumerate(levels):
        ys = by_level[users]
        axes[0].scatter([i] * len(ys), ys, color="#1f77b4", alpha=0.6, s=18, label="round pairs" if i == 0 else None)
        tr = f["levels"][users]["tokens_per_s_ratio"]
        if tr["ratio"] is not None:
            axes[0].errorbar([i + 0.15], [tr["ratio"]], yerr=[[tr["ratio"] - tr["low"]], [tr["high"] - tr["ratio"]]],
                             fmt="o", color="black", capsize=4, label="geometric mean, 95%" if i == 0 else None)  # fmt: skip
    if goal:
        axes[0].axhline(goal, color="green", ls=":", label=f"goal >= {goal:g}")
    axes[0].axhline(1.0, color="#999999", lw=0.8)
    axes[0].set_xticks(range(len(levels)))
    axes[0].set_xticklabels([f"{u} user{'s' if int(u) > 1 else ''}" for u in levels])
    axes[0].set(title="gateway / engine tokens/s, same work", ylabel="ratio")
    axes[0].legend(fontsize=8)
    width = 0.38
    for j, t in enumerate(("engine", "gateway")):
        cpu = [f["levels"][u][t]["cpu_ms_per_100_tokens"] for u in levels]
        xs = [i + (j - 0.5) * width for i in range(len(levels))]
        bottom = [0.0] * len(levels)
        for proc, color in (("engine", "#ff7f0e"), ("gateway", "#1f77b4"), ("client", "#7f7f7f")):
            vals = [c.get(proc, 0.0) for c in cpu]
            axes[1].bar(xs, vals, width, bottom=bottom, color=color, alpha=0.9 if t == "gateway" else 0.5,
                        label=f"{proc}" if j == 1 else None)  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[1].set_xticks(range(len(levels)))
    axes[1].set_xticklabels([f"{u}: engine | gateway" for u in levels])
    axes[1].set(title="CPU ms per 100 tokens, by process (left: engine rounds)", ylabel="CPU ms / 100 tokens")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
