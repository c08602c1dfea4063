"""Streaming: server-sent events from the engine's stream, and the response that guards them.

`EngineStreamResponse` frees the queue slot the moment the client leaves (not at the next token), ends a
stream whose client stops reading (`limits.send_timeout_s`) or that runs past `limits.max_stream_s`, and
always runs its clean-ups (close the upstream stream, release the slot, refund the token budget).
`chat_events` / `generate_events` turn the engine's OpenAI chunks into the two routes' event bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from supportlm.serve.engines import UpstreamStream
from supportlm.serve.errors import ServeError, error_body, spec_for
from supportlm.serve.gateway import account, wait_disconnect
from supportlm.serve.logging import RequestContext

log = logging.getLogger("supportlm.serve")


class EngineStreamResponse(StreamingResponse):
    """SSE response that (1) watches for the client going away while the engine is still thinking, and
    (2) always runs `on_close` (close the upstream stream, free the queue slot), however it ends.

    Starlette only notices a disconnect when the next chunk fails to send; a slot should be freed the
    moment the client leaves, not at the next token (which may be a long prompt-processing away)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_close: Sequence[Callable[[], Any]],
        ctx: RequestContext,
        send_timeout_s: float = 30.0,
        max_duration_s: float = 600.0,
    ) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = list(on_close)
        self.ctx = ctx
        self.send_timeout_s = send_timeout_s
        self.max_duration_s = max_duration_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def bounded_send(message: Message) -> None:
            # a client that stops reading fills the socket buffer and blocks `send`: past the send
            # timeout the stream ends and its slot is freed
            nonlocal started
            if self.ctx.client_disconnected:
                # the watcher saw the client leave; uvicorn drops writes to a closed connection silently,
                # so without this a stream whose cancel was lost would run on to the end for nobody
                raise ConnectionResetError("the client has gone")
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives as
                # its inner send completes (gh-86296), and the stream then ran to its end
                async with asyncio.timeout(self.send_timeout_s):
                    await send(message)
            except TimeoutError:
                self.ctx.end_reason = "send_timeout"
                raise
            started = True

        stream = asyncio.ensure_future(self.stream_response(bounded_send))
        watch = asyncio.ensure_future(wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait(
                {stream, watch}, timeout=self.max_duration_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.ctx.end_reason = "max_stream_duration"
                log.warning("stream ended after %g s (max_stream_s), request_id=%s", self.max_duration_s,
                            self.ctx.request_id)  # fmt: skip
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)
                if started:  # end the body cleanly: an error event the client can read, then [DONE]
                    tail = sse(error_body(f"The stream reached the server's limit of {self.max_duration_s:g} s",
                                          "timeout_error", None, "max_stream_duration"))  # fmt: skip
                    with contextlib.suppress(Exception):
                        await bounded_send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n",
                                            "more_body": False})  # fmt: skip
            elif stream not in done:
                self.ctx.client_disconnected = True
                stream.cancel()
            watch.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            if stream.done() and not stream.cancelled() and stream.exception() is not None:
                exc = stream.exception()
                if isinstance(exc, TimeoutError):  # a write blocked past send_timeout_s: a slow reader
                    log.warning("stream ended: the client stopped reading for %g s, request_id=%s",
                                self.send_timeout_s, self.ctx.request_id)  # fmt: skip
                elif isinstance(
                    exc, OSError
                ):  # the client went away between chunks (TimeoutError is one too)
                    self.ctx.client_disconnected = True
                else:
                    raise exc  # type: ignore[misc]
        finally:
            for task in (stream, watch):
                task.cancel()
            with contextlib.suppress(Exception):  # e.g. "already running" if we are being cancelled
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            for cb in self.on_close:
                try:
                    result = cb()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("stream cleanup failed")


def sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def chat_events(
    stream: UpstreamStream,
    ctx: RequestContext,
    upstream: dict[str, Any],
    *,
    served_name: str,
    include_usage: bool,
    engine_failed: Callable[[ServeError], Any],
) -> AsyncIterator[bytes]:
    """OpenAI chat chunks as SSE (`model` = the served name), then `data: [DONE]`; an engine error mid-stream
    becomes one error event before [DONE]. Token counts and timings go into ctx however it ends."""
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    first = last = 0.0
    chunks = 0
    try:
        async for ev in stream.events():
            if ev.get("usage"):
                usage = ev["usage"]
            ev["model"] = served_name
            choices = ev.get("choices") or []
            if not choices:  # the usage-only chunk we asked for
                if include_usage:
                    yield sse(ev)
                continue
            if not include_usage:
                ev.pop("usage", None)
            text = (choices[0].get("delta") or {}).get("content")
            if text:
                last = time.perf_counter()
                if not first:
                    first = last
                    ctx.ttft_ms = (first - ctx.started) * 1000
                parts.append(text)
                chunks += 1
            yield sse(ev)
        yield b"data: [DONE]\n\n"
    except ServeError as exc:
        ctx.err = spec_for(exc).err
        engine_failed(exc)
        log.warning("stream failed, request_id=%s: %s", ctx.request_id, exc.message)
        yield sse(error_body(exc.message, spec_for(exc).type, exc.param, exc.code))
        yield b"data: [DONE]\n\n"
    finally:
        account(ctx, usage, upstream, "".join(parts), chunks)
        if first and last > first:
            ctx.gen_s = last - first


async def generate_events(
    stream: UpstreamStream,
    ctx: RequestContext,
    upstream: dict[str, Any],
    *,
    engine_failed: Callable[[ServeError], Any],
) -> AsyncIterator[bytes]:
    """TGI-style token events as SSE, then one event with `generated_text` and `details`; an engine error
    mid-stream becomes one error event. Token counts and timings go into ctx however it ends."""
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    finish: str | None = None
    first = last = 0.0
    try:
        async for ev in stream.events():
            if ev.get("usage"):
                usage = ev["usage"]
            choices = ev.get("choices") or []
            if not choices:
                continue
            finish = choices[0].get("finish_reason") or finish
            text = (choices[0].get("delta") or {}).get("content")
            if text:
                last = time.perf_counter()
                if not first:
                    first = last
                    ctx.ttft_ms = (first - ctx.started) * 1000
                parts.append(text)
                yield sse(
                    {
                        "index": len(parts),
                        "token": {"text": text, "special": False},
                        "generated_text": None,
                        "details": None,
                    }
                )
        account(ctx, usage, upstream, "".join(parts), len(parts))
        yield sse(
            {
                "index": len(parts) + 1,
                "token": {"text": "", "special": True},
                "generated_text": "".join(parts),
                "details": {
                    "finish_reason": finish,
                    "prompt_tokens": ctx.prompt_tokens,
                    "generated_tokens": ctx.completion_tokens,
                },
            }
        )
    except ServeError as exc:
        ctx.err = spec_for(exc).err
        engine_failed(exc)
        yield sse(error_body(exc.message, spec_for(exc).type, exc.param, exc.code))
    finally:
        account(ctx, usage, upstream, "".join(parts), len(parts))
        if first and last > first:
            ctx.gen_s = last - first
