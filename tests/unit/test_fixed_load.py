"""bench/fixed_load.py without a server: the pair statistics, the CPU shares, the profile parser, and how the
targets and bench.md use them. Every expected number is computed here from the inputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from supportlm.bench.fixed_load import _library, parse_collapsed, ratio_interval, summarise_level
from supportlm.bench.report import _plot_fixed
from supportlm.bench.targets import build_targets
from supportlm.config import BenchTargets


def _round(target: str, users: int, tps: float, ms: list[float], cpu: dict[str, float], tokens: int = 100) -> dict:
    n = len(ms)
    return {
        "target": target, "users": users, "wall_s": n * tokens / tps, "requests": n, "errors": {},
        "tokens": n * tokens, "short_replies": 0, "tokens_per_s": tps,
        "calls": [{"user": i, "seq": 0, "prompt": i, "stream": i % 2 == 0, "ms": m, "tokens": tokens,
                   "ttft_ms": 30.0 if i % 2 == 0 else None}
                  for i, m in enumerate(ms)],
        "cpu_s": cpu,
    }  # fmt: skip


def _level(users: int = 8) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Four pairs; the gateway's tokens/s is 0.96, 0.98, 1.00, 0.94 of the engine's."""
    rounds = []
    for eng_tps, ratio in ((400.0, 0.96), (420.0, 0.98), (410.0, 1.00), (405.0, 0.94)):
        rounds.append(_round("engine", users, eng_tps, [500.0, 520.0], {"gateway": 0.01, "engine": 3.8, "client": 0.1}))
        rounds.append(_round("gateway", users, eng_tps * ratio, [510.0, 540.0],
                             {"gateway": 0.3, "engine": 3.7, "client": 0.1}))  # fmt: skip
    return rounds, summarise_level(rounds, users, 100)


def test_ratio_interval_is_the_geometric_mean_with_a_bootstrap_interval() -> None:
    ratios = [0.96, 0.98, 1.00, 0.94]
    r = ratio_interval(ratios)
    assert r["ratio"] == pytest.approx(math.exp(sum(map(math.log, ratios)) / 4), abs=1e-4)
    assert min(ratios) <= r["low"] < r["ratio"] < r["high"] <= max(ratios) and r["n"] == 4
    assert "bootstrap" in r["method"]
    # too few pairs for a bootstrap: the range, said so
    two = ratio_interval([0.9, 1.0])
    assert (two["low"], two["high"]) == (0.9, 1.0) and two["method"].startswith("range")
    assert ratio_interval([])["ratio"] is None


def test_summarise_level_pairs_rounds_and_splits_cpu() -> None:
    _rounds, s = _level()
    assert s["pairs"] == 4 and s["tokens_per_s_ratio"]["n"] == 4
    assert s["tokens_per_s_ratio"]["ratio"] == pytest.approx(ratio_interval([0.96, 0.98, 1.00, 0.94])["ratio"])
    # latency pairs: same prompt in the same pair (510/500 and 540/520, four times)
    lat = s["latency_ratio"]
    assert lat["n"] == 8 and lat["ratio"] == pytest.approx(math.sqrt(510 / 500 * 540 / 520), abs=1e-4)
    g = s["gateway"]
    tokens = 4 * 2 * 100
    assert g["cpu_ms_per_100_tokens"]["gateway"] == pytest.approx(4 * 0.3 * 1000 * 100 / tokens, abs=0.01)
    assert s["gateway_cpu_share"] == pytest.approx(0.3 / (0.3 + 3.7), abs=1e-4)
    assert g["ms_per_100_tokens_p50"] == pytest.approx((510 + 540) / 2)  # 100 tokens each: ms/100 = ms
    # streamed calls (prompt 0: 510 ms, first token at 30 ms): 99 tokens after the first
    assert g["ttft_ms_p50"] == 30.0 and g["decode_ms_per_token_p50"] == pytest.approx((510 - 30) / 99, abs=1e-3)
    lo, hi = g["ms_per_100_tokens_interval"]
    assert 510 <= lo <= g["ms_per_100_tokens_mean"] <= hi <= 540


