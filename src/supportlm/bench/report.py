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
    for part in (_intro, _targets, _runs, _bandwidth, _tuning, _serving, _plots, _lineage):
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
    return paths
