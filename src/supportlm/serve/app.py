"""The gateway app: routes, exception handlers and the outer middleware, assembled by `build_app()`.

    app = build_app(load_settings(), engine=None)   # engine None: built from settings, closed with the app

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

The rest lives next door: request/response bodies in schemas.py, admission (keys, rates, the fair queue,
disconnect races) in gateway.py, SSE bodies and the stream's guard in streaming.py.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supportlm.serve.engines import Engine, engine_from_settings
from supportlm.serve.errors import (
    HTTP_STATUS_SPECS,
    INTERNAL,
    ServeError,
    Unauthorized,
    error_response,
    serve_error_response,
    spec_for,
    validation_message,
)
from supportlm.serve.gateway import Gateway, account, reply_text
from supportlm.serve.limits import limit_body
from supportlm.serve.logging import RequestContext, close_logger
from supportlm.serve.schemas import (
    ChatCompletion,
    ErrorBody,
    GenerateDetails,
    GenerateResponse,
    ModelCard,
    ModelList,
    request_models,
)
from supportlm.serve.settings import ServeSettings, load_settings
from supportlm.serve.streaming import EngineStreamResponse, chat_events, generate_events

log = logging.getLogger("supportlm.serve")

DESCRIPTION = "FastAPI gateway in front of one OpenAI-compatible engine (llama-server, TGI or vLLM)."
UNINSTRUMENTED = frozenset({"/healthz", "/readyz", "/metrics"})
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: `$` would let a trailing newline in
PLAYGROUND_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ERROR_DOCS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"},
    404: {"model": ErrorBody, "description": "unknown `model`"},
    413: {"model": ErrorBody, "description": "body too large"},
    422: {"model": ErrorBody, "description": "invalid body; `param` names the field"},
    429: {"model": ErrorBody, "description": "rate limit; see Retry-After"},
    503: {"model": ErrorBody, "description": "engine not ready or queue full; see Retry-After"},
    504: {"model": ErrorBody, "description": "engine timeout"},
}
# OpenAPI < 3.2: the text/event-stream schema describes one event
SSE_DOC = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] to end"}},
        }
    }
}


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
        settings: limits, keys, logging, engine location (default: `load_settings()`, from SUPPORTLM_* env).
        engine: the upstream; None = `engine_from_settings(settings)`, owned (closed) by the app. A passed
            engine stays the caller's to close.
        clock: monotonic seconds for the rate limiter (tests inject a fake one).
        registry: Prometheus registry (default: a fresh one per app).
        model_info: what /readyz reports about the served model (serve() passes the resolved GGUF).
        engine_down: true once the engine's supervisor has given up restarting it (serve() passes it);
            /readyz then answers 503 `engine_down` for good instead of "not ready yet".
    """
    s = settings or load_settings()
    owns_engine = engine is None
    upstream = engine_from_settings(s) if engine is None else engine
    gw = Gateway(s, upstream, clock=clock, registry=registry, model_info=model_info)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.monitor.start()
        try:
            yield
        finally:
            await gw.monitor.stop()
            await gw.buckets.aclose()
            if owns_engine:
                await upstream.aclose()
            close_logger(gw.access_logger)

    app = FastAPI(
        title="supportlm gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # the docs pages load their JS from a CDN, on the origin where the playground keeps the key: off
        # unless asked for (SUPPORTLM_DOCS=true); /openapi.json is always there
        docs_url="/docs" if s.docs else None,
        redoc_url="/redoc" if s.docs else None,
    )
    app.state.gateway = gw
    _add_error_handlers(app, gw)
    _add_ops_routes(app, gw, engine_down)
    gw.key_required = _add_inference_routes(app, gw)
    gw.routes = list(app.routes)
    # outermost (added last): request id, auth, rate limit, size, catch-all, log + metrics
    app.add_middleware(GatewayMiddleware, gateway=gw)
    return app


# ---------------------------------------------------------------- exception handlers (one place)


def _note(request: Request, err: str) -> None:
    ctx = getattr(request.state, "ctx", None)
    if ctx is not None:
        ctx.err = err


def _add_error_handlers(app: FastAPI, gw: Gateway) -> None:
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

    @app.exception_handler(Exception)  # a backup: the middleware catches first
    async def _unhandled(request: Request, exc: Exception) -> Response:
        _note(request, INTERNAL.err)
        log.error("unhandled error", exc_info=exc)
        return internal_error(getattr(request.state, "request_id", "-"))


