"""Streaming: server-sent events from the engine's stream, and the response that guards them.

`EngineStreamResponse` frees the queue slot the moment the client leaves (not at the next token), ends a
stream whose client stops reading (`limits.send_timeout_s`) or that runs past `limits.max_stream_s`, and
always runs its clean-ups (close the upstream stream, release the slot, refund the token budget).
`chat_events` / `generate_events` turn the engine's OpenAI chunks into the two routes' event bodies;
`StreamTally` does the per-chunk accounting they share (usage, timings, engine errors, token counts).
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


class StreamTally:
    """The per-chunk accounting both SSE formats share: the engine's usage, the finish reason, the content
    pieces and their timings (ttft into ctx at the first), an engine error, and the closing `account`."""

    def __init__(
        self, ctx: RequestContext, upstream: dict[str, Any], engine_failed: Callable[[ServeError], Any]
    ) -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.engine_failed = engine_failed
        self.parts: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.first = self.last = 0.0

    def observe(self, ev: dict[str, Any]) -> str | None:
        """Record one engine chunk; its content text (None for a chunk without choices, e.g. usage-only)."""
        if ev.get("usage"):
            self.usage = ev["usage"]
        choices = ev.get("choices") or []
        if not choices:
            return None
        self.finish = choices[0].get("finish_reason") or self.finish
        text = (choices[0].get("delta") or {}).get("content")
        if text:
            self.last = time.perf_counter()
            if not self.first:
                self.first = self.last
                self.ctx.ttft_ms = (self.first - self.ctx.started) * 1000
            self.parts.append(text)
        return text

    @property
    def reply(self) -> str:
        return "".join(self.parts)

    def fail(self, exc: ServeError) -> bytes:
        """An engine error mid-stream: note it (ctx, `engine_failed`) and return its error event."""
        self.ctx.err = spec_for(exc).err
        self.engine_failed(exc)
        return sse(error_body(exc.message, spec_for(exc).type, exc.param, exc.code))

    def account(self) -> None:
        """Token counts into ctx (usage if the engine sent it, else estimates from the content pieces)."""
        account(self.ctx, self.usage, self.upstream, self.reply, len(self.parts))

    def close(self) -> None:
        """However the stream ended: the token counts and the generation time into ctx."""
        self.account()
        if self.first and self.last > self.first:
            self.ctx.gen_s = self.last - self.first


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
    tally = StreamTally(ctx, upstream, engine_failed)
    try:
        async for ev in stream.events():
            tally.observe(ev)
            ev["model"] = served_name
            if not ev.get("choices"):  # the usage-only chunk we asked for
                if include_usage:
                    yield sse(ev)
                continue
            if not include_usage:
                ev.pop("usage", None)
            yield sse(ev)
        yield b"data: [DONE]\n\n"
    except ServeError as exc:
        event = tally.fail(exc)
        log.warning("stream failed, request_id=%s: %s", ctx.request_id, exc.message)
        yield event
        yield b"data: [DONE]\n\n"
    finally:
        tally.close()


async def generate_events(
    stream: UpstreamStream,
    ctx: RequestContext,
    upstream: dict[str, Any],
    *,
    engine_failed: Callable[[ServeError], Any],
) -> AsyncIterator[bytes]:
    """TGI-style token events as SSE, then one event with `generated_text` and `details`; an engine error
    mid-stream becomes one error event. Token counts and timings go into ctx however it ends."""
    tally = StreamTally(ctx, upstream, engine_failed)
    try:
        async for ev in stream.events():
            text = tally.observe(ev)
            if text:
                yield sse({"index": len(tally.parts), "token": {"text": text, "special": False},
                           "generated_text": None, "details": None})  # fmt: skip
        tally.account()  # the closing event reports the counts
        details = {"finish_reason": tally.finish, "prompt_tokens": ctx.prompt_tokens,
                   "generated_tokens": ctx.completion_tokens}  # fmt: skip
        yield sse({"index": len(tally.parts) + 1, "token": {"text": "", "special": True},
                   "generated_text": tally.reply, "details": details})  # fmt: skip
    except ServeError as exc:
        yield tally.fail(exc)
    finally:
        tally.close()
