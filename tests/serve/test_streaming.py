"""SSE format (OpenAI chunks + `data: [DONE]`, TGI-style events on /v1/generate), mid-stream failures, and
client disconnects: the gateway must cancel the upstream request so the engine frees the slot."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx2
import pytest

from supportlm.serve.app import build_app
from supportlm.serve.engines import Engine

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


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_chat_sse_format() -> None:
    async def go() -> httpx2.Response:
        async with gateway() as c:
            return await c.post("/v1/chat/completions", json=chat_body(stream=True), headers=ALICE)

    r = run(go())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    payloads = parse_sse(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" and ch["model"] == "supportlm" for ch in chunks)
    assert all(len(ch["choices"]) == 1 for ch in chunks)  # no usage-only chunk unless asked for
    assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks) == FAKE_REPLY_16
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_sse_usage_chunk_when_asked() -> None:
    async def go() -> tuple[list[str], dict[str, Any]]:
        async with gateway() as c:
            body = chat_body(stream=True, max_tokens=3, stream_options={"include_usage": True})
            r = await c.post("/v1/chat/completions", json=body, headers=ALICE)
            return parse_sse(r.text), c.fake.state.fake["last_body"]  # type: ignore[attr-defined]

    payloads, upstream = run(go())
    usage = json.loads(payloads[-2])
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 3,
        "total_tokens": 7,
    }
    assert upstream["stream_options"] == {"include_usage": True} and upstream["model"] == "supportlm"


def test_generate_sse_format() -> None:
    async def go() -> httpx2.Response:
        async with gateway() as c:
            return await c.post(
                "/v1/generate", json={"prompt": "hi", "max_new_tokens": 4, "stream": True}, headers=ALICE
            )

    r = run(go())
    events = [json.loads(p) for p in parse_sse(r.text)]
    assert [e["token"]["text"] for e in events[:-1]] == ["Thanks", " for", " contacting", " support"]
    assert all(e["generated_text"] is None for e in events[:-1])
    assert events[-1]["generated_text"] == "Thanks for contacting support"
    assert events[-1]["details"] == {"finish_reason": "length", "prompt_tokens": 1, "generated_tokens": 4}


def test_engine_failing_before_the_stream_is_a_status_code() -> None:
    async def go() -> list[httpx2.Response]:
        async with gateway() as c:
            return [
                await c.post("/v1/chat/completions", json=chat_body("__error__", stream=True), headers=ALICE),
                await c.post(
                    "/v1/chat/completions", json=chat_body("__context__", stream=True), headers=ALICE
                ),
            ]

    boom, context = run(go())
    assert boom.status_code == 503 and boom.json()["error"]["type"] == "engine_error"
    assert context.status_code == 422 and context.json()["error"]["code"] == "context_length_exceeded"
    assert context.json()["error"]["param"] == "messages"


def test_engine_dying_mid_stream_ends_with_an_error_event() -> None:
    class Dies(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            class Body(httpx2.AsyncByteStream):
                async def __aiter__(self) -> Any:
                    chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                    raise httpx2.ReadError("connection reset")

            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    async def go() -> str:
        engine = Engine("http://dies", transport=Dies())
        app = build_app(make_settings(), engine)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json=chat_body(stream=True), headers=ALICE)
            assert r.status_code == 200
            return r.text

    payloads = parse_sse(run(go()))
    assert json.loads(payloads[0])["choices"][0]["delta"]["content"] == "Hel"
    err = json.loads(payloads[1])["error"]
    assert err["type"] == "engine_unavailable" and "mid-stream" in err["message"]
    assert payloads[-1] == "[DONE]"


def _open_stream(url: str, body: dict[str, Any]) -> socket.socket:
    """Raw HTTP/1.1 request on a socket we can slam shut (a client that goes away)."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice-0123456789\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )
    return sock


def test_client_disconnect_mid_stream_cancels_the_engine_request(fake_engine_proc: FakeEngineProcess) -> None:
    engine = Engine(fake_engine_proc.url)
    app = build_app(make_settings(), engine)
    with ServerThread(app) as gw:
        sock = _open_stream(gw.url, chat_body("__slow__", stream=True, max_tokens=50))  # 50 x 0.2 s = 10 s
        got = b""
        while got.count(b"data: ") < 2:  # headers + the first token
            got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
        sock.close()
        wait_until(
            lambda: fake_engine_proc.stats()["cancelled"] == 1, 5, what="engine to see the cancellation"
        )
        stats = fake_engine_proc.stats()
        assert stats["completed"] == 0 and stats["active"] == 0
        gauge = app.state.gateway.metrics.inflight
        wait_until(lambda: gauge._value.get() == 0, 5, what="gateway slot to be released")


def test_disconnect_before_the_first_token_also_cancels(fake_engine_proc: FakeEngineProcess) -> None:
    """The engine is still 'processing the prompt' (no bytes yet): the gateway must notice the client left
    without waiting for a token to fail to send."""
    engine = Engine(fake_engine_proc.url)
    app = build_app(make_settings(), engine)
    with ServerThread(app) as gw:
        sock = _open_stream(gw.url, chat_body("__hang__", stream=True))
        wait_until(lambda: fake_engine_proc.stats()["active"] == 1, 5, what="engine to start the request")
        sock.close()
        wait_until(
            lambda: fake_engine_proc.stats()["cancelled"] == 1, 5, what="engine to see the cancellation"
        )
        r = httpx2.post(
            f"{gw.url}/v1/chat/completions", json=chat_body(max_tokens=2), headers=ALICE, timeout=10
        )
        assert r.status_code == 200  # and the gateway serves on


@pytest.mark.parametrize(
    ("kind", "prompt_tokens"),
    [("llamacpp", 8), ("tgi", 9)],  # the engine's usage (the fake counts words) / estimated: 36 chars / 4
)
def test_both_streamed_routes_count_the_same_tokens(tmp_path: Path, kind: str, prompt_tokens: int) -> None:
    """One engine output, both streamed routes: the same reply and token counts, in the request log and in
    /v1/generate's closing `details` (TGI sends no usage in streams: the counts are estimated there)."""
    log_file = tmp_path / "requests.jsonl"
    prompt = "Where is my order please, it is late"

    async def go() -> tuple[str, str]:
        async with gateway(make_settings(log={"file": log_file}), kind=kind) as c:
            chat = await c.post(
                "/v1/chat/completions", json=chat_body(prompt, stream=True, max_tokens=5), headers=ALICE
            )
            gen = await c.post(
                "/v1/generate", json={"prompt": prompt, "max_new_tokens": 5, "stream": True}, headers=ALICE
            )
            c.app.state.gateway.access_logger.handlers[0].flush()  # type: ignore[attr-defined]
            return chat.text, gen.text

    chat_text, gen_text = run(go())
    chat_chunks = [json.loads(p) for p in parse_sse(chat_text)[:-1]]
    gen_events = [json.loads(p) for p in parse_sse(gen_text)]
    reply = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chat_chunks)
    assert reply == gen_events[-1]["generated_text"] == "".join(e["token"]["text"] for e in gen_events[:-1])
    assert gen_events[-1]["details"] == {"finish_reason": "length", "prompt_tokens": prompt_tokens,
                                         "generated_tokens": 5}  # fmt: skip
    chat_line, gen_line = (json.loads(ln) for ln in log_file.read_text().splitlines())
    for line in (chat_line, gen_line):
        assert line["stream"] is True and line["status"] == 200 and line["ttft_ms"] is not None
        assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt_tokens, 5)
