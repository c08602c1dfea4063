"""The bench's targets (each {name, goal, measured, met}) and the hardware every speed is recorded beside."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.bench.inputs import Variant
from supportlm.runtime import cpu_info

log = logging.getLogger("supportlm.bench")

SEED_NOTE = "seed target, set for a 7B model on a GPU host"


def _fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def build_targets(
    runs: list[dict[str, Any]], primary: str, goals: Any, *, size_reduction: dict[str, Any] | None,
    bandwidth_rows: list[dict[str, Any]], overhead: dict[str, Any] | None = None, size_name: str | None = None,
    fixed: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The seven targets, each {name, goal, measured, met, display, note}; unmeasurable = met false + why.

    With `fixed` (bench/fixed_load.py: every reply exactly max_new_tokens, gateway and engine in round pairs)
    the latency, the gateway overhead and the gateway/engine throughput come from it; Locust's numbers
    (replies of any length, separate runs) stay in the notes."""
    gw = {r["concurrency"]: r for r in runs if r["target"] == "gateway" and r["model"] == primary}
    en = {r["concurrency"]: r for r in runs if r["target"] == "engine" and r["model"] == primary}
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, measured: float | None, met: bool, display: str, note: str) -> None:
        out.append({"name": name, "goal": goal, "measured": measured, "met": bool(met and measured is not None),
                    "display": display, "note": note})  # fmt: skip

    levels = (fixed or {}).get("levels") or {}
    fx1 = levels.get("1")
    g1 = gw.get(1)
    ms = g1["ms_per_100_tokens"] if g1 else None
    detail = ""
    if g1:
        detail = (
            f"; Locust (replies of any length): p50 {_fmt_ms(ms)}, of which first token (TTFT p50) "
            f"{_fmt_ms(g1['ttft_ms'])}, decode alone {_fmt_ms(g1.get('decode_ms_per_100_tokens'))} per 100 "
            f"tokens; {g1['tokens_per_request']:.0f} tokens per reply"
        )
    name = "latency per 100 generated tokens (gateway, 1 user, p50)"
    display = _fmt_ms(ms)
    if fx1 and fx1["gateway"]["ms_per_100_tokens_p50"] is not None:
        fg, fe = fx1["gateway"], fx1["engine"]
        ms = fg["ms_per_100_tokens_p50"]
        name = f"latency per 100 generated tokens (gateway, 1 user, p50, fixed work: {fixed['setup']['max_tokens']}-token replies)"
        iv = fg.get("ms_per_100_tokens_interval")
        display = _fmt_ms(ms) + (f" (mean {fg['ms_per_100_tokens_mean']:,.0f} [{iv[0]:,.0f}, {iv[1]:,.0f}])" if iv else "")
        parts = ""
        if fg.get("ttft_ms_p50") is not None and fg.get("decode_ms_per_token_p50") is not None:
            parts = (f" (streamed: first token {_fmt_ms(fg['ttft_ms_p50'])}, then "
                     f"{fg['decode_ms_per_token_p50']:.2f} ms per token)")  # fmt: skip
        detail = (
            f"; {fg['requests']} requests of exactly {fixed['setup']['max_tokens']} tokens{parts}; engine direct in "
            f"the same pairs {_fmt_ms(fe['ms_per_100_tokens_p50'])}" + detail
        )
    add(name, f"< {goals.ms_per_100_tokens:g} ms", ms, ms is not None and ms < goals.ms_per_100_tokens, display,
        SEED_NOTE + detail)  # fmt: skip
    best = max(gw.values(), key=lambda r: r["rps"]) if gw else None
    add(
        "throughput (gateway, best concurrency level)",
        f"> {goals.rps:g} req/s",
        best and best["rps"],
        bool(best) and best["rps"] > goals.rps,
        f"{best['rps']:.2f} req/s at {best['concurrency']} user{'s' if best['concurrency'] > 1 else ''}"
        if best
        else "n/a",
        SEED_NOTE,
    )
    red = (size_reduction or {}).get("reduction")
    add(
        f"model size reduction ({size_name or primary} vs f16)",
        f"> {goals.size_reduction:.0%}",
        red,
        red is not None and red > goals.size_reduction,
        f"{red:.1%}" if red is not None else "n/a",
        f"{SEED_NOTE}; from {(size_reduction or {}).get('source', 'no f16 size available')}",
    )
    e1 = en.get(1)
    runs_ovh = (g1["mean_ms"] / e1["mean_ms"] - 1) if g1 and e1 and g1["mean_ms"] and e1["mean_ms"] else None
    runs_note = (
        f"Locust runs at 1 user (mean latency, separate runs): {runs_ovh:+.1%}"
        if runs_ovh is not None
        else "no 1-user gateway + engine runs"
    )
    lat1 = (fx1 or {}).get("latency_ratio") or {}
    if lat1.get("ratio") is not None:
        ovh = round(lat1["ratio"] - 1, 4)
        name = "gateway overhead (latency vs engine direct, 1 user, fixed work, paired)"
        note = (
            f"{lat1['n']} requests paired (same user, same request, same prompt), {lat1['method']}: [{lat1['low'] - 1:+.1%}, "
            f"{lat1['high'] - 1:+.1%}]; {runs_note}"
        )
    elif overhead and overhead.get("overhead") is not None:
        ovh = overhead["overhead"]
        name = "gateway overhead (latency vs engine direct, 1 request at a time, paired)"
        note = (
            f"median of {overhead['pairs']} interleaved pairs (same prompt, greedy, cold slots); {runs_note}"
        )
    else:
        ovh, name, note = runs_ovh, "gateway overhead (mean latency vs engine direct, 1 user)", runs_note
    add(
        name,
        f"<= {goals.gateway_overhead:.0%}",
        ovh,
        ovh is not None and ovh <= goals.gateway_overhead,
        f"{ovh:+.1%}" if ovh is not None else "n/a",
        note,
    )
    g8 = gw.get(8)
    sp = (g8["tokens_per_s"] / g1["tokens_per_s"]) if g8 and g1 and g1["tokens_per_s"] else None
    note = "continuous batching over llama-server's parallel slots"
    name = "batched throughput (gateway tokens/s, 8 users vs 1)"
    fx8 = levels.get("8")
    if fx1 and fx8 and fx1["gateway"]["tokens_per_s_median"] and fx8["gateway"]["tokens_per_s_median"]:
        locust = f"; Locust runs (replies of any length): {sp:.2f}x" if sp is not None else ""
        sp = fx8["gateway"]["tokens_per_s_median"] / fx1["gateway"]["tokens_per_s_median"]
        name = "batched throughput (gateway tokens/s, 8 users vs 1, fixed work)"
        note += f"; median round of each level, the same prompts and reply lengths{locust}"
    add(name, f">= {goals.batch_speedup:g}x", sp, sp is not None and sp >= goals.batch_speedup,
        f"{sp:.2f}x" if sp is not None else "n/a", note)  # fmt: skip
    top = max(levels, key=int) if levels else None
    tr = levels[top]["tokens_per_s_ratio"] if top else {}
    ratio = tr.get("ratio")
    add(
        f"gateway/engine tokens/s ({top or '?'} users, fixed work)",
        f">= {goals.gateway_throughput_ratio:g}",
        ratio,
        ratio is not None and ratio >= goals.gateway_throughput_ratio,
        f"{ratio:.3f} [{tr['low']:.3f}, {tr['high']:.3f}]" if ratio is not None else "n/a",
        f"{tr.get('n', 0)} round pairs, {tr.get('method', '')}; gateway CPU {levels[top]['gateway_cpu_share']:.1%} "
        "of gateway + engine CPU" if ratio is not None else (fixed or {}).get("skipped", "bench.fixed is off"),
    )
    bw = next((r for r in bandwidth_rows if r["model"] == primary), None)
    frac = bw["fraction_of_bound"] if bw else None
    add(
        f"single-stream decode vs memory-bandwidth bound ({primary})",
        f">= {goals.bandwidth_fraction:.0%}",
        frac,
        frac is not None and frac >= goals.bandwidth_fraction,
        f"{frac:.0%} ({bw['decode_tokens_per_s']:.0f} of {bw['bound_tokens_per_s']:.0f} tok/s)"
        if frac
        else "n/a",
        "llama-bench tg tokens/s / (read bandwidth / GGUF bytes)",
    )
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
        return {
            "reduction": round(1 - variants[primary].size_bytes / variants["f16"].size_bytes, 4),
            "source": f"GGUF file sizes ({variants[primary].path.name} vs {variants['f16'].path.name})",
        }
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
