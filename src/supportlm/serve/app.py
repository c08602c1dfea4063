"""FastAPI gateway in front of one OpenAI-compatible engine (llama-server, TGI or vLLM).

    app = build_app(ServeSettings(), engine=None)   # engine None: built from settings, closed with the app

Routes (one table; docs at /docs, schema at /openapi.json):

| route                      | auth | what                                                                   |
|----------------------------|------|------------------------------------------------------------------------|
| POST /v1/chat/completions  | key  | OpenAI chat body; `stream: true` -> SSE `data: {chunk}` ... `data: [DONE]` |
| POST /v1/generate          | key  | flat `{prompt, max_new_tokens, temperature, ...}` (DESIGN.md's contract)  |
| GET  /v1/models            | key  | the served model                                                       |
| GET  /healthz              | -    | process is up (200)                                                    |
| GET  /readyz               | -    | engine answers (200) or not (503 `engine_not_ready` + Retry-After; 503 `engine_down` once the supervisor gave up) |
| GET  /metrics              | -    | Prometheus text                                                        |
| GET  /playground           | -    | static chat page (no external resources)                               |

Order of checks for /v1/*: request id -> API key (401) -> rate limit (429) -> Content-Length (413) ->
JSON + schema (422; a body that streams past the limit: 413) -> engine ready (503) ->
queue (503) -> engine (504 on timeout, 503 on failure). Invalid JSON, bad UTF-8 and a missing
`Content-Type: application/json` are all 422 with a message naming the problem (not 400, so every
malformed-body case has one status). Every answer carries `X-Request-ID` (the client's, if it sent a
sane one). Nothing but the error table's body ever reaches a client: one catch-all turns any
other exception into a 500 naming the request id, and the process keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supportlm.errors import SupportLMError
from supportlm.serve.auth import AuthThrottle, KeyStore, presented_key
from supportlm.serve.budgets import make_buckets
from supportlm.serve.engines import Engine, EngineMonitor, UpstreamStream, engine_from_settings
from supportlm.serve.errors import (
    HTTP_STATUS_SPECS,
    INTERNAL,
    EngineUnavailable,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    ServeError,
    Unauthorized,
    error_body,
    error_response,
    serve_error_response,
    spec_for,
    validation_message,
)
from supportlm.serve.limits import RequestRate, TokenBudget, content_length, limit_body
from supportlm.serve.logging import Metrics, RequestContext, RequestLogger, close_logger, make_logger
from supportlm.serve.scheduler import FairScheduler, Slot
from supportlm.serve.settings import ServeSettings, load_settings, resolve_model

log = logging.getLogger("supportlm.serve")

UNINSTRUMENTED = frozenset({"/healthz", "/readyz", "/metrics"})
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: `$` would let a trailing newline in
# C0 controls except \t \n \r, DEL, and lone surrogates (valid JSON escapes, invalid text for an engine)
BAD_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
PLAYGROUND_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# ================================================================ request/response schemas


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounded(name: str, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> Any:
    """A number field whose error reads like TGI's: "`temperature` must be >= 0.0 and <= 2.0. Given: 3.5".
    The bounds also go into the JSON schema (so /docs and schemathesis see them)."""
    op = ">" if lo_open else ">="

    def check(v: float) -> float:
        ok_lo = v > lo if lo_open else v >= lo
        if not (ok_lo and v <= hi):  # NaN fails both comparisons
            raise ValueError(f"`{name}` must be {op} {lo} and <= {hi}. Given: {_short(v)}")
        return v

    schema = {"exclusiveMinimum" if lo_open else "minimum": lo, "maximum": hi}
    return Annotated[int if integer else float, AfterValidator(check), Field(json_schema_extra=schema)]


def _text(name: str, max_chars: int) -> Any:
    """A string without control characters (except tab/newline/CR) or lone surrogates, at most max_chars."""

    def check(v: str) -> str:
        if len(v) > max_chars:
            raise ValueError(
                f"`{name}` must be at most {max_chars:,} characters. Given: {len(v):,} characters"
            )
        bad = BAD_CHARS_RE.search(v)
        if bad:
            raise ValueError(
                f"`{name}` must not contain control characters or unpaired surrogates. "
                f"Given: U+{ord(bad.group()):04X} at character {bad.start()}"
            )
        return v

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"maxLength": max_chars})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class GenerateDetails(BaseModel):
    finish_reason: str | None = None
    prompt_tokens: int
    generated_tokens: int


class GenerateResponse(BaseModel):
    generated_text: str
    model: str
    details: GenerateDetails


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "supportlm"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def request_models(s: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(ChatRequest, GenerateRequest) with this server's limits baked into validators and schema."""
    max_tok = s.limits_max_tokens
    MaxTokens = _bounded("max_tokens", 1, max_tok, integer=True)
    MaxNewTokens = _bounded("max_new_tokens", 1, max_tok, integer=True)
    Temperature = _bounded("temperature", 0.0, 2.0)
    TopP = _bounded("top_p", 0.0, 1.0, lo_open=True)
    Penalty = _bounded("penalty", -2.0, 2.0)
    Seed = _bounded("seed", 0, 2**32 - 1, integer=True)
    N = _bounded("n", 1, 1, integer=True)
    Content = _text("content", s.limits_max_prompt_chars)
    StopWord = _text("stop", 64)
    # a string or up to 4 strings; normalised to a list before validation so errors name `stop`, not a
    # union branch (`stop.str`), while the schema still shows both forms
    Stop = Annotated[
        list[StopWord],  # type: ignore[valid-type]
        BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
        Field(max_length=4),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "maxLength": 64},
                    {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 4},
                ]
            }
        ),
    ]

    class ChatMessage(_Body):
        role: Literal["system", "user", "assistant"]
        content: Content  # type: ignore[valid-type]
        name: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None

    class StreamOptions(_Body):
        include_usage: bool = False

    class ChatRequest(_Body):
        """OpenAI chat completion request (the subset a single-model support assistant needs)."""

        model: Annotated[str, Field(max_length=256)] | None = Field(
            None, description=f"`{s.model_served_name}` or omitted"
        )
        messages: list[ChatMessage] = Field(
            json_schema_extra={"minItems": 1, "maxItems": s.limits_max_messages},
            description=f"1 to {s.limits_max_messages} messages; contents together at most "
            f"{s.limits_max_prompt_chars:,} characters",
        )
        max_tokens: MaxTokens | None = None  # type: ignore[valid-type]
        max_completion_tokens: MaxTokens | None = None  # type: ignore[valid-type]
        temperature: Temperature | None = None  # type: ignore[valid-type]
        top_p: TopP | None = None  # type: ignore[valid-type]
        n: N | None = Field(None, description="must be 1")  # type: ignore[valid-type]
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: Stop | None = None  # type: ignore[valid-type]
        seed: Seed | None = None  # type: ignore[valid-type]
        presence_penalty: Penalty | None = None  # type: ignore[valid-type]
        frequency_penalty: Penalty | None = None  # type: ignore[valid-type]
        user: Annotated[str, Field(max_length=256)] | None = None

        @field_validator("messages")
        @classmethod
        def _messages(cls, v: list[Any]) -> list[Any]:
            if not v:
                raise ValueError("`messages` must contain at least one message. Given: []")
            if len(v) > s.limits_max_messages:
                raise ValueError(
                    f"`messages` must hold at most {s.limits_max_messages} messages. Given: {len(v)}"
                )
            total = sum(len(m.content) for m in v)
            if total > s.limits_max_prompt_chars:
                raise ValueError(
                    f"`messages` contents must total at most {s.limits_max_prompt_chars:,} characters "
                    f"(~{s.limits_max_prompt_chars // 4:,} tokens). Given: {total:,} characters"
                )
            return v

        @model_validator(mode="after")
        def _one_max(self) -> ChatRequest:
            if self.max_tokens is not None and self.max_completion_tokens is not None:
                raise ValueError("give `max_tokens` or `max_completion_tokens`, not both")
            return self

    class GenerateRequest(_Body):
        """Single-turn generation (DESIGN.md: flat, TGI parameter names). The prompt is sent as the user
        message through the model's chat template, after `system` (or the server's system prompt)."""

        prompt: Content = Field(description="the customer's message")  # type: ignore[valid-type]
        system: Content | None = None  # type: ignore[valid-type]
        max_new_tokens: MaxNewTokens | None = None  # type: ignore[valid-type]
        temperature: Temperature | None = None  # type: ignore[valid-type]
        top_p: TopP | None = None  # type: ignore[valid-type]
        stop: Stop | None = None  # type: ignore[valid-type]
        seed: Seed | None = None  # type: ignore[valid-type]
        stream: bool = False

        @field_validator("prompt")
        @classmethod
        def _prompt(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("`prompt` must not be empty. Given: ''")
            return v

        @model_validator(mode="after")
        def _total(self) -> GenerateRequest:
            total = len(self.prompt) + len(self.system or "")
            if total > s.limits_max_prompt_chars:
                raise ValueError(
                    f"`prompt` and `system` must total at most {s.limits_max_prompt_chars:,} characters "
                    f"(~{s.limits_max_prompt_chars // 4:,} tokens). Given: {total:,} characters"
                )
            return self

    return ChatRequest, GenerateRequest


# ================================================================ the gateway's state


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
        self.engine = engine
        self.metrics = Metrics(registry)
        self.keys = KeyStore.load(
            s.api_keys.get_secret_value() if s.api_keys else None, s.api_keys_file, s.limits_min_key_length
        )
        redis_url = s.limits_redis_url.get_secret_value() if s.limits_redis_url else None
        self.buckets = make_buckets(s.limits_backend, redis_url, clock)
        self.rate = RequestRate(self.buckets, s.limits_burst, s.limits_rate_per_s)
        self.tokens = (
            TokenBudget(self.buckets, s.limits_token_burst, s.limits_token_rate_per_s)
            if s.limits_token_rate_per_s is not None
            else None
        )
        self.auth_throttle = AuthThrottle(self.buckets, s.limits_auth_fail_burst, s.limits_auth_fail_rate_per_s)
        self.limiter = FairScheduler(
            s.limits_max_concurrency,
            s.limits_max_queue,
            s.limits_queue_timeout_s,
            per_key_concurrency=s.limits_per_key_concurrency,
            per_key_queue=s.limits_per_key_queue,
            fair_window_s=s.limits_fair_window_s,
            shared_concurrency=s.limits_shared_concurrency,
            on_change=self.metrics.queue_changed,
            clock=clock,
        )
        self.monitor = EngineMonitor(
            engine, s.engine_health_interval_s, lambda up: self.metrics.engine_up.set(1 if up else 0)
        )
        self.access_logger = make_logger(
            "supportlm.access",
            stdout=s.log_stdout,
            file=s.log_file,
            max_bytes=s.log_max_bytes,
            backups=s.log_backups,
            level=s.log_level,
        )
        self.request_log = RequestLogger(self.access_logger, s.log_prompts)
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
                f"Rate limit exceeded for key `{key_id}` ({s.limits_burst} requests burst, "
                f"{s.limits_rate_per_s:g}/s refill); retry in {math.ceil(wait)} s",
                code="rate_limit_exceeded",
                retry_after=wait,
            )
        size = content_length(headers)
        if size is not None and size > s.limits_max_body_bytes:
            raise PayloadTooLarge(
                f"Request body is {size:,} bytes; the limit is {s.limits_max_body_bytes:,}",
                code="body_too_large",
            )

    # -------------------------------------------------------- engine calls

    def check_model(self, requested: str | None) -> None:
        allowed = {self.settings.model_served_name, self.engine.model}
        if requested is not None and requested not in allowed:
            raise ModelNotFound(
                f"`model` must be `{self.settings.model_served_name}` or omitted. Given: {_short(requested)!r}",
                param="model",
                code="model_not_found",
            )

    def check_ready(self) -> None:
        if self.monitor.ready is False:  # why (host, error) is in the server log, not for clients
            raise EngineUnavailable(
                "The engine is not ready; retry shortly",
                code="engine_unavailable",
                retry_after=self.settings.engine_retry_after_s,
            )

    def _engine_down(self, exc: ServeError) -> ServeError:
        """Book-keeping for an error from the engine call: an unreachable engine is marked down at once
        (later requests fail fast until the monitor sees it again); engine-side failures are counted."""
        if isinstance(exc, EngineUnavailable):
            self.monitor.mark_down(exc.message)
            exc.retry_after = exc.retry_after or self.settings.engine_retry_after_s
        if spec_for(exc).err in ("engine", "timeout", "overloaded"):  # not: the engine rejecting a prompt
            self.metrics.engine_errors.labels(exc.code or spec_for(exc).err).inc()
        return exc

    async def charge(self, ctx: RequestContext, body: dict[str, Any]) -> None:
        """Token budget: prompt estimate + max_tokens up front (429 when the key cannot afford it)."""
        if self.tokens is None:
            return
        cost = estimate_tokens("".join(str(m.get("content", "")) for m in body["messages"])) + body["max_tokens"]
        wait = await self.tokens.charge(ctx.key_id, cost)
        if wait > 0:
            s = self.settings
            raise RateLimited(
                f"Token budget exceeded for key `{ctx.key_id}`: this request may use {cost:,} tokens "
                f"(prompt estimate + max_tokens; {s.limits_token_burst:,} burst, {s.limits_token_rate_per_s:g}/s "
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

    async def refusal_pause(self, exc: ServeError) -> None:
        """Hold a refusal for min(refusal_delay_s, its Retry-After header) before answering it. A client
        that ignores Retry-After otherwise retries at once, and on a small box the refusals it costs
        (parsing, logging, the socket) are taken from the engine's cores; a sleeping answer costs nothing."""
        if exc.code in REFUSAL_CODES and self.settings.limits_refusal_delay_s > 0:
            header = max(1, math.ceil(exc.retry_after or 1.0))  # what serve_error_response sends
            await asyncio.sleep(min(self.settings.limits_refusal_delay_s, header))

    async def acquire(self, ctx: RequestContext, body: dict[str, Any], request: Request) -> Slot | None:
        """A slot, or None if the client left while queued (its place goes to the next waiter: a request
        nobody waits for must not run later)."""
        self.check_ready()
        await self.charge(ctx, body)
        waiting = asyncio.ensure_future(self.limiter.acquire(ctx.key_id or "-"))
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            ctx.client_disconnected = True
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            if waiting.done() and not waiting.cancelled() and isinstance(waiting.result(), Slot):
                waiting.result().release()  # granted as we gave up (Python 3.11's wait_for can do that)
            await self.refund(ctx)
            return None
        except BaseException:
            waiting.cancel()
            await self.refund(ctx)  # never ran: everything back
            raise
        finally:
            gone.cancel()

    async def chat(self, ctx: RequestContext, body: dict[str, Any], request: Request) -> dict[str, Any] | None:
        """Non-streamed completion. None if the client went away first: the engine call is cancelled
        (closing the upstream connection makes llama-server, TGI and vLLM stop generating)."""
        slot = await self.acquire(ctx, body, request)
        if slot is None:
            return None
        call = asyncio.ensure_future(self.engine.chat(body))
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                ctx.client_disconnected = True
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
                return None
            return call.result()
        except ServeError as exc:
            raise self._engine_down(exc) from None
        finally:
            gone.cancel()
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
                raise self._engine_down(exc) from None
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
        body = {"messages": messages, "max_tokens": max_tokens or self.settings.limits_default_max_tokens}
        body.update({k: v for k, v in sampling.items() if v is not None})
        return body


def default_model_info(s: ServeSettings) -> dict[str, Any]:
    if s.engine_kind == "llamacpp" and s.manages_engine:
        try:
            path, source = resolve_model(s)
            return {"model_path": str(path), "model_source": source}
        except SupportLMError:  # no GGUF at all: /readyz says so (serve() would have refused to start)
            return {"model_path": str(s.model_path), "model_source": "missing"}
    return {"model_source": "external"}


# refusals by the gateway's own limits (not engine errors): answered after refusal_pause()
REFUSAL_CODES = frozenset({"rate_limit_exceeded", "token_budget_exceeded", "queue_full", "key_queue_full",
                           "too_many_auth_failures"})  # fmt: skip


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


async def _wait_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


# ================================================================ middleware + streaming response


class GatewayMiddleware:
    """Outermost layer: request id, admission (auth, rate, size), catch-all, one log line + metrics."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gw = gateway

    def _route(self, scope: Scope) -> Any:
        """The route this request will reach (matched like the router does, so a root path or a mount
        prefix changes nothing), or None for an unknown path."""
        from starlette.routing import Match

        partial = None
        for route in self.gw.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route  # right path, wrong method: the router answers 405
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        rid = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), "")
        if not REQUEST_ID_RE.fullmatch(rid):
            rid = uuid.uuid4().hex
        ctx = RequestContext(rid, scope["method"], scope["path"], engine=self.gw.engine.kind)
        state = scope.setdefault("state", {})
        state["ctx"] = ctx
        state["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ctx.status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            await send(message)

        route = self._route(scope)
        try:
            if route is not None and getattr(route, "endpoint", None) in self.gw.key_required:
                await self.gw.admit(ctx, headers, client_address(scope))
                receive = limit_body(receive, self.gw.settings.limits_max_body_bytes)
            await self.app(scope, receive, send_with_id)
        except ServeError as exc:  # admission: nothing has been sent yet
            ctx.err = spec_for(exc).err
            await self.gw.refusal_pause(exc)
            await _with_auth_header(serve_error_response(exc), exc)(scope, receive, send_with_id)
        except Exception:
            ctx.err = INTERNAL.err
            log.exception("unhandled error, request_id=%s", rid)
            if not started:
                await internal_error(rid)(scope, receive, send_with_id)
            # else: a stream was under way; the connection just ends
        finally:
            ctx.route = getattr(route, "path", None) or "other"
            if ctx.status is None:
                ctx.status = 500
            if ctx.route not in UNINSTRUMENTED:
                latency = time.perf_counter() - ctx.started
                try:
                    self.gw.metrics.observe(ctx, latency)
                    if not ctx.quiet:  # throttled auth failures: counted, one log line per address a minute
                        self.gw.request_log.log(ctx, latency * 1000)
                except Exception:  # observability must never fail a request
                    log.exception("request log/metrics failed")


def internal_error(rid: str) -> JSONResponse:
    return error_response(
        500, f"Internal error (request id {rid}); it has been logged", INTERNAL.type, code="internal_error"
    )


def _with_auth_header(response: Response, exc: ServeError) -> Response:
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


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
        watch = asyncio.ensure_future(_wait_disconnect(receive))
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
                elif isinstance(exc, OSError):  # the client went away between chunks (TimeoutError is one too)
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


# ================================================================ the app


def build_app(
    settings: ServeSettings | None = None,
    engine: Engine | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    registry: CollectorRegistry | None = None,
    model_info: dict[str, Any] | None = None,
    engine_down: Callable[[], bool] | None = None,
) -> FastAPI:
    """The gateway app.

    Args:
        settings: limits, keys, logging, engine location (default: from SUPPORTLM_* env vars).
        engine: the upstream; None = `Engine(settings.engine_base_url, kind=settings.engine_kind, ...)`,
            owned (closed) by the app. A passed engine stays the caller's to close.
        clock: monotonic seconds for the rate limiter (tests inject a fake one).
        registry: Prometheus registry (default: a fresh one per app).
        model_info: what /readyz reports about the served model (serve() passes the resolved GGUF).
        engine_down: true once the engine's supervisor has given up restarting it (serve() passes it);
            /readyz then answers 503 `engine_down` for good instead of "not ready yet".
    """
    s = settings or load_settings()
    owns_engine = engine is None
    if engine is None:
        engine = engine_from_settings(s)
    gw = Gateway(s, engine, clock=clock, registry=registry, model_info=model_info)
    ChatRequest, GenerateRequest = request_models(s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.monitor.start()
        try:
            yield
        finally:
            await gw.monitor.stop()
            await gw.buckets.aclose()
            if owns_engine:
                await engine.aclose()
            close_logger(gw.access_logger)

    app = FastAPI(
        title="supportlm gateway",
        version="0.1.0",
        description=(__doc__ or "").split("\n\n")[0],
        lifespan=lifespan,
        # the docs pages load their JS from a CDN, on the origin where the playground keeps the key: off
        # unless asked for (SUPPORTLM_DOCS=true); /openapi.json is always there
        docs_url="/docs" if s.docs else None,
        redoc_url="/redoc" if s.docs else None,
    )
    app.state.gateway = gw

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "missing or invalid API key"},
        404: {"model": ErrorBody, "description": "unknown `model`"},
        413: {"model": ErrorBody, "description": "body too large"},
        422: {"model": ErrorBody, "description": "invalid body; `param` names the field"},
        429: {"model": ErrorBody, "description": "rate limit; see Retry-After"},
        503: {"model": ErrorBody, "description": "engine not ready or queue full; see Retry-After"},
        504: {"model": ErrorBody, "description": "engine timeout"},
    }
    # OpenAPI < 3.2: the text/event-stream schema describes one event
    sse_doc = {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] to end"}},
            }
        }
    }

    # -------------------------------------------------------- exception handlers (one place)

    def _note(request: Request, err: str) -> None:
        ctx = getattr(request.state, "ctx", None)
        if ctx is not None:
            ctx.err = err

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> Response:
        _note(request, spec_for(exc).err)
        await gw.refusal_pause(exc)
        return _with_auth_header(serve_error_response(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        _note(request, "validation")
        message, param = validation_message(exc.errors())
        return error_response(422, message, "invalid_request_error", param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        spec = HTTP_STATUS_SPECS.get(exc.status_code)
        if spec is None:
            spec = INTERNAL if exc.status_code >= 500 else HTTP_STATUS_SPECS[400]
            status = exc.status_code
        else:
            status = spec.status
        _note(request, spec.err)
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            message = (
                f"Body is not valid UTF-8: byte 0x{cause.object[cause.start]:02x} at position {cause.start}"
            )
        elif exc.status_code == 400:
            message = f"Body could not be parsed as JSON ({type(cause).__name__ if cause else exc.detail})"
        elif exc.status_code == 404:
            message = f"No route {request.method} {request.url.path[:200]}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path[:200]}"
        else:
            message = str(exc.detail)
        code = {400: "invalid_body", 404: "unknown_route", 405: "method_not_allowed", 413: "body_too_large"}
        return error_response(
            status, message, spec.type, code=code.get(exc.status_code), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unhandled(
        request: Request, exc: Exception
    ) -> Response:  # backup; the middleware catches first
        _note(request, INTERNAL.err)
        log.error("unhandled error", exc_info=exc)
        return internal_error(getattr(request.state, "request_id", "-"))

    # -------------------------------------------------------- health, metrics, playground

    @app.get("/healthz", tags=["ops"], summary="Process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Engine loaded and answering",
        responses={503: {"model": ErrorBody, "description": "engine not ready (`type: healthcheck`)"}},
    )
    async def readyz() -> Response:
        """From the background monitor's last probe: this route never probes the engine itself (a flood of
        /readyz cannot load the engine or spend an external engine's quota), and it names no host, path
        or upstream error (those are in the server log)."""
        if engine_down is not None and engine_down():
            return error_response(
                503,
                "Engine down: it crashed repeatedly and is no longer restarted; see the server log",
                "healthcheck",
                code="engine_down",
            )
        if gw.monitor.ready is not True:
            return error_response(
                503,
                "Engine not ready" if gw.monitor.ready is False else "Engine starting: not checked yet",
                "healthcheck",
                code="engine_not_ready",
                retry_after=s.engine_retry_after_s,
            )
        return JSONResponse({"status": "ready", "model": s.model_served_name})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/playground", include_in_schema=False)
    async def playground() -> Response:
        html = resources.files("supportlm.serve").joinpath("static/playground.html").read_text("utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PLAYGROUND_CSP})

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/playground")

    # -------------------------------------------------------- inference

    @app.get("/v1/models", tags=["inference"], response_model=ModelList, responses={401: errors[401]})
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=s.model_served_name)])

    @app.post(
        "/v1/chat/completions",
        tags=["inference"],
        summary="OpenAI-compatible chat completion (stream: true -> SSE)",
        response_model=ChatCompletion,
        responses={200: {"content": sse_doc}, **errors},
    )
    @_body_type(ChatRequest)
    async def chat_completions(request: Request, body: Any) -> Response:
        req: Any = body
        ctx: RequestContext = request.state.ctx
        gw.check_model(req.model)
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        upstream = gw.upstream_body(
            messages,
            req.max_completion_tokens or req.max_tokens,
            {
                "temperature": req.temperature,
                "top_p": req.top_p,
                "stop": req.stop,
                "seed": req.seed,
                "presence_penalty": req.presence_penalty,
                "frequency_penalty": req.frequency_penalty,
            },
        )
        ctx.prompt = "\n".join(f"{m['role']}: {m['content']}" for m in upstream["messages"])
        ctx.stream = req.stream
        if not req.stream:
            data = await gw.chat(ctx, upstream, request)
            if data is None:  # the client left; nobody reads this
                return Response(status_code=499)
            data["model"] = s.model_served_name
            _account(ctx, data.get("usage"), upstream, _content(data))
            await gw.refund(ctx)
            return JSONResponse(data)
        opened = await gw.open_stream(ctx, upstream, request)
        if opened is None:  # the client left while queued
            return Response(status_code=499)
        stream, release = opened
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _chat_events(stream, ctx, upstream, include_usage)
        return _stream_response(events, [stream.aclose, release, lambda: gw.refund(ctx)], ctx)

    @app.post(
        "/v1/generate",
        tags=["inference"],
        summary="Single-turn generation, flat TGI-style parameters (stream: true -> SSE)",
        response_model=GenerateResponse,
        responses={200: {"content": sse_doc}, **errors},
    )
    @_body_type(GenerateRequest)
    async def generate(request: Request, body: Any) -> Response:
        req: Any = body
        ctx: RequestContext = request.state.ctx
        messages = [{"role": "user", "content": req.prompt}]
        if req.system:
            messages.insert(0, {"role": "system", "content": req.system})
        upstream = gw.upstream_body(
            messages,
            req.max_new_tokens,
            {"temperature": req.temperature, "top_p": req.top_p, "stop": req.stop, "seed": req.seed},
        )
        ctx.prompt = req.prompt
        ctx.stream = req.stream
        if not req.stream:
            data = await gw.chat(ctx, upstream, request)
            if data is None:
                return Response(status_code=499)
            text = _content(data)
            _account(ctx, data.get("usage"), upstream, text)
            await gw.refund(ctx)
            choice = data["choices"][0]
            return JSONResponse(
                GenerateResponse(
                    generated_text=text,
                    model=s.model_served_name,
                    details=GenerateDetails(
                        finish_reason=choice.get("finish_reason"),
                        prompt_tokens=ctx.prompt_tokens or 0,
                        generated_tokens=ctx.completion_tokens or 0,
                    ),
                ).model_dump()
            )
        opened = await gw.open_stream(ctx, upstream, request)
        if opened is None:
            return Response(status_code=499)
        stream, release = opened
        events = _generate_events(stream, ctx, upstream)
        return _stream_response(events, [stream.aclose, release, lambda: gw.refund(ctx)], ctx)

    def _stream_response(events: AsyncIterator[bytes], on_close: list[Any], ctx: RequestContext) -> Response:
        return EngineStreamResponse(events, on_close=on_close, ctx=ctx, send_timeout_s=s.limits_send_timeout_s,
                                    max_duration_s=s.limits_max_stream_s)  # fmt: skip

    # -------------------------------------------------------- stream bodies

    async def _chat_events(
        stream: UpstreamStream, ctx: RequestContext, upstream: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[bytes]:
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        first = last = 0.0
        chunks = 0
        try:
            async for ev in stream.events():
                if ev.get("usage"):
                    usage = ev["usage"]
                ev["model"] = s.model_served_name
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
            gw._engine_down(exc)
            log.warning("stream failed, request_id=%s: %s", ctx.request_id, exc.message)
            yield sse(error_body(exc.message, spec_for(exc).type, exc.param, exc.code))
            yield b"data: [DONE]\n\n"
        finally:
            _account(ctx, usage, upstream, "".join(parts), chunks)
            if first and last > first:
                ctx.gen_s = last - first

    async def _generate_events(
        stream: UpstreamStream, ctx: RequestContext, upstream: dict[str, Any]
    ) -> AsyncIterator[bytes]:
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
            _account(ctx, usage, upstream, "".join(parts), len(parts))
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
            gw._engine_down(exc)
            yield sse(error_body(exc.message, spec_for(exc).type, exc.param, exc.code))
        finally:
            _account(ctx, usage, upstream, "".join(parts), len(parts))
            if first and last > first:
                ctx.gen_s = last - first

    gw.routes = list(app.routes)
    gw.key_required = {list_models, chat_completions, generate}
    # outermost (added last): request id, auth, rate limit, size, catch-all, log + metrics
    app.add_middleware(GatewayMiddleware, gateway=gw)
    return app


def _body_type(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a route's `body` parameter a model built at runtime (string annotations cannot name it)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__annotations__["body"] = model
        return fn

    return deco


def _content(data: dict[str, Any]) -> str:
    try:
        return str(data["choices"][0]["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _account(
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


__all__ = ["EngineStreamResponse", "Gateway", "build_app", "request_models"]
