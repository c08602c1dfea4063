"""Bad input never reaches the engine and never yields a 5xx: 422 naming the field, 413 for size, 404 for
an unknown model; malformed JSON, invalid UTF-8 and control characters are 4xx; a crash is a 500 with a
request id and no traceback, and the process keeps serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from .conftest import ALICE, chat_body, gateway, make_settings

JSON_ALICE = {**ALICE, "Content-Type": "application/json"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _post(body: Any, path: str = "/v1/chat/completions", **kw: Any) -> httpx2.Response:
    async with gateway(kw.pop("settings", None)) as c:
        if isinstance(body, (bytes, str)):
            return await c.post(path, content=body, headers={**JSON_ALICE, **kw.pop("headers", {})})
        return await c.post(path, json=body, headers=ALICE)


def error_of(r: httpx2.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# field, value, param, message fragment: the TGI-style message names the field, the range and the value
@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"temperature": 3.5}, "temperature", "`temperature` must be >= 0.0 and <= 2.0. Given: 3.5"),
        ({"temperature": -0.1}, "temperature", "Given: -0.1"),
        ({"max_tokens": -5}, "max_tokens", "`max_tokens` must be >= 1 and <= 2048. Given: -5"),
        ({"max_tokens": 0}, "max_tokens", "Given: 0"),
        ({"max_tokens": 10**9}, "max_tokens", "<= 2048. Given: 1000000000"),
        ({"max_tokens": "lots"}, "max_tokens", "valid integer"),
        ({"max_completion_tokens": 4096}, "max_completion_tokens", "<= 2048"),
        ({"top_p": 0}, "top_p", "`top_p` must be > 0.0 and <= 1.0. Given: 0"),
        ({"top_p": 1.5}, "top_p", "Given: 1.5"),
        ({"n": 2}, "n", "`n` must be >= 1 and <= 1. Given: 2"),
        ({"presence_penalty": 9}, "presence_penalty", "Given: 9"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"logprobs": True}, "logprobs", "`logprobs` is not a recognised field"),
        ({"stream": "maybe"}, "stream", "valid boolean"),
    ],
)
def test_out_of_range_values_are_422_naming_the_field(
    extra: dict[str, Any], param: str, fragment: str
) -> None:
    r = run(_post(chat_body(**extra)))
    assert r.status_code == 422
    err = error_of(r)
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({}, "messages", "`messages` is required"),
        ({"messages": []}, "messages", "at least one message"),
        (
            {"messages": [{"role": "wizard", "content": "hi"}]},
            "messages.0.role",
            "'system', 'user' or 'assistant'",
        ),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages.0.content", "valid string"),
        ({"messages": [{"role": "user"}]}, "messages.0.content", "is required"),
        ({"messages": "hello"}, "messages", "valid list"),
        ([1, 2, 3], None, "valid dictionary"),
    ],
)
def test_bad_messages_are_422(body: Any, param: str | None, fragment: str) -> None:
    r = run(_post(body))
    assert r.status_code == 422
    err = error_of(r)
    assert err["param"] == param
    assert fragment in err["message"]


def test_malformed_json_is_422_naming_the_problem() -> None:
    r = run(_post(b'{"messages": [{"role": "user", "content": "hi"}'))
    assert r.status_code == 422
    assert "not valid JSON" in error_of(r)["message"]
    r = run(_post(b""))
    assert r.status_code == 422
    assert error_of(r)["param"] == "body" or "required" in error_of(r)["message"]


def test_missing_content_type_is_422() -> None:
    async def go() -> httpx2.Response:
        async with gateway() as c:
            return await c.post("/v1/chat/completions", content=json.dumps(chat_body()), headers=ALICE)

    r = run(go())
    assert r.status_code == 422
    assert "Content-Type: application/json" in error_of(r)["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}',  # latin-1 / garbage bytes
        b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',  # UTF-8-encoded surrogate
        b"\xff\xfe{\x00}\x00",  # UTF-16 BOM soup
        b'{"messages": [{"role": "user", "content": "a\x00b\x07c"}]}',  # raw control characters
        b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}',  # escaped NUL
        b'{"messages": [{"role": "user", "content": "\\ud800 lone surrogate"}]}',
        b'{"messages": [{"role": "user", "content": "bell \\u0007"}]}',
        b"NaN",
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}",
    ],
)
def test_invalid_bytes_and_control_characters_are_4xx_not_500(raw: bytes) -> None:
    r = run(_post(raw))
    assert 400 <= r.status_code < 500, r.text
    assert r.status_code == 422
    err = error_of(r)
    assert "Traceback" not in err["message"]


def test_newlines_and_tabs_are_fine() -> None:
    r = run(_post(chat_body("line one\n\tline two\r\n")))
    assert r.status_code == 200


def test_body_over_the_limit_is_413_by_content_length() -> None:
    settings = make_settings(limits={"max_body_bytes": 4096})
    r = run(_post(chat_body("x" * 10_000), settings=settings))
    assert r.status_code == 413
    err = error_of(r)
    assert err["type"] == "request_too_large" and "4,096" in err["message"]


def test_body_over_the_limit_is_413_when_streamed_without_content_length() -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 1024  # whitespace: valid JSON padding, 20 KB
        yield json.dumps(chat_body()).encode()

    async def go() -> httpx2.Response:
        async with gateway(make_settings(limits={"max_body_bytes": 8192})) as c:
            return await c.post("/v1/chat/completions", content=chunks(), headers=JSON_ALICE)

    r = run(go())
    assert r.status_code == 413, r.text
    assert "8,192" in error_of(r)["message"]


def test_huge_prompt_under_the_body_limit_is_422_on_messages() -> None:
    r = run(
        _post(
            {"messages": [{"role": "user", "content": "y" * 5000}, {"role": "user", "content": "z" * 5000}]}
        )
    )
    assert r.status_code == 422
    err = error_of(r)
    assert err["param"] == "messages"
    assert "at most 8,000 characters" in err["message"] and "Given: 10,000 characters" in err["message"]


def test_huge_prompt_is_never_echoed_back() -> None:
    blob = "Q" * 50_000
    r = run(
        _post(
            {"messages": [{"role": blob, "content": "hi"}]},
            settings=make_settings(limits={"max_body_bytes": 1024 * 1024}),
        )
    )
    assert r.status_code == 422
    msg = error_of(r)["message"]
    assert len(msg) < 1000 and msg.count("Q") <= 200


def test_many_errors_are_capped() -> None:
    body = {"messages": [{"role": "x", "content": 1}] * 30, "temperature": 9, "top_p": 9}
    r = run(_post(body))
    assert r.status_code == 422
    msg = error_of(r)["message"]
    assert "more)" in msg and len(msg) <= 2000


def test_unknown_model_is_404_but_the_served_name_works() -> None:
    r = run(_post(chat_body(model="gpt-9")))
    assert r.status_code == 404
    err = error_of(r)
    assert err["param"] == "model" and err["code"] == "model_not_found" and err["type"] == "not_found_error"
    assert run(_post(chat_body(model="supportlm"))).status_code == 200


def test_generate_flat_parameters() -> None:
    r = run(_post({"prompt": "Where is my refund?", "max_new_tokens": 3, "temperature": 0}, "/v1/generate"))
    assert r.status_code == 200
    body = r.json()
    assert body["generated_text"] == "Thanks for contacting"
    assert body["details"] == {"finish_reason": "length", "prompt_tokens": 4, "generated_tokens": 3}
    r = run(_post({"prompt": "hi", "max_new_tokens": 0}, "/v1/generate"))
    assert r.status_code == 422 and error_of(r)["param"] == "max_new_tokens"
    r = run(_post({"prompt": "hi", "parameters": {"max_new_tokens": 5}}, "/v1/generate"))
    assert r.status_code == 422 and error_of(r)["param"] == "parameters"  # flat only: documented choice
    r = run(_post({"prompt": "   "}, "/v1/generate"))
    assert r.status_code == 422 and error_of(r)["param"] == "prompt"


def test_defaults_and_system_prompt_reach_the_engine() -> None:
    async def go() -> dict[str, Any]:
        async with gateway(make_settings(system_prompt="Be brief.")) as c:
            r = await c.post("/v1/chat/completions", json=chat_body(temperature=0.2, seed=7), headers=ALICE)
            assert r.status_code == 200
            return c.fake.state.fake["last_body"]  # type: ignore[attr-defined]

    sent = run(go())
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 16 and sent["temperature"] == 0.2 and sent["seed"] == 7
    assert "n" not in sent and "user" not in sent


def test_a_crash_is_a_500_with_request_id_and_no_traceback_and_the_server_survives() -> None:
    class Boom(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == "/v1/chat/completions":
                raise RuntimeError("secret internal detail /etc/passwd")
            return httpx2.Response(200, json={"status": "ok"})

    async def go() -> tuple[httpx2.Response, httpx2.Response]:
        from supportlm.serve.app import build_app
        from supportlm.serve.engines import Engine

        engine = Engine("http://boom", transport=Boom())
        app = build_app(make_settings(), engine)
        transport = httpx2.ASGITransport(app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gw") as c:
            r1 = await c.post(
                "/v1/chat/completions", json=chat_body(), headers={**ALICE, "X-Request-ID": "crash-1"}
            )
            r2 = await c.get("/healthz")
        await engine.aclose()
        return r1, r2

    r1, r2 = run(go())
    assert r1.status_code == 500
    err = error_of(r1)
    assert err["type"] == "internal_error" and "crash-1" in err["message"]
    assert "Traceback" not in r1.text and "passwd" not in r1.text and "RuntimeError" not in r1.text
    assert r1.headers["x-request-id"] == "crash-1"
    assert r2.status_code == 200
