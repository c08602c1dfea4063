"""Upstream engines behind one OpenAI-compatible async client.

All three engines speak `POST /v1/chat/completions` (+ SSE with `stream: true`), so the gateway
has one code path and every feature (limits, metrics, streaming, cancellation) works the same:

| kind      | server                                  | health probe  | model name sent         | usage in streams |
|-----------|-----------------------------------------|---------------|-------------------------|------------------|
| llamacpp  | llama.cpp `llama-server` (embedded)     | GET /health   | served name (ignored)   | stream_options   |
| tgi       | Text Generation Inference Messages API  | GET /health   | "tgi"                   | counted by us    |
| vllm      | `vllm serve` OpenAI server              | GET /health   | from GET /v1/models     | stream_options   |
| openai    | anything else OpenAI-compatible         | GET /v1/models| serve.engine.model      | stream_options   |

The client is `httpx2` (the transport of the `openai` SDK, already installed with it); we use it
directly rather than the SDK so SSE events pass through unparsed and a stream can be closed the
moment the gateway's client goes away: closing the upstream response drops the TCP connection,
and llama-server / vLLM / TGI cancel the sequence and free its slot.

Errors are mapped once, here: connection refused/reset -> EngineUnavailable (503),
timeouts -> EngineTimeout (504), upstream 400/422 -> InvalidRequest (422, e.g. prompt longer than
the context), upstream 429/503 -> Overloaded (503), anything else -> EngineFailure (503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from supportlm.serve.errors import (
    EngineFailure,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    Overloaded,
    ServeError,
)
from supportlm.serve.settings import ServeSettings

log = logging.getLogger("supportlm.serve")

MAX_UPSTREAM_ERROR = 300  # characters of an engine's error message passed on to the client


@dataclass(frozen=True)
class EngineKind:
    health_path: str
    default_model: str | None  # None: ask GET /v1/models
    stream_usage: bool  # send stream_options.include_usage upstream
    ignore_eos: bool  # honours `ignore_eos` (generate exactly max_tokens: fixed-work benchmarks)


ENGINE_KINDS: dict[str, EngineKind] = {
    "llamacpp": EngineKind("/health", "supportlm", True, True),
    # TGI's Messages API takes any model string ("tgi" in its docs); stream_options support varies
    # by version, so token counts for TGI streams are counted from the chunks instead
    "tgi": EngineKind("/health", "tgi", False, False),
    "vllm": EngineKind("/health", None, True, True),
    "openai": EngineKind("/v1/models", None, True, False),
}


@dataclass
class EngineStatus:
    ready: bool
    detail: str
    checked_at: float
    slow: bool = False  # no answer within the probe's timeout (busy, or hung), as opposed to refused/erroring


class Engine:
    """An OpenAI-compatible upstream: health probe, chat completion, streamed chat completion."""

    def __init__(
        self,
        base_url: str,
        *,
        kind: str = "llamacpp",
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        if kind not in ENGINE_KINDS:
            raise ValueError(f"engine kind must be one of {sorted(ENGINE_KINDS)}. Given: {kind!r}")
        self.kind = kind
        self.spec = ENGINE_KINDS[kind]
        self.base_url = base_url.rstrip("/")
        self.log_url = redact_url(self.base_url)  # for the server log: never the userinfo part
        self.timeout_s = timeout_s
        self._model = model or self.spec.default_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx2.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=32),
            transport=transport,
        )

    @property
    def model(self) -> str | None:
        return self._model

    async def aclose(self) -> None:
        await self.client.aclose()

    # ---------------------------------------------------------------- health

    async def probe(self, timeout_s: float = 2.0) -> EngineStatus:
        """One health check; never raises."""
        now = time.monotonic()
        try:
            try:
                r = await self.client.get(self.spec.health_path, timeout=timeout_s)
            except httpx2.RemoteProtocolError:
                # a pooled keep-alive connection the engine already closed: one fresh try, not "down"
                r = await self.client.get(self.spec.health_path, timeout=timeout_s)
        except httpx2.TimeoutException:
            return EngineStatus(
                False, f"no answer from {self.log_url} within {timeout_s:g} s", now, slow=True
            )
        except httpx2.HTTPError as exc:
            return EngineStatus(False, f"cannot reach {self.log_url}: {type(exc).__name__}", now)
        if r.status_code != 200:
            return EngineStatus(False, f"{self.spec.health_path} answered {r.status_code} (loading?)", now)
        if self._model is None:
            try:
                await self.discover_model(timeout_s)
            except ServeError as exc:
                return EngineStatus(False, exc.message, now)
        return EngineStatus(True, "ok", now)

    async def discover_model(self, timeout_s: float = 5.0) -> str:
        try:
            r = await self.client.get("/v1/models", timeout=timeout_s)
            r.raise_for_status()
            models = r.json().get("data") or []
            self._model = str(models[0]["id"])
        except (httpx2.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise EngineFailure(f"engine did not list a model at /v1/models ({type(exc).__name__})") from None
        return self._model

    # ---------------------------------------------------------------- calls

    async def _body(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        if self._model is None:
            await self.discover_model()
        out = {**body, "model": self._model, "stream": stream}
        out.pop("stream_options", None)
        if stream and self.spec.stream_usage:
            out["stream_options"] = {"include_usage": True}
        return out

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streamed chat completion; the whole call is bounded by timeout_s."""
        payload = await self._body(body, stream=False)
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    r = await self.client.post("/v1/chat/completions", json=payload)
                except httpx2.RemoteProtocolError:  # stale pooled connection: nothing was sent
                    r = await self.client.post("/v1/chat/completions", json=payload)
        except (TimeoutError, httpx2.TimeoutException):
            raise EngineTimeout(
                f"The engine did not answer within {self.timeout_s:g} s", code="engine_timeout"
            ) from None
        except httpx2.HTTPError as exc:
            raise _unreachable(exc) from None
        if r.status_code != 200:
            raise upstream_error(r.status_code, r.text, r.headers.get("retry-after"))
        try:
            data = r.json()
            data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineFailure(
                "The engine's answer is not an OpenAI chat completion", code="engine_bad_response"
            ) from None
        return data

    async def open_stream(self, body: dict[str, Any]) -> UpstreamStream:
        """Send a streamed chat completion and wait for the response headers (errors raise here,
        before the gateway has answered anything, so they still become a proper status code)."""
        payload = await self._body(body, stream=True)
        # llama-server closes the connection after a stream; never hand that socket back to the pool
        # (reusing it made the next probe fail and flipped /readyz: measured 13/60 failures without this)
        request = self.client.build_request(
            "POST", "/v1/chat/completions", json=payload, headers={"Connection": "close"}
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.client.send(request, stream=True)
        except (TimeoutError, httpx2.TimeoutException):
            raise EngineTimeout(
                f"The engine did not start answering within {self.timeout_s:g} s", code="engine_timeout"
            ) from None
        except httpx2.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code != 200:
            try:
                text = (await response.aread()).decode("utf-8", "replace")
            except httpx2.HTTPError:
                text = ""
            finally:
                await response.aclose()
            raise upstream_error(response.status_code, text, response.headers.get("retry-after"))
        return UpstreamStream(response)


class UpstreamStream:
    """The engine's SSE stream: iterate `events()` for decoded `data:` payloads; always `aclose()`."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.closed = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        done = False
        try:
            async for line in self.response.aiter_lines():
                if done or not line.startswith("data:"):
                    continue  # comments, `event:` lines, keep-alives; after [DONE]: read to the end so
                    # the connection goes back to the pool instead of being closed
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    raise EngineFailure(
                        "The engine sent a malformed stream event", code="engine_bad_response"
                    ) from None
                if isinstance(event, dict) and "error" in event:
                    msg = (
                        event["error"].get("message") if isinstance(event["error"], dict) else event["error"]
                    )
                    log.warning("engine error mid-stream: %s", str(msg)[:MAX_UPSTREAM_ERROR])
                    raise EngineFailure("The engine failed mid-stream", code="engine_error")
                if isinstance(event, dict):
                    yield event
        except httpx2.TimeoutException:
            raise EngineTimeout("The engine stopped sending tokens", code="engine_timeout") from None
        except httpx2.HTTPError as exc:
            raise EngineUnavailable(
                f"The engine connection broke mid-stream ({type(exc).__name__})", code="engine_disconnected"
            ) from None

    async def aclose(self) -> None:
        """Idempotent. Closing mid-body drops the connection: the engine cancels the sequence."""
        if not self.closed:
            self.closed = True
            await self.response.aclose()


def redact_url(url: str) -> str:
    """`scheme://user:pass@host:port/path` -> `scheme://host:port/path` (for logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _unreachable(exc: httpx2.HTTPError) -> ServeError:
    return EngineUnavailable(
        f"The engine is not reachable ({type(exc).__name__}); retry shortly", code="engine_unavailable"
    )


def upstream_error(status: int, text: str, retry_after: str | None = None) -> ServeError:
    """Map an engine's non-200 answer to our error table, keeping a short, sanitized message."""
    message = text
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            err = data.get("error", data.get("message", data))
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    message = " ".join(str(message).split())[:MAX_UPSTREAM_ERROR] or f"HTTP {status}"
    try:
        wait = float(retry_after) if retry_after else None
    except ValueError:
        wait = None
    if status in (400, 422):
        context = any(w in message.lower() for w in ("context", "too long", "exceeds", "max_model_len"))
        return InvalidRequest(
            f"The engine rejected the request: {message}",
            param="messages" if context else None,
            code="context_length_exceeded" if context else "engine_rejected",
        )
    # busy / failed: the engine's own words go to the server log only (they can name hosts, paths, versions)
    log.warning("engine answered HTTP %d: %s", status, message)
    if status in (429, 503):
        return Overloaded("The engine is busy; retry shortly", code="engine_busy", retry_after=wait or 1)
    return EngineFailure(f"The engine failed (HTTP {status})", code="engine_error")


class EngineMonitor:
    """Background readiness: probes the engine every `interval_s`; requests fail fast (503) while it is down.

    `ready` is None until the first probe (requests are tried), then True/False. A request that
    finds the engine unreachable marks it down at once; the next successful probe brings it back.
    One slow probe is not an outage: a busy engine on a small CPU can miss the probe timeout while it
    serves every request, and flipping readiness would turn that load into 503s for everyone. Only
    `slow_probes_to_down` slow probes in a row mark a ready engine down (refusals and errors at once).
    """

    slow_probes_to_down = 2

    def __init__(
        self,
        engine: Engine,
        interval_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.ready: bool | None = None
        self.status: EngineStatus | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_change = on_change or (lambda ready: None)
        self._slow = 0

    async def check(self, timeout_s: float = 2.0) -> EngineStatus:
        status = await self.engine.probe(timeout_s)
        self._slow = self._slow + 1 if status.slow else 0
        if status.slow and self.ready and self._slow < self.slow_probes_to_down:
            log.info("engine probe slow (%d in a row, %s); still counted ready", self._slow, status.detail)
            return status
        self.status = status
        self._set(status.ready, status.detail)
        return status

    def mark_down(self, detail: str) -> None:
        self.status = EngineStatus(False, detail, time.monotonic())
        self._set(False, detail)

    def _set(self, ready: bool, detail: str) -> None:
        if ready != self.ready:
            if self.ready is not None or not ready:
                log.log(
                    logging.INFO if ready else logging.WARNING,
                    "engine %s: %s",
                    "ready" if ready else "NOT ready",
                    detail,
                )
            self.ready = ready
            self._on_change(ready)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check(max(self.interval_s, 5.0))
            except Exception:  # never let the monitor die
                log.exception("engine probe failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="engine-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def engine_from_settings(s: ServeSettings) -> Engine:
    """The upstream client as ServeSettings describe it (gateway factory and `serve()` share it)."""
    e = s.engine
    return Engine(
        s.engine_base_url,
        kind=e.kind,
        model=e.model or (s.model.served_name if e.kind == "llamacpp" else None),
        api_key=e.api_key.get_secret_value() if e.api_key else None,
        timeout_s=e.timeout_s,
        connect_timeout_s=e.connect_timeout_s,
        max_connections=s.limits.max_concurrency + 8,
    )
