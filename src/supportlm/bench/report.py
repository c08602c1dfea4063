"""reports/bench.md and reports/plots/bench/*.png from bench.json (nothing measured here)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("supportlm.bench")


def fmt_number(x: Any, fmt: str = ",.1f") -> str:
    return "–" if x is None else format(x, fmt)


def render_markdown(r: dict[str, Any], reports: Path) -> str:
    hw, s = r["hardware"], r["setup"]
    lines = [
        "# Serving benchmark",
        "",
        (
            f"Model `{r['primary']}` ({r['model_source']}); base model `{r.get('base_model')}`. "
            f"{hw['cores']} CPU cores ({hw['cpu']}), {hw['memory_gb']} GB RAM, no GPU; llama.cpp threads "
            f"{hw['llama_threads']}, {hw['llama_parallel']} parallel slots. Load average before/after: "
            f"{hw['loadavg_before'][0]:.2f} / {hw['loadavg_after'][0]:.2f} ({hw['note']})."
        ),
        "",
        (
            f"Locust, headless: {s['users']}; no think time (closed loop: concurrency = users); "
            f"{s['level_seconds']:g} s per level, {s['max_new_tokens']} max new tokens, temperature "
            f"{s['temperature']:g}, {s['prompts']} prompts from the test split. *engine* = llama-server's own "
            "OpenAI endpoint (no gateway)."
        ),
        "",
        "## Targets",
        "",
        "| target | goal | measured | | note |",
        "|---|---|---:|---|---|",
    ]
    for t in r["targets"]:
        lines.append(
            f"| {t['name']} | {t['goal']} | {t['display']} | {'met' if t['met'] else '**missed**'} | "
            f"{t['note']} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        (
            "| model | target | users | req | req/s | tok/s | p50 ms | p95 ms | p99 ms | mean ms | TTFT p50 ms | "
            "ms/100 tok p50 | decode ms/100 tok p50 | errors |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['model']} | {x['target']} | {x['concurrency']} | {x['requests']} | {x['rps']:.2f} | "
            f"{x['tokens_per_s']:,.1f} | {fmt_number(x['p50_ms'], ',.0f')} | {fmt_number(x['p95_ms'], ',.0f')} | "
            f"{fmt_number(x['p99_ms'], ',.0f')} | {fmt_number(x['mean_ms'], ',.0f')} | {fmt_number(x['ttft_ms'], ',.0f')} | "
            f"{fmt_number(x['ms_per_100_tokens'], ',.0f')} | {fmt_number(x.get('decode_ms_per_100_tokens'), ',.0f')} | "
            f"{x['error_rate']:.1%} |"
        )
    o = r.get("gateway_overhead")
    if o and o.get("pairs"):
        lines += [
            "",
            (
                f"Gateway overhead, paired: {o['pairs']} pairs ({o['failed_pairs']} failed), median latency "
                f"gateway {fmt_number(o['gateway_median_ms'], ',.0f')} ms vs engine "
                f"{fmt_number(o['engine_median_ms'], ',.0f')} ms, identical replies in "
                f"{o['pairs_with_equal_tokens']}/{o['pairs']} pairs; per-pair ratio p10-p90 "
                f"{o['ratio_p10_p90']}. Method: {o['method']}."
            ),
        ]
    failed = [x for x in r["runs"] if x.get("errors")]
    if failed:
        lines += [
            "",
            "Failed requests by cause: "
            + "; ".join(
                f"{x['model']} {x['target']} {x['concurrency']} user{'s' if x['concurrency'] > 1 else ''}: "
                + ", ".join(f"{k} x{v}" for k, v in x["errors"].items())
                for x in failed
            )
            + ".",
        ]
    lines += [
        "",
        (
            "Latency percentiles come from Locust's histogram (100 ms buckets above 1 s); means are exact. "
            "ms/100 tok = each request's latency x 100 / its completion tokens (prompt processing included); "
            "decode ms/100 tok = streamed requests' time after the first token x 100 / (tokens - 1)."
        ),
        "",
        "## Memory-bandwidth bound",
        "",
        (
            f"Read bandwidth {r['bandwidth']['gb_s']:.1f} GB/s ({r['bandwidth']['method']}). Bound = read "
            "bandwidth / GGUF bytes (decoding reads every weight once per token)."
            + (
                f" For reference, a 1-thread copy: {r['bandwidth']['copy']['gb_s']:.1f} GB/s read+write."
                if r["bandwidth"].get("copy")
                else ""
            )
        ),
        "",
        "| model | size MB | bound tok/s | decode tok/s (llama-bench) | fraction |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in r["bandwidth"]["models"]:
        frac = f"{b['fraction_of_bound']:.0%}" if b["fraction_of_bound"] is not None else "–"
        lines.append(
            f"| {b['model']} | {b['size_bytes'] / 1e6:,.1f} | {b['bound_tokens_per_s']:,.0f} | "
            f"{fmt_number(b['decode_tokens_per_s'])} | {frac} |"
        )
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
            lines.append(
                f"| {row['group']} | {row['config']} | {fmt_number(row['ms_per_100_tokens'], ',.0f')} | "
                f"{fmt_number(row['tokens_per_s'])} | {vs} | {'; '.join(note)} |"
            )
        rec = t["recommended"]
        lines += [
            "",
            "Recommended `serve.llama` (changes >= 5% faster only): "
            f"`threads: {rec['threads']}`"
            + (
                f", `batch_size: {rec['batch_size']}`, `ubatch_size: {rec['ubatch_size']}`"
                if rec.get("ubatch_size")
                else ""
            )
            + f", `extra_args: {json.dumps(rec['extra_args'])}`; fastest decode: `{rec['fastest_variant']}`.",
        ]
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
