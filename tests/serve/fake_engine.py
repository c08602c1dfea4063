"""A tiny OpenAI-compatible engine for gateway tests: deterministic tokens, optional slowness, and a record
of every request it saw and every stream its client abandoned (the gateway must cancel upstream).

    python tests/serve/fake_engine.py --port 8099 [--token-delay 0.05] [--kind vllm --model-id fake-7b]

In-process: `create_app()` is an ASGI app (tests put it behind httpx2.ASGITransport).

Reply: "Thanks for contacting support." followed by " t<i>" filler tokens, max_tokens tokens in all
(default 16). Magic words in the last user message: `__slow__` (0.2 s per token), `__hang__`
(sleep 30 s before the first token), `__short__` (4 tokens, unless `ignore_eos`), `__error__` (HTTP 500), `__context__` (HTTP 400 like
llama-server's context overflow), `__busy__` (HTTP 503), `__sigill__` (the process kills itself with
SIGILL, as a llama.cpp build for another CPU does on its first decode). `--sigill-at-start-if FILE`:
die of SIGILL at start while FILE exists (a crash loop for the supervisor). Control: GET /_stats, POST /_control
{"token_delay": s, "loading": bool}, POST /_reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

WORDS = ["Thanks", " for", " contacting", " support", "."]


def reply_tokens(max_tokens: int) -> list[str]:
    toks = WORDS + [f" t{i}" for i in range(max(0, max_tokens - len(WORDS)))]
    return toks[:max_tokens]


def create_app(*, token_delay: float = 0.0, kind: str = "llamacpp", model_id: str = "fake-model") -> FastAPI:
    app = FastAPI()
    state: dict[str, Any] = {
        "token_delay": token_delay,
        "loading": False,
        "requests": 0,
        "streams": 0,
        "completed": 0,
        "cancelled": 0,
        "active": 0,
        "max_active": 0,
        "last_body": None,
        "health_checks": 0,
    }
    app.state.fake = state

    def reset() -> None:
        state.update(requests=0, streams=0, completed=0, cancelled=0, active=0, max_active=0, last_body=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        state["health_checks"] += 1
        if state.get("health_delay"):
            await asyncio.sleep(state["health_delay"])
        if state["loading"]:
            return JSONResponse({"error": {"message": "Loading model", "type": "unavailable_error"}}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "fake"}]}

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return {k: v for k, v in state.items()}

    @app.post("/_control")
    async def control(request: Request) -> dict[str, Any]:
        state.update(await request.json())
        return {"ok": True}

    @app.post("/_reset")
    async def do_reset() -> dict[str, Any]:
        reset()
        return {"ok": True}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state["requests"] += 1
        state["last_body"] = body
        if kind == "vllm" and body.get("model") != model_id:  # vLLM insists on its served model name
            return JSONResponse(
                {"error": {"message": f"The model `{body.get('model')}` does not exist."}}, 404
            )
        last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if "__sigill__" in last:
            os.kill(os.getpid(), signal.SIGILL)
        if "__error__" in last:
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if "__context__" in last:
            return JSONResponse(
                {
                    "error": {
                        "message": "the request exceeds the available context size, try increasing it",
                        "type": "exceed_context_size_error",
                    }
                },
                400,
            )
        if "__busy__" in last:
            return JSONResponse({"error": {"message": "no free slot"}}, 503, headers={"Retry-After": "3"})
        delay = 0.2 if "__slow__" in last else state["token_delay"]
        hang = 30.0 if "__hang__" in last else 0.0
        toks = reply_tokens(int(body.get("max_tokens") or 16))
        if "__short__" in last and not body.get("ignore_eos"):  # stops early (unless told to ignore EOS)
            toks = toks[:4]
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(toks),
            "total_tokens": prompt_tokens + len(toks),
        }
        finish = "length" if len(toks) >= int(body.get("max_tokens") or 16) else "stop"
        cid, created = f"chatcmpl-{state['requests']}", int(time.time())
        if not body.get("stream"):
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
            try:
                await asyncio.sleep(hang + delay * len(toks))
            except asyncio.CancelledError:  # the caller hung up: stop generating, like llama-server
                state["cancelled"] += 1
                raise
            finally:
                state["active"] -= 1
            state["completed"] += 1
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(toks)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            state["streams"] += 1
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
            done = False
            try:
                if hang:
                    await asyncio.sleep(hang)
                head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id}
                yield _sse(
                    {
                        **head,
                        "choices": [
                            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                        ],
                    }
                )
                for tok in toks:
                    if delay:
                        await asyncio.sleep(delay)
                    yield _sse(
                        {**head, "choices": [{"index": 0, "delta": {"content": tok}, "finish_reason": None}]}
                    )
                yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"
                done = True
            finally:
                state["active"] -= 1
                if done:
                    state["completed"] += 1
                else:
                    state["cancelled"] += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token-delay", type=float, default=0.0)
    ap.add_argument("--kind", default="llamacpp")
    ap.add_argument("--model-id", default="fake-model")
    ap.add_argument("--sigill-at-start-if", default=None)
    a = ap.parse_args()
    if a.sigill_at_start_if and os.path.exists(a.sigill_at_start_if):
        os.kill(os.getpid(), signal.SIGILL)
    app = create_app(token_delay=a.token_delay, kind=a.kind, model_id=a.model_id)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
