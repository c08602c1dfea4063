"""X-Request-ID round trip, the JSON request log (fields, PII masking, rotation, no keys), and /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from supportlm.serve.logging import JsonFormatter, make_logger

from .conftest import ALICE, chat_body, gateway, make_settings


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("req-abc.123:x", "req-abc.123:x"),  # a sane id is kept
        (None, None),  # none: one is generated
        ("bad id with spaces", None),  # junk is replaced, not reflected
        ("x" * 200, None),  # too long
    ],
)
def test_request_id_round_trip(sent: str | None, echoed: str | None) -> None:
    async def go() -> list[str]:
        async with gateway() as c:
            headers = {**ALICE, **({"X-Request-ID": sent} if sent else {})}
            rs = [
                await c.post("/v1/chat/completions", json=chat_body(), headers=headers),
                await c.post("/v1/chat/completions", json={}, headers=headers),  # 422
                await c.post(
                    "/v1/chat/completions", json=chat_body(), headers={"X-Request-ID": sent or "z"}
                ),  # 401
                await c.get("/healthz", headers=headers),
            ]
            return [r.headers["x-request-id"] for r in rs]

    ids = run(go())
    for rid in ids:
        assert rid and len(rid) <= 128
        if echoed:
            assert rid == echoed
        else:
            assert rid != sent
    if not echoed:
        assert len(set(ids)) == len(ids)  # generated ids are unique


def test_json_log_line_fields(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "requests.jsonl"
    settings = make_settings(log={"file": log_file})

    async def go() -> None:
        async with gateway(settings) as c:
            await c.post(
                "/v1/chat/completions", json=chat_body(max_tokens=6), headers={**ALICE, "X-Request-ID": "r1"}
            )
            r = await c.post(
                "/v1/chat/completions",
                json=chat_body(max_tokens=6, stream=True),
                headers={**ALICE, "X-Request-ID": "r2"},
            )
            assert r.status_code == 200
            await c.post(
                "/v1/chat/completions", json=chat_body(temperature=7), headers={**ALICE, "X-Request-ID": "r3"}
            )
            await c.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"Authorization": "Bearer sk-leaked", "X-Request-ID": "r4"},
            )
            await c.get("/healthz")
            await c.get("/metrics")
        c.app.state.gateway.access_logger.handlers[0].flush()  # type: ignore[attr-defined]

    run(go())
    lines = read_log(log_file)
    assert [ln["request_id"] for ln in lines] == ["r1", "r2", "r3", "r4"]  # health/metrics not logged
    plain, stream, invalid, unauth = lines
    for ln in lines:
        assert {
            "ts",
            "level",
            "event",
            "request_id",
            "key_id",
            "route",
            "status",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "ttft_ms",
            "stream",
            "err",
            "engine",
        } <= set(ln)
        assert ln["route"] == "/v1/chat/completions" and ln["event"] == "request"
        assert isinstance(ln["latency_ms"], float) and ln["latency_ms"] >= 0
    assert plain["status"] == 200 and plain["key_id"] == "alice" and plain["stream"] is False
    assert plain["prompt_tokens"] == 4 and plain["completion_tokens"] == 6 and plain["ttft_ms"] is None
    assert stream["status"] == 200 and stream["stream"] is True and stream["completion_tokens"] == 6
    assert stream["ttft_ms"] is not None and 0 <= stream["ttft_ms"] <= stream["latency_ms"]
    assert invalid["status"] == 422 and invalid["err"] == "validation"
    assert unauth["status"] == 401 and unauth["err"] == "auth" and unauth["key_id"] is None
    text = log_file.read_text()
    assert "sk-alice" not in text and "sk-leaked" not in text  # keys never logged, only ids
    assert "prompt" not in plain  # prompts are off by default


def test_prompt_logging_masks_pii(tmp_path: Path) -> None:
    log_file = tmp_path / "req.jsonl"
    settings = make_settings(log={"file": log_file, "prompts": True})
    msg = "My email is jane.doe@example.com and card 4111 1111 1111 1111, call +1 415 555 0100"

    async def go() -> None:
        async with gateway(settings) as c:
            await c.post("/v1/chat/completions", json=chat_body(msg), headers=ALICE)
        c.app.state.gateway.access_logger.handlers[0].flush()  # type: ignore[attr-defined]

    run(go())
    line = read_log(log_file)[0]
    assert "jane.doe@example.com" not in line["prompt"] and "4111 1111" not in line["prompt"]
    assert "555 0100" not in line["prompt"]
    assert line["reply"].startswith("Thanks for contacting support.")


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    f = tmp_path / "rot.jsonl"
    logger = make_logger("t", stdout=False, file=f, max_bytes=2048, backups=2)
    for i in range(200):
        logger.info("x", extra={"fields": {"i": i, "pad": "p" * 50}})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    json.loads(f.read_text().splitlines()[-1])  # every line is whole JSON


def test_json_formatter_one_line_with_exception() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "oops %s", ("a",), exc_info=__import__("sys").exc_info()
        )
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "oops a" and "ValueError" in out["exc"]


def test_metrics_after_traffic() -> None:
    async def go() -> str:
        async with gateway(make_settings(limits={"burst": 6, "rate_per_s": 0.0})) as c:
            await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)
            await c.post("/v1/chat/completions", json=chat_body(stream=True), headers=ALICE)
            await c.post("/v1/generate", json={"prompt": "hi"}, headers=ALICE)
            await c.post("/v1/chat/completions", json=chat_body(top_p=0), headers=ALICE)
            await c.post("/v1/chat/completions", json=chat_body())
            for _ in range(3):
                await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)  # 2 ok, then 429
            for _ in range(5):
                await c.get("/healthz")
                await c.get("/readyz")
            r = await c.get("/metrics")
            assert r.headers["content-type"].startswith("text/plain")
            return r.text

    text = run(go())
    lines = set(text.splitlines())
    assert 'supportlm_request_count_total{route="/v1/chat/completions",status="200"} 4.0' in lines
    assert 'supportlm_request_count_total{route="/v1/generate",status="200"} 1.0' in lines
    assert 'supportlm_request_count_total{route="/v1/chat/completions",status="422"} 1.0' in lines
    assert 'supportlm_request_count_total{route="/v1/chat/completions",status="401"} 1.0' in lines
    assert 'supportlm_request_count_total{route="/v1/chat/completions",status="429"} 1.0' in lines
    assert 'supportlm_request_failure_total{err="validation"} 1.0' in lines
    assert 'supportlm_request_failure_total{err="auth"} 1.0' in lines
    assert 'supportlm_request_failure_total{err="rate_limit"} 1.0' in lines
    assert 'supportlm_tokens_total{kind="completion"} 80.0' in lines  # 5 successful x 16 tokens
    assert 'supportlm_time_to_first_token_seconds_count{route="/v1/chat/completions"} 1.0' in lines
    assert "supportlm_request_duration_seconds_bucket" in text
    assert "supportlm_generation_tokens_per_second_count" in text
    assert "supportlm_queue_depth 0.0" in lines and "supportlm_inflight_requests 0.0" in lines
    assert "supportlm_engine_up 1.0" in lines
    # instrumentation skips the probes and itself
    assert "/healthz" not in text and "/readyz" not in text and 'route="/metrics"' not in text