def test_targets_take_latency_overhead_and_ratio_from_fixed_work() -> None:
    rounds1, one = _level(users=1)
    rounds8, eight = _level(users=8)
    fixed = {"levels": {"1": one, "8": eight}, "rounds": rounds1 + rounds8, "setup": {"max_tokens": 100}}
    targets = build_targets([], "q4_k_m", BenchTargets(), size_reduction=None, bandwidth_rows=[], fixed=fixed)
    by = {t["name"]: t for t in targets}
    lat = next(t for n, t in by.items() if n.startswith("latency per 100 generated tokens"))
    assert "fixed work" in lat["name"] and lat["measured"] == 525.0 and not lat["met"]  # goal < 500 ms
    ovh = next(t for n, t in by.items() if n.startswith("gateway overhead"))
    assert ovh["measured"] == pytest.approx(one["latency_ratio"]["ratio"] - 1, abs=1e-4) and ovh["met"]
    batch = by["batched throughput (gateway tokens/s, 8 users vs 1, fixed work)"]
    assert batch["measured"] == pytest.approx(1.0) and not batch["met"]  # both levels built alike: no speed-up
    ratio = by["gateway/engine tokens/s (8 users, fixed work)"]
    assert ratio["measured"] == eight["tokens_per_s_ratio"]["ratio"] and ratio["met"]  # 0.97 >= 0.95
    strict = build_targets([], "q4_k_m", BenchTargets(gateway_throughput_ratio=0.99), size_reduction=None,
                           bandwidth_rows=[], fixed=fixed)  # fmt: skip
    assert not next(t for t in strict if t["name"].startswith("gateway/engine"))["met"]
    skipped = build_targets([], "q4_k_m", BenchTargets(), size_reduction=None, bandwidth_rows=[],
                            fixed={"skipped": "an external engine (tgi) may not honour ignore_eos"})  # fmt: skip
    t = next(t for t in skipped if t["name"].startswith("gateway/engine"))
    assert t["measured"] is None and not t["met"] and "ignore_eos" in t["note"]


def test_library_of_a_frame() -> None:
    assert _library("EpollSelector.select (selectors.py:451)") == "event loop"
    assert _library("_SelectorSocketTransport.write (asyncio/selector_events.py:1037)") == "event loop"
    assert _library("chat_events (supportlm/serve/streaming.py:170)") == "supportlm/serve"
    assert _library("ReceiveBuffer.maybe_extract_lines (h11/_receivebuffer.py:104)") == "h11"
    assert _library("no file here") == "other"


def test_parse_collapsed_counts_self_inclusive_and_libraries() -> None:
    text = (
        'process 12:"python";run (asyncio/runners.py:1);select (selectors.py:451) 60\n'
        "run (asyncio/runners.py:1);chat_events (supportlm/serve/streaming.py:170);dumps (json/__init__.py:231) 30\n"
        "run (asyncio/runners.py:1);f (supportlm/serve/a.py:1);f (supportlm/serve/a.py:1) 10\n"  # recursion
        "garbage line"
    )
    p = parse_collapsed(text)
    assert p["samples"] == 100
    assert p["self"][0] == {"function": "select (selectors.py:451)", "samples": 60, "share": 0.6}
    incl = {x["function"]: x["samples"] for x in p["inclusive"]}
    assert incl["run (asyncio/runners.py:1)"] == 100 and incl["f (supportlm/serve/a.py:1)"] == 10  # once per stack
    libs = {x["library"]: x["samples"] for x in p["by_library"]}
    assert libs == {"event loop": 60, "json": 30, "supportlm/serve": 10}
    assert parse_collapsed("")["samples"] == 0


def test_bench_md_and_plot_show_fixed_work(tmp_path: Path) -> None:
    rounds, eight = _level(users=8)
    prof = parse_collapsed("run (asyncio/runners.py:1);select (selectors.py:451) 9\nx (h11/a.py:1) 1")
    prof.update({"users": 8, "rate_hz": 200, "tokens": 3200, "wall_s": 8.0, "tokens_per_s": 400.0,
                 "gateway_cpu_s": 0.4, "tool": "py-spy record", "note": "a separate round"})  # fmt: skip
    fixed = {"levels": {"8": eight}, "rounds": rounds, "profile": prof,
             "setup": {"prompts": 8, "max_tokens": 100, "requests_per_user": 4, "pairs": 4}}  # fmt: skip
    r = {"fixed": fixed, "setup": {"gateway_throughput_ratio_goal": 0.95}}
    md = render_markdown_section(r, tmp_path)
    assert "## Fixed work: what the gateway costs" in md and "### Where the gateway's CPU goes" in md
    assert f"{eight['tokens_per_s_ratio']['ratio']:.3f} [" in md and "| event loop | 9 | 90.0% |" in md
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = _plot_fixed(plt, r, tmp_path / "fixed_work.png")
    assert out.stat().st_size > 1000


def render_markdown_section(r: dict[str, Any], reports: Path) -> str:
    from supportlm.bench.report import _fixed
    from supportlm.render import Document

    doc = Document()
    _fixed(doc, r)
    return doc.to_md(reports)


def test_render_markdown_without_fixed_work_has_no_section(tmp_path: Path) -> None:
    assert render_markdown_section({"fixed": None}, tmp_path) == render_markdown_section({}, tmp_path)
    assert "Not measured: an external engine" in render_markdown_section(
        {"fixed": {"skipped": "an external engine (tgi) may not honour ignore_eos"}}, tmp_path
    )
