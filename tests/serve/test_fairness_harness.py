"""The fairness stage's load harness (bench/fairness.py) against the real gateway and the fake engine:
the flood process streams, its tokens/s counts only what arrived inside the window, streams still open at
its end are cut (and cancelled upstream), and the polite key's requests keep their schedule."""

from __future__ import annotations

from typing import Any

from supportlm.bench.fairness import _phase, _summary
from supportlm.bench.stack import Stack
from supportlm.config import FairnessParams
from supportlm.serve.app import build_app
from supportlm.serve.engines import Engine

from .conftest import ServerThread, make_settings, wait_until

ABUSER, POLITE = "sk-alice-0123456789", "sk-bob-4567890123"


def test_summary_counts_cut_streams_for_their_tokens_and_waiting_ones_as_neither() -> None:
    rows = [
        {"status": 200, "s": 2.0, "tokens": 40},  # finished in the window
        {"status": 200, "s": None, "tokens": 25},  # streaming when the window closed: its 25 tokens count
        {"status": "cut", "s": None, "tokens": 0},  # still queued: neither served nor refused
        {"status": 429, "s": None, "tokens": 0},
        {"status": "ReadTimeout", "s": None, "tokens": 0},
    ]
    out = _summary(rows, seconds=10.0)
    assert out["tokens_per_s"] == 6.5
    assert (out["ok"], out["refused"], out["requests"]) == (2, 1, 5)
    assert out["success_rate"] == 0.5  # 2 of the 4 that got an answer
    assert out["p50_ms"] == out["p95_ms"] == 2000.0  # latency only of the finished one
    assert out["statuses"] == {"200": 2, "429": 1, "ReadTimeout": 1, "cut": 1}


def test_phase_streams_the_flood_cuts_it_at_the_window_and_keeps_the_polite_schedule(
    fake_engine_proc: Any,
) -> None:
    # 0.02 s per token from the fake engine, 400-token asks: every abuser stream is still open at the end
    import httpx2

    httpx2.post(f"{fake_engine_proc.url}/_control", json={"token_delay": 0.02}, timeout=5)
    settings = make_settings(limits={"max_concurrency": 4, "max_queue": 8, "per_key_queue": 2})
    app = build_app(settings, Engine(fake_engine_proc.url, timeout_s=30))
    prompts = [[{"role": "user", "content": f"Where is order {i}?"}] for i in range(4)]
    p = FairnessParams(abuser_clients=6, abuser_max_tokens=400, abuser_retry_s=0.1, polite_rps=2.0,
                       polite_max_tokens=8, request_timeout_s=20)  # fmt: skip
    with ServerThread(app) as gw:
        stack = Stack(gw.url, fake_engine_proc.url, POLITE, 4, settings)
        out = _phase(stack, {"abuser": ABUSER, "polite": POLITE}, prompts, p, True, True, seconds=3.0)
        # the cut streams are cancelled upstream: the engine ends with nothing running
        wait_until(lambda: httpx2.get(f"{fake_engine_proc.url}/_stats", timeout=2).json()["active"] == 0, 5,
                   what="the cut streams to be cancelled upstream")  # fmt: skip
        stats = httpx2.get(f"{fake_engine_proc.url}/_stats", timeout=2).json()
    abuser, polite = out["abuser"], out["polite"]
    assert polite["requests"] == 6 and polite["ok"] == 6  # 2/s for 3 s, on schedule, all served
    assert (
        abuser["ok"] >= 1 and abuser["p50_ms"] is None
    )  # streams started; none of 400 tokens finished in 3 s
    assert stats["cancelled"] >= abuser["ok"]
    # tokens/s is the window's: at most the slots the abuser held x 50 tokens/s, and well above zero
    assert 10 < abuser["tokens_per_s"] <= 4 * 50
    assert set(abuser["statuses"]) <= {"200", "429", "503", "cut"}