def internal_error(rid: str) -> JSONResponse:
    return error_response(
        500, f"Internal error (request id {rid}); it has been logged", INTERNAL.type, code="internal_error"
    )


def _with_auth_header(response: Response, exc: ServeError) -> Response:
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


# ---------------------------------------------------------------- health, metrics, playground


def _add_ops_routes(app: FastAPI, gw: Gateway, engine_down: Callable[[], bool] | None) -> None:
    s = gw.settings

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
                retry_after=s.engine.retry_after_s,
            )
        return JSONResponse({"status": "ready", "model": s.model.served_name})

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


# ---------------------------------------------------------------- inference


def _add_inference_routes(app: FastAPI, gw: Gateway) -> set[Callable[..., Any]]:
    """The /v1 routes; returns their endpoints (the ones that need an API key)."""
    s = gw.settings
    served = s.model.served_name
    ChatRequest, GenerateRequest = request_models(s)

    def stream_response(events: AsyncIterator[bytes], on_close: list[Any], ctx: RequestContext) -> Response:
        limits = s.limits
        return EngineStreamResponse(events, on_close=on_close, ctx=ctx, send_timeout_s=limits.send_timeout_s,
                                    max_duration_s=limits.max_stream_s)  # fmt: skip

    @app.get("/v1/models", tags=["inference"], response_model=ModelList, responses={401: ERROR_DOCS[401]})
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=served)])

    @app.post(
        "/v1/chat/completions",
        tags=["inference"],
        summary="OpenAI-compatible chat completion (stream: true -> SSE)",
        response_model=ChatCompletion,
        responses={200: {"content": SSE_DOC}, **ERROR_DOCS},
    )
    @_body_type(ChatRequest)
    async def chat_completions(request: Request, body: Any) -> Response:
        req: Any = body
        ctx: RequestContext = request.state.ctx
        gw.check_model(req.model)
        gw.check_ignore_eos(req.ignore_eos)
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
                "ignore_eos": req.ignore_eos or None,
            },
        )
        ctx.prompt = "\n".join(f"{m['role']}: {m['content']}" for m in upstream["messages"])
        ctx.stream = req.stream
        if not req.stream:
            data = await gw.chat(ctx, upstream, request)
            if data is None:  # the client left; nobody reads this
                return Response(status_code=499)
            data["model"] = served
            account(ctx, data.get("usage"), upstream, reply_text(data))
            await gw.refund(ctx)
            return JSONResponse(data)
        opened = await gw.open_stream(ctx, upstream, request)
        if opened is None:  # the client left while queued
            return Response(status_code=499)
        stream, release = opened
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = chat_events(stream, ctx, upstream, served_name=served, include_usage=include_usage,
                             engine_failed=gw.engine_failed)  # fmt: skip
        return stream_response(events, [stream.aclose, release, lambda: gw.refund(ctx)], ctx)

    @app.post(
        "/v1/generate",
        tags=["inference"],
        summary="Single-turn generation, flat TGI-style parameters (stream: true -> SSE)",
        response_model=GenerateResponse,
        responses={200: {"content": SSE_DOC}, **ERROR_DOCS},
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
            text = reply_text(data)
            account(ctx, data.get("usage"), upstream, text)
            await gw.refund(ctx)
            choice = data["choices"][0]
            return JSONResponse(
                GenerateResponse(
                    generated_text=text,
                    model=served,
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
        events = generate_events(stream, ctx, upstream, engine_failed=gw.engine_failed)
        return stream_response(events, [stream.aclose, release, lambda: gw.refund(ctx)], ctx)

    return {list_models, chat_completions, generate}


def _body_type(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a route's `body` parameter a model built at runtime (string annotations cannot name it)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__annotations__["body"] = model
        return fn

    return deco


# ================================================================ middleware


class GatewayMiddleware:
    """Outermost layer: request id, admission (auth, rate, size), catch-all, one log line + metrics."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gw = gateway

    def _route(self, scope: Scope) -> Any:
        """The route this request will reach (matched like the router does, so a root path or a mount
        prefix changes nothing), or None for an unknown path."""
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
                receive = limit_body(receive, self.gw.settings.limits.max_body_bytes)
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


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


__all__ = ["GatewayMiddleware", "build_app"]
