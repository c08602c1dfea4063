"""Every gateway feature works the same over each engine kind; engine failures map to the error table;
a dead engine gives 503 + Retry-After on /readyz and requests, and the gateway recovers when it is back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from supportlm.serve.app import build_app
from supportlm.serve.engines import ENGINE_KINDS, Engine, upstream_error

from .conftest import (
    ALICE,
    FAKE_REPLY_16,
    FakeEngineProcess,
    ServerThread,
    chat_body,
    gateway,
    make_settings,
    parse_sse,
    wait_until,
)
from .fake_engine import create_app as create_fake_engine


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("kind", sorted(ENGINE_KINDS))
def test_each_engine_kind_serves_the_same_api(kind: str) -> None:
    fake = create_fake_engine(kind=kind, model_id="served-by-engine")

    async def go() -> dict[str, Any]:
        async with gateway(kind=kind, fake=fake) as c:
            ready = await c.get("/readyz")
            plain = await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)
            first_upstream = dict(fake.state.fake["last_body"])
            stream = await c.post("/v1/chat/completions", json=chat_body(stream=True), headers=ALICE)
            stream_upstream = dict(fake.state.fake["last_body"])
            gen = await c.post("/v1/generate", json={"prompt": "hi", "max_new_tokens": 2}, headers=ALICE)
            bad = await c.post("/v1/chat/completions", json=chat_body(temperature=9), headers=ALICE)
            metrics = (await c.get("/metrics")).text
            return locals()

    out = run(go())
    assert out["ready"].status_code == 200 and out["ready"].json() == {
        "status": "ready",
        "model": "supportlm",
    }
    assert out["plain"].status_code == 200
    assert out["plain"].json()["model"] == "supportlm"  # the gateway's name, whatever the engine calls it
    assert out["plain"].json()["choices"][0]["message"]["content"] == FAKE_REPLY_16
    payloads = parse_sse(out["stream"].text)
    text = "".join((json.loads(p)["choices"][0]["delta"].get("content") or "") for p in payloads[:-1])
    assert text == FAKE_REPLY_16 and payloads[-1] == "[DONE]"
    assert out["gen"].json()["generated_text"] == "Thanks for"
    assert out["bad"].status_code == 422
    expected_model = {"llamacpp": "supportlm", "tgi": "tgi"}.get(
        kind, "served-by-engine"
    )  # vllm/openai: discovered
    assert out["first_upstream"]["model"] == expected_model
    assert ("stream_options" in out["stream_upstream"]) == ENGINE_KINDS[kind].stream_usage
    # token accounting works with or without the engine's usage chunk
    assert 'supportlm_tokens_total{kind="completion"} 34.0' in out["metrics"]  # 16 + 16 + 2


def test_upstream_error_mapping() -> None:
    ctx = upstream_error(
        400, json.dumps({"error": {"message": "the request exceeds the available context size"}})
    )
    assert (type(ctx).__name__, ctx.code, ctx.param) == (
        "InvalidRequest",
        "context_length_exceeded",
        "messages",
    )
    vllm = upstream_error(
        400, json.dumps({"message": "This model's maximum context length is 2048 tokens", "object": "error"})
    )
    assert vllm.code == "context_length_exceeded"
    busy = upstream_error(503, "overloaded", "7")
    assert type(busy).__name__ == "Overloaded" and busy.retry_after == 7
    other = upstream_error(500, "<html>" + "x" * 5000)
    assert type(other).__name__ == "EngineFailure" and len(other.message) < 400


def test_engine_errors_become_the_error_table() -> None:
    async def go() -> list[httpx2.Response]:
        async with gateway() as c:
            return [
                await c.post("/v1/chat/completions", json=chat_body("__error__"), headers=ALICE),
                await c.post("/v1/chat/completions", json=chat_body("__context__"), headers=ALICE),
                await c.post("/v1/chat/completions", json=chat_body("__busy__"), headers=ALICE),
            ]

    boom, context, busy = run(go())
    assert boom.status_code == 503 and boom.json()["error"]["code"] == "engine_error"
    assert context.status_code == 422 and "context size" in context.json()["error"]["message"]
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3"


def test_engine_timeout_is_504() -> None:
    async def go() -> list[httpx2.Response]:
        async with gateway(engine_timeout_s=0.3) as c:
            return [
                await c.post("/v1/chat/completions", json=chat_body("__hang__"), headers=ALICE),
                await c.post("/v1/generate", json={"prompt": "__hang__", "stream": True}, headers=ALICE),
            ]

    for r in run(go()):
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"


def test_engine_still_loading_is_503_on_readyz() -> None:
    fake = create_fake_engine()
    fake.state.fake["loading"] = True

    async def go() -> httpx2.Response:
        async with gateway(fake=fake) as c:
            return await c.get("/readyz")

    r = run(go())
    err = r.json()["error"]
    assert r.status_code == 503 and err["type"] == "healthcheck" and err["code"] == "engine_not_ready"
    assert err["message"] == "Engine not ready"  # the engine's own answer ("503 loading") stays in the log


def test_engine_killed_then_restarted(fake_engine_proc: FakeEngineProcess) -> None:
    engine = Engine(fake_engine_proc.url, timeout_s=5)
    app = build_app(make_settings(engine={"health_interval_s": 0.2, "retry_after_s": 3}), engine)
    with ServerThread(app) as gw:
        ok = httpx2.post(f"{gw.url}/v1/chat/completions", json=chat_body(), headers=ALICE, timeout=10)
        assert ok.status_code == 200 and httpx2.get(f"{gw.url}/readyz").status_code == 200

        fake_engine_proc.kill()
        # /readyz answers from the monitor's last probe (every 0.2 s here), never by probing itself
        wait_until(lambda: httpx2.get(f"{gw.url}/readyz", timeout=2).status_code == 503, 5, what="readyz 503")
        ready = httpx2.get(f"{gw.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.headers["retry-after"] == "3"
        assert ready.json()["error"]["type"] == "healthcheck"
        for body in (chat_body(), chat_body(stream=True)):
            r = httpx2.post(f"{gw.url}/v1/chat/completions", json=body, headers=ALICE, timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "3"
            assert r.json()["error"]["type"] == "engine_unavailable"
        assert httpx2.get(f"{gw.url}/healthz").status_code == 200  # the process itself is fine

        fake_engine_proc.start()  # same port
        wait_until(
            lambda: httpx2.get(f"{gw.url}/readyz", timeout=2).status_code == 200,
            10,
            what="gateway to see the engine again",
        )
        r = httpx2.post(f"{gw.url}/v1/chat/completions", json=chat_body(), headers=ALICE, timeout=10)
        assert r.status_code == 200
        metrics = httpx2.get(f"{gw.url}/metrics").text
        assert 'supportlm_request_failure_total{err="engine"} 2.0' in metrics
        assert "supportlm_engine_up 1.0" in metrics


@pytest.mark.parametrize("kind", sorted(ENGINE_KINDS))
def test_ignore_eos_reaches_engines_that_honour_it_and_is_refused_elsewhere(kind: str) -> None:
    """`ignore_eos` (vLLM's and llama-server's extension) makes a reply exactly max_tokens long: the bench's
    fixed work depends on it. An engine kind that would drop it silently gets a 422 naming the field."""
    fake = create_fake_engine(kind=kind, model_id="served-by-engine")
    short = chat_body("__short__ please", max_tokens=12)

    async def go() -> dict[str, Any]:
        async with gateway(kind=kind, fake=fake) as c:
            plain = await c.post("/v1/chat/completions", json=short, headers=ALICE)
            fixed = await c.post("/v1/chat/completions", json={**short, "ignore_eos": True}, headers=ALICE)
            upstream = dict(fake.state.fake["last_body"])
            streamed = await c.post("/v1/chat/completions", json={**short, "ignore_eos": True, "stream": True,
                                    "stream_options": {"include_usage": True}}, headers=ALICE)  # fmt: skip
            return locals()

    out = run(go())
    assert out["plain"].status_code == 200
    assert out["plain"].json()["usage"]["completion_tokens"] == 4  # the fake stops early by itself
    if ENGINE_KINDS[kind].ignore_eos:
        assert out["fixed"].status_code == 200, out["fixed"].text
        assert out["upstream"]["ignore_eos"] is True
        assert out["fixed"].json()["usage"]["completion_tokens"] == 12
        usage = [json.loads(p) for p in parse_sse(out["streamed"].text)[:-1] if '"usage"' in p]
        assert usage and usage[-1]["usage"]["completion_tokens"] == 12
    else:
        for r in (out["fixed"], out["streamed"]):
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["param"] == "ignore_eos" and err["code"] == "unsupported_parameter"
            assert kind in err["message"]
        assert "ignore_eos" not in (out["upstream"] or {})  # never sent upstream


def test_ignore_eos_false_is_not_sent_upstream() -> None:
    fake = create_fake_engine(kind="llamacpp")

    async def go() -> dict[str, Any]:
        async with gateway(fake=fake) as c:
            r = await c.post("/v1/chat/completions", json=chat_body(ignore_eos=False), headers=ALICE)
            return {"r": r, "upstream": dict(fake.state.fake["last_body"])}

    out = run(go())
    assert out["r"].status_code == 200 and "ignore_eos" not in out["upstream"]
