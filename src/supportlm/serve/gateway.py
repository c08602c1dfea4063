"""Admission: API keys, request rate, token budget, the fair queue, and races against a client's disconnect.

One `Gateway` per app holds the state every request passes through, in this order:

1. `admit()` (from the middleware, before the body is read): API key (401; 429 for an address whose failed
   attempts are spent), the key's request rate (429), the declared body size (413);
2. `check_ready()` (503 while the engine is down) and `charge()`: the key's token budget, prompt estimate
   + max_tokens up front (429);
3. `acquire()`: a slot from the fair scheduler (per-key caps; 503 when the queue is full or the wait
   times out), given up at once if the client leaves while queued;
4. `chat()` / `open_stream()`: the engine call, cancelled if the client leaves first;
5. `refund()`: what the engine did not use goes back to the key's token budget.

A refusal by the gateway's own limits (REFUSAL_CODES) is answered after `refusal_pause()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from prometheus_client import CollectorRegistry
from starlette.types import Receive

from supportlm.errors import SupportLMError
from supportlm.serve.auth import AuthThrottle, KeyStore, presented_key
from supportlm.serve.budgets import make_buckets
from supportlm.serve.engines import Engine, EngineMonitor, UpstreamStream
from supportlm.serve.errors import (
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    ServeError,
    Unauthorized,
    retry_after_header,
    spec_for,
)
from supportlm.serve.limits import RequestRate, TokenBudget, content_length
from supportlm.serve.logging import Metrics, RequestContext, RequestLogger, make_logger
from supportlm.serve.scheduler import FairScheduler, Slot
from supportlm.serve.schemas import shorten
from supportlm.serve.settings import ServeSettings, resolve_model

log = logging.getLogger("supportlm.serve")

T = TypeVar("T")

# refusals by the gateway's own limits (not engine errors): answered after refusal_pause()
REFUSAL_CODES = frozenset({"rate_limit_exceeded", "token_budget_exceeded", "queue_full", "key_queue_full",
                           "too_many_auth_failures"})  # fmt: skip


class Gateway:
    """Everything a request needs, built once per app."""

    def __init__(
        self,
        settings: ServeSettings,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        model_info: dict[str, Any] | None = None,
    ) -> None:
        self.settings = s = settings
        limits = s.limits
        self.engine = engine
        self.metrics = Metrics(registry)
        self.keys = KeyStore.load(
            s.api_keys.get_secret_value() if s.api_keys else None, s.api_keys_file, limits.min_key_length
        )
        redis_url = limits.redis_url.get_secret_value() if limits.redis_url else None
        self.buckets = make_buckets(limits.backend, redis_url, clock)
        self.rate = RequestRate(self.buckets, limits.burst, limits.rate_per_s)
        self.tokens = (
            TokenBudget(self.buckets, limits.token_burst, limits.token_rate_per_s)
            if limits.token_rate_per_s is not None
            else None
        )
        self.auth_throttle = AuthThrottle(self.buckets, limits.auth_fail_burst, limits.auth_fail_rate_per_s)
        self.limiter = FairScheduler(
            limits.max_concurrency,
            limits.max_queue,
            limits.queue_timeout_s,
            per_key_concurrency=limits.per_key_concurrency,
            per_key_queue=limits.per_key_queue,
            fair_window_s=limits.fair_window_s,
            shared_concurrency=limits.shared_concurrency,
            on_change=self.metrics.queue_changed,
            clock=clock,
        )
        self.monitor = EngineMonitor(
            engine, s.engine.health_interval_s, lambda up: self.metrics.engine_up.set(1 if up else 0)
        )
        self.access_logger = make_logger(
            "supportlm.access",
            stdout=s.log.stdout,
            file=s.log.file,
            max_bytes=s.log.max_bytes,
            backups=s.log.backups,
            level=s.log.level,
        )
        self.request_log = RequestLogger(self.access_logger, s.log.prompts)
        self.model_info = model_info if model_info is not None else default_model_info(s)
        self.routes: list[Any] = []  # filled by build_app: the middleware matches requests against them
        self.key_required: set[Callable[..., Any]] = set()  # endpoints that need an API key (per route)
        if not len(self.keys):
            if s.allow_anonymous:
                log.warning("no API keys configured and allow_anonymous=true: the gateway is open to anyone")
            else:
                log.warning("no API keys configured: every /v1 request gets 401 (set SUPPORTLM_API_KEYS)")

    @property
    def auth_mode(self) -> str:
        return "api_keys" if len(self.keys) else ("anonymous" if self.settings.allow_anonymous else "no_keys")

    # -------------------------------------------------------- admission (middleware, before the body)

    async def admit(self, ctx: RequestContext, headers: Sequence[tuple[bytes, bytes]], address: str) -> None:
        """Auth (401, and 429 for an address whose failed attempts are spent), request rate (429), size (413)."""
        s = self.settings
        if len(self.keys):
            wait = await self.auth_throttle.blocked(address)
            if wait > 0:
                ctx.quiet = not self.auth_throttle.should_log(address)
                self.metrics.auth_throttled.inc()
                raise RateLimited(
                    f"Too many failed authentications from this address; retry in {math.ceil(wait)} s",
                    code="too_many_auth_failures",
                    retry_after=wait,
                )
            key = presented_key(headers)
            key_id = self.keys.check(key) if key is not None else None
            if key_id is None:
                await self.auth_throttle.failed(address)
                if key is None:
                    raise Unauthorized(
                        "Missing API key: send `Authorization: Bearer <key>` (or `X-API-Key: <key>`)",
                        code="missing_api_key",
                    )
                raise Unauthorized("Invalid API key", code="invalid_api_key")
        elif s.allow_anonymous:
            key_id = "anonymous"
        else:
            raise Unauthorized(
                "No API keys are configured on this server: set SUPPORTLM_API_KEYS or SUPPORTLM_API_KEYS_FILE "
                "(or SUPPORTLM_ALLOW_ANONYMOUS=true for local use)",
                code="no_keys_configured",
            )
        ctx.key_id = key_id
        wait = await self.rate.acquire(key_id)
        if wait > 0:
            raise RateLimited(
                f"Rate limit exceeded for key `{key_id}` ({s.limits.burst} requests burst, "
                f"{s.limits.rate_per_s:g}/s refill); retry in {math.ceil(wait)} s",
                code="rate_limit_exceeded",
                retry_after=wait,
            )
        size = content_length(headers)
        if size is not None and size > s.limits.max_body_bytes:
            raise PayloadTooLarge(
                f"Request body is {size:,} bytes; the limit is {s.limits.max_body_bytes:,}",
                code="body_too_large",
            )

    async def refusal_pause(self, exc: ServeError) -> None:
        """Hold a refusal for min(refusal_delay_s, its Retry-After header) before answering it. A client
        that ignores Retry-After otherwise retries at once, and on a small box the refusals it costs
        (parsing, logging, the socket) are taken from the engine's cores; a sleeping answer costs nothing."""
        delay = self.settings.limits.refusal_delay_s
        if exc.code in REFUSAL_CODES and delay > 0:
            await asyncio.sleep(min(delay, retry_after_header(exc.retry_after or 1.0)))

    # -------------------------------------------------------- engine calls

    def check_model(self, requested: str | None) -> None:
        served = self.settings.model.served_name
        if requested is not None and requested not in {served, self.engine.model}:
            raise ModelNotFound(
                f"`model` must be `{served}` or omitted. Given: {shorten(requested)!r}",
                param="model",
                code="model_not_found",
            )

    def check_ignore_eos(self, ignore_eos: bool) -> None:
        """`ignore_eos` goes upstream only to engines that honour it; elsewhere it would be dropped silently
        and a benchmark would measure replies of whatever length."""
        if ignore_eos and not self.engine.spec.ignore_eos:
            raise InvalidRequest(
                f"`ignore_eos` is not supported by this server's engine ({self.engine.kind}). Given: true",
                param="ignore_eos",
                code="unsupported_parameter",
            )

    def check_ready(self) -> None:
        if self.monitor.ready is False:  # why (host, error) is in the server log, not for clients
            raise EngineUnavailable(
                "The engine is not ready; retry shortly",
                code="engine_unavailable",
                retry_after=self.settings.engine.retry_after_s,
            )

    def engine_failed(self, exc: ServeError) -> ServeError:
        """Book-keeping for an error from the engine call: an unreachable engine is marked down at once
        (later requests fail fast until the monitor sees it again); engine-side failures are counted."""
        if isinstance(exc, EngineUnavailable):
            self.monitor.mark_down(exc.message)
            exc.retry_after = exc.retry_after or self.settings.engine.retry_after_s
        if spec_for(exc).err in ("engine", "timeout", "overloaded"):  # not: the engine rejecting a prompt
            self.metrics.engine_errors.labels(exc.code or spec_for(exc).err).inc()
        return exc

    async def charge(self, ctx: RequestContext, body: dict[str, Any]) -> None:
        """Token budget: prompt estimate + max_tokens up front (429 when the key cannot afford it)."""
        if self.tokens is None:
            return
        cost = (
            estimate_tokens("".join(str(m.get("content", "")) for m in body["messages"])) + body["max_tokens"]
        )
        wait = await self.tokens.charge(ctx.key_id, cost)
        if wait > 0:
            limits = self.settings.limits
            raise RateLimited(
                f"Token budget exceeded for key `{ctx.key_id}`: this request may use {cost:,} tokens "
                f"(prompt estimate + max_tokens; {limits.token_burst:,} burst, {limits.token_rate_per_s:g}/s "
                f"refill); retry in {math.ceil(wait)} s or ask for fewer max_tokens",
                code="token_budget_exceeded",
                retry_after=wait,
            )
        ctx.charged_tokens = cost

    async def refund(self, ctx: RequestContext) -> None:
        """Give back what the engine did not use (usage from the engine, else the estimate)."""
        if self.tokens is None or not ctx.charged_tokens:
            return
        used = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
        charged, ctx.charged_tokens = ctx.charged_tokens, 0
        try:
            await self.tokens.refund(ctx.key_id, charged - used)
        except Exception:  # a refund must never fail the request that earned it
            log.exception("token refund failed")

    async def acquire(self, ctx: RequestContext, body: dict[str, Any], request: Request) -> Slot | None:
        """A slot, or None if the client left while queued (its place goes to the next waiter: a request
        nobody waits for must not run later)."""
        self.check_ready()
        await self.charge(ctx, body)
        try:
            slot = await unless_client_leaves(ctx, request.receive, self.limiter.acquire(ctx.key_id or "-"))
        except BaseException:
            await self.refund(ctx)  # never ran: everything back
            raise
        if slot is None:
            await self.refund(ctx)
        return slot

    async def chat(
        self, ctx: RequestContext, body: dict[str, Any], request: Request
    ) -> dict[str, Any] | None:
        """Non-streamed completion. None if the client went away first: the engine call is cancelled
        (closing the upstream connection makes llama-server, TGI and vLLM stop generating)."""
        slot = await self.acquire(ctx, body, request)
        if slot is None:
            return None
        try:
            return await unless_client_leaves(ctx, request.receive, self.engine.chat(body))
        except ServeError as exc:
            raise self.engine_failed(exc) from None
        finally:
            slot.release()

    async def open_stream(
        self, ctx: RequestContext, body: dict[str, Any], request: Request
    ) -> tuple[UpstreamStream, Callable[[], None]] | None:
        """The engine's stream and the slot's release, or None if the client left while queued."""
        slot = await self.acquire(ctx, body, request)
        if slot is None:
            return None
        try:
            return await self.engine.open_stream(body), slot.release
        except BaseException as exc:
            slot.release()
            await self.refund(ctx)
            if isinstance(exc, ServeError):
                raise self.engine_failed(exc) from None
            raise

    def upstream_body(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int | None,
        sampling: dict[str, Any],
    ) -> dict[str, Any]:
        operator = self.settings.system_prompt
        if operator:
            # the operator's system prompt always leads (a client cannot remove the guardrail); a client's
            # own system messages follow it in one system turn, so templates with one system slot work
            client = [m["content"] for m in messages if m["role"] == "system"]
            rest = [m for m in messages if m["role"] != "system"]
            messages = [{"role": "system", "content": "\n\n".join([operator, *client])}, *rest]
        body = {"messages": messages, "max_tokens": max_tokens or self.settings.limits.default_max_tokens}
        body.update({k: v for k, v in sampling.items() if v is not None})
        return body


