"""Bench stage, pure parts: Locust `--json-file` stats -> one run's numbers, percentiles, targets, prompts.

The fixture is built the way Locust 2.47 writes `--json-file` (`StatsEntry.serialize()` per entry, response
time buckets as JSON string keys), with the entries our locustfile records: POST chat / chat-stream
(response_length = completion tokens), TTFT, MS100, DECODE and the MARK written at test start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supportlm.bench.bandwidth import bound_table, decode_bound
from supportlm.bench.inputs import build_prompts
from supportlm.bench.locust import parse_locust_stats, percentile
from supportlm.bench.report import render_markdown
from supportlm.bench.targets import build_targets
from supportlm.config import BenchParams, BenchTargets

T0 = 1_800_000_000.0  # test start (epoch seconds)


def entry(method: str, name: str, times: dict[int, int], *, failures: int = 0, length: int = 0,
          start: float = T0 + 2.0, last: float = T0 + 20.0) -> dict:  # fmt: skip
    n = sum(times.values())
    return {
        "name": name,
        "method": method,
        "last_request_timestamp": last,
        "start_time": start,
        "num_requests": n,
        "num_none_requests": 0,
        "num_failures": failures,
        "total_response_time": sum(k * v for k, v in times.items()),
        "max_response_time": max(times),
        "min_response_time": min(times),
        "total_content_length": length,
        "response_times": {str(k): v for k, v in times.items()},  # JSON object keys are strings
        "num_reqs_per_sec": {},
        "num_fail_per_sec": {},
    }


def locust_json() -> list[dict]:
    """10 requests in 20 s (5 streamed, 5 plain), 800 completion tokens, 1 failure."""
    entries = [
        entry("MARK", "test_start", {0: 1}, start=T0, last=T0),
        entry("POST", "chat-stream", {1900: 2, 2000: 2, 2400: 1}, length=400, start=T0 + 1.9),
        entry("POST", "chat", {1800: 3, 2100: 1, 90: 1}, failures=1, length=400, start=T0 + 1.8),
        entry("LATENCY", "chat-stream", {1900: 2, 2000: 2, 2400: 1}, length=400),  # successful requests only
        entry("LATENCY", "chat", {1800: 3, 2100: 1}, length=400),
        entry("TTFT", "chat-stream", {300: 3, 350: 1, 600: 1}),
        entry("MS100", "chat-stream", {1900: 2, 2000: 2, 2400: 1}, length=400),
        entry("MS100", "chat", {1800: 3, 2100: 1}, length=400),
        entry("DECODE", "chat-stream", {1600: 4, 1700: 1}, length=400),
        entry("ERROR", "HTTP 503", {0: 1}),
    ]
    return json.loads(json.dumps(entries))  # exactly what json.load gives back


def test_parse_locust_stats_fixture() -> None:
    run = parse_locust_stats(locust_json(), target="gateway", model="q4_k_m", concurrency=1)
    assert run["requests"] == 10 and run["failures"] == 1
    assert run["error_rate"] == pytest.approx(0.1)
    assert run["duration_s"] == pytest.approx(20.0)  # last completion - the MARK's start (test start)
    assert run["rps"] == pytest.approx(9 / 20)  # successful requests only
    assert run["tokens_per_s"] == pytest.approx(800 / 20)
    assert run["tokens_per_request"] == pytest.approx(800 / 9, abs=0.05)
    # successful latencies, sorted: 1800 x3, 1900 x2, 2000 x2, 2100, 2400 -> nearest rank; the 90 ms failure
    # (a fast 503) is an error, not a fast answer: it is in error_rate, not in the latency numbers
    assert run["p50_ms"] == 1900 and run["p95_ms"] == 2400 and run["p99_ms"] == 2400
    assert run["mean_ms"] == pytest.approx((2 * 1900 + 2 * 2000 + 2400 + 3 * 1800 + 2100) / 9, abs=0.05)
    assert run["ttft_ms"] == 300 and run["ttft_p95_ms"] == 600
    assert run["ms_per_100_tokens"] == 1900 and run["ms_per_100_tokens_p95"] == 2400
    assert run["decode_ms_per_100_tokens"] == 1600
    assert run["errors"] == {"HTTP 503": 1}
    assert run["by_name"]["chat"] == {"requests": 5, "failures": 1, "p50_ms": 1800.0, "mean_ms": 1875.0}
    assert run["p95_ms"] >= run["p50_ms"]


def test_parse_without_mark_uses_earliest_entry_start() -> None:
    entries = [e for e in locust_json() if e["method"] != "MARK"]
    run = parse_locust_stats(entries, target="engine", model="m", concurrency=4)
    assert run["duration_s"] == pytest.approx(20.0 - 1.8)
    assert run["target"] == "engine" and run["concurrency"] == 4


def test_parse_explicit_duration_and_no_streams() -> None:
    entries = [entry("POST", "chat", {1000: 3, 20: 1}, failures=1, length=200)]  # no LATENCY: every POST counts
    run = parse_locust_stats(entries, target="gateway", model="m", concurrency=2, duration_s=8.0)
    assert run["rps"] == 3 / 8 and run["tokens_per_s"] == 25.0
    assert run["p50_ms"] == 1000 and run["mean_ms"] == pytest.approx(3020 / 4)
    assert run["ttft_ms"] is None and run["ms_per_100_tokens"] is None and run["error_rate"] == 0.25


def test_parse_rejects_a_run_without_requests() -> None:
    with pytest.raises(ValueError, match="no requests"):
        parse_locust_stats([entry("MARK", "test_start", {0: 1})], target="gateway", model="m", concurrency=1)


@pytest.mark.parametrize(
    ("hist", "q", "expected"),
    [
        ({}, 0.5, None),
        ({100.0: 1}, 0.99, 100.0),
        ({1.0: 1, 2.0: 1, 3.0: 1, 4.0: 1}, 0.5, 2.0),  # rank ceil(0.5 * 4) = 2
        ({1.0: 1, 2.0: 1, 3.0: 1, 4.0: 1}, 0.51, 3.0),
        ({10.0: 99, 500.0: 1}, 0.99, 10.0),
        ({10.0: 99, 500.0: 1}, 0.995, 500.0),
    ],
)
def test_percentile_nearest_rank(hist: dict[float, int], q: float, expected: float | None) -> None:
    assert percentile(hist, q) == expected


def _run(target: str, c: int, *, rps: float, tps: float, mean: float, ms100: float, model: str = "q4_k_m") -> dict:
    return {"target": target, "model": model, "concurrency": c, "rps": rps, "tokens_per_s": tps, "mean_ms": mean,
            "ms_per_100_tokens": ms100, "ttft_ms": 100.0, "decode_ms_per_100_tokens": ms100 - 50,
            "tokens_per_request": 90.0}  # fmt: skip


def test_targets_met_and_missed() -> None:
    runs = [
        _run("gateway", 1, rps=2.0, tps=180.0, mean=480.0, ms100=450.0),
        _run("engine", 1, rps=2.1, tps=185.0, mean=470.0, ms100=440.0),
        _run("gateway", 8, rps=9.0, tps=300.0, mean=900.0, ms100=800.0),
        _run("gateway", 8, rps=50.0, tps=9000.0, mean=1.0, ms100=1.0, model="q4_0"),  # another model: ignored
    ]
    bw_rows = bound_table(20.0, {"q4_k_m": 100_000_000}, {"q4_k_m": 150.0})  # bound 200 tok/s -> 75%
    targets = build_targets(runs, "q4_k_m", BenchTargets(), size_reduction={"reduction": 0.6, "source": "x"},
                            bandwidth_rows=bw_rows)  # fmt: skip
    by = {t["name"].split(" (")[0]: t for t in targets}
    assert [t["met"] for t in targets] == [True, False, True, True, False, False, True]  # no fixed work: n/a
    assert by["latency per 100 generated tokens"]["measured"] == 450.0
    assert by["throughput"]["measured"] == 9.0 and "8 users" in by["throughput"]["display"]
    assert by["gateway overhead"]["measured"] == pytest.approx(480 / 470 - 1)
    assert by["batched throughput"]["measured"] == pytest.approx(300 / 180)
    assert by["single-stream decode vs memory-bandwidth bound"]["measured"] == pytest.approx(0.75)
    assert all({"name", "goal", "measured", "met", "display"} <= set(t) for t in targets)


def test_paired_overhead_wins_over_the_runs_comparison() -> None:
    runs = [_run("gateway", 1, rps=2.0, tps=180.0, mean=600.0, ms100=450.0),
            _run("engine", 1, rps=2.1, tps=185.0, mean=500.0, ms100=440.0)]  # runs alone: +20%
    paired = {"overhead": 0.012, "pairs": 12}
    (t,) = [t for t in build_targets(runs, "q4_k_m", BenchTargets(), size_reduction=None, bandwidth_rows=[],
                                     overhead=paired) if t["name"].startswith("gateway overhead")]  # fmt: skip
    assert t["measured"] == 0.012 and t["met"] and t["display"] == "+1.2%"
    assert "12 interleaved pairs" in t["note"] and "+20.0%" in t["note"]


def test_targets_without_measurements_are_missed_not_crashes() -> None:
    targets = build_targets([], "q4_k_m", BenchTargets(), size_reduction=None, bandwidth_rows=[])
    assert len(targets) == 7
    assert all(t["met"] is False and t["measured"] is None and t["display"] == "n/a" for t in targets)


def test_decode_bound() -> None:
    assert decode_bound(10.0, 100_000_000) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        decode_bound(10.0, 0)


def test_build_prompts_cuts_at_the_last_user_turn(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
                      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                      {"role": "assistant", "content": "a2"}]},
        {"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "no user"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "intent": "x"},
    ]  # fmt: skip
    f = tmp_path / "test.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = build_prompts(f, 10, seed=1)
    assert sorted(len(p) for p in prompts) == [1, 4]  # the row without a user turn is dropped
    long = max(prompts, key=len)
    assert [m["role"] for m in long] == ["system", "user", "assistant", "user"] and long[-1]["content"] == "u2"
    assert build_prompts(f, 10, seed=1) == prompts  # seeded
    assert len(build_prompts(f, 1, seed=1)) == 1


def test_bench_params_need_single_stream_levels() -> None:
    with pytest.raises(ValueError, match="must both include 1"):
        BenchParams(concurrency=[4, 8])


def test_render_markdown_has_every_section(tmp_path: Path) -> None:
    run = parse_locust_stats(locust_json(), target="gateway", model="q4_k_m", concurrency=1)
    r = {
        "primary": "q4_k_m", "model_source": "quantize stage", "base_model": "bundled:x",
        "hardware": {"cores": 2, "cpu": "cpu", "memory_gb": 8, "llama_threads": 1, "llama_parallel": 8,
                     "loadavg_before": [1.0], "loadavg_after": [2.0], "note": "shared"},
        "setup": {"users": "u", "level_seconds": 20, "max_new_tokens": 100, "temperature": 0, "prompts": 10},
        "targets": build_targets([run], "q4_k_m", BenchTargets(), size_reduction=None, bandwidth_rows=[]),
        "runs": [run],
        "bandwidth": {"gb_s": 20.0, "method": "copy", "models": bound_table(20.0, {"q4_k_m": 10**8}, {})},
        "tuning": {"seconds": 5, "rows": [{"group": "g", "config": "c", "ms_per_100_tokens": 10.0,
                                           "tokens_per_s": 1.0, "vs_baseline": 1.0}],
                   "recommended": {"threads": 1, "extra_args": [], "fastest_variant": "q4_0"}},
        "serving": {"llama_parallel": 8}, "plots": [str(tmp_path / "plots/bench/latency.png")],
        "params_hash": "abc", "git_sha": "deadbeef", "seconds": 300,
    }  # fmt: skip
    md = render_markdown(r, tmp_path)
    for heading in ("## Targets", "## Runs", "## Memory-bandwidth bound", "## Engine tuning", "## Lineage"):
        assert heading in md
    assert "![latency](plots/bench/latency.png)" in md and "**missed**" in md
    assert "Failed requests by cause: q4_k_m gateway 1 user: HTTP 503 x1." in md
    assert "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" in md  # numbers right-aligned
    assert "| c | 10 | 1.0 | 1.00x |  |" in md  # tuning row: whole ms, 1-decimal tok/s, ratio


def test_fairness_and_build_compare_markdown() -> None:
    from supportlm.bench.build_compare import to_markdown
    from supportlm.bench.fairness import render_markdown as fairness_markdown

    phase = {"requests": 1857, "ok": 31, "statuses": {"200": 31, "429": 1826}, "p50_ms": 15273.1,
             "p95_ms": None, "tokens_per_s": 38.6}  # fmt: skip
    r = {"model": "q4_k_m", "hardware": {"cpu": "cpu", "cores": 2, "isa": ["avx2"]},
         "load": {"abuser_clients": 48, "abuser_max_tokens": 512, "abuser_retry_s": 0.25, "polite_rps": 1.0,
                  "polite_max_tokens": 32, "seconds": 60.0, "short_seconds": 30.0},
         "limits": {"max_concurrency": 8},
         "targets": [{"name": "ratio", "goal": "<= 3x", "measured": None, "met": False}],
         "phases": {"fair/abuser_and_polite": {"abuser": phase}},
         "plots": ["reports/plots/fairness/latency.png"]}  # fmt: skip
    md = fairness_markdown(r)
    assert "retried after 0.25 s) and one polite key (1 request/s, 32 tokens), 60 s" in md
    assert "| ratio | <= 3x | – | no |" in md and "|---|---|---:|---:|---|---:|---:|---:|" in md
    assert "| abuser | 1,857 | 31 | 200: 31, 429: 1826 | 15,273.1 | – | 38.6 |" in md  # None p95: "–"
    assert md.endswith("![latency](plots/fairness/latency.png)\n")

    r = {"cpu": {"model": "cpu", "cores": 2, "isa": ["avx2"]}, "threads": 2, "repeats": 5,
         "builds": {"native": "/a", "host": "/b"},
         "rows": [{"type": "q4_0", "test": "decode (tg64)", "native": 100.0, "host": 104.96,
                   "host_vs_native": 1.05},
                  {"type": "f16", "test": "decode (tg64)", "native": 50.0, "host": "failed: SIGILL",
                   "host_vs_native": None}]}  # fmt: skip
    md = to_markdown(r)
    assert "| type | test | native | host | host / native |\n|---|---|---:|---:|---:|" in md
    assert "| q4_0 | decode (tg64) | 100.0 | 105.0 | 1.05x |" in md
    assert "| f16 | decode (tg64) | 50.0 | failed: SIGILL | – |" in md


def test_read_bandwidth_reports_the_best_thread_count():
    from supportlm.bench.bandwidth import read_bandwidth

    r = read_bandwidth(mb=32, repeats=2, threads=2)
    assert set(r["by_threads"]) == {1, 2} and r["gb_s"] == max(r["by_threads"].values()) > 0.5
    assert r["threads"] in (1, 2) and "bytes read" in r["method"]


def test_speculative_mode_with_no_accepted_drafts_is_not_recommended():
    from supportlm.bench.engine_tuning import recommend

    by_threads = {1: {"tokens_per_s": 90.0}, 2: {"tokens_per_s": 130.0}}
    server = {"bench config": {"ms_per_100_tokens": 1000.0},
              "--spec-type ngram-cache": {"ms_per_100_tokens": 880.0, "draft_acceptance": 0.0},
              "--spec-type ngram-simple": {"ms_per_100_tokens": 990.0, "draft_acceptance": 0.3}}  # fmt: skip
    rec = recommend(by_threads, {}, server, threads=2, decode={})
    assert rec["extra_args"] == [] and rec["threads"] == 2  # 12% "faster" at 0% acceptance is noise
    server["--spec-type ngram-cache"]["draft_acceptance"] = 0.4
    assert recommend(by_threads, {}, server, threads=2, decode={})["extra_args"] == ["--spec-type", "ngram-cache"]