def default_model_info(s: ServeSettings) -> dict[str, Any]:
    if s.engine.kind == "llamacpp" and s.manages_engine:
        try:
            path, source = resolve_model(s)
            return {"model_path": str(path), "model_source": source}
        except SupportLMError:  # no GGUF at all: /readyz says so (serve() would have refused to start)
            return {"model_path": str(s.model.path), "model_source": "missing"}
    return {"model_source": "external"}


# ---------------------------------------------------------------- the client going away


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(ctx: RequestContext, receive: Receive, work: Awaitable[T]) -> T | None:
    """`work`'s result (or its exception), or None if the client disconnected first: then `work` is
    cancelled and awaited, so its own clean-up has run (a queued waiter hands a slot granted meanwhile on;
    an engine call closes its upstream connection), and ctx.client_disconnected is set. `work` must not
    itself return None. If we are cancelled, `work` is cancelled too."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        ctx.client_disconnected = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    finally:
        task.cancel()  # a no-op once it is done
        gone.cancel()


# ---------------------------------------------------------------- usage accounting


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def reply_text(data: dict[str, Any]) -> str:
    """The assistant's text of a non-streamed chat completion ("" if the body has none)."""
    try:
        return str(data["choices"][0]["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def account(
    ctx: RequestContext,
    usage: dict[str, Any] | None,
    upstream: dict[str, Any],
    reply: str,
    chunks: int | None = None,
) -> None:
    """Token counts from the engine's usage, else estimated (prompt: chars/4; completion: content chunks)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt_chars = "".join(str(m.get("content", "")) for m in upstream["messages"])
    ctx.prompt_tokens = int(usage.get("prompt_tokens") or estimate_tokens(prompt_chars))
    completion = usage.get("completion_tokens")
    ctx.completion_tokens = int(completion if completion is not None else (chunks or estimate_tokens(reply)))
    ctx.reply = reply
