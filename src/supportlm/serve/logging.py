"""Observability: one JSON log line per request, and the Prometheus metrics (one registry per app).

Request log line (logger `supportlm.access`), written when the response is finished (for a
stream: after `[DONE]` or the disconnect, so token counts and TTFT are final):

    {"ts": "2026-11-25T17:40:01.123Z", "level": "INFO", "event": "request", "request_id": "9f1c...",
     "key_id": "alice", "method": "POST", "route": "/v1/chat/completions", "status": 200,
     "latency_ms": 812.4, "stream": true, "ttft_ms": 95.1, "prompt_tokens": 41,
     "completion_tokens": 64, "tokens_per_s": 89.0, "engine": "llamacpp", "err": null}

With `serve.log.prompts` on, `prompt` and `reply` are added after `supportlm.data.text.mask_pii`
(emails, card numbers, phone numbers -> placeholders) and cut to 2,000 characters. API keys are
never logged, only their key id. Handlers: stdout and, when `serve.log.file` is set, a size-rotated file.

Metrics (all prefixed `supportlm_`; counters are exposed with Prometheus' `_total` suffix):
request_count{route,status}, request_failure{err}, request_duration_seconds{route,status},
time_to_first_token_seconds{route}, tokens{kind=prompt|completion}, generation_tokens_per_second,
queue_depth, inflight_requests, engine_up, engine_errors{reason}. /healthz, /readyz and /metrics
are not instrumented.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_LOGGED_TEXT = 2000

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class JsonFormatter(logging.Formatter):
    """`record.fields` (a dict) merged into {ts, level, logger, message}; one line, no newlines inside."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def make_logger(
    name: str,
    *,
    stdout: bool = True,
    file: Path | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
    level: str = "INFO",
) -> logging.Logger:
    """A logger owned by one app: not registered in logging's global manager, so two apps (tests) never
    share handlers, and it does not propagate to the root logger (uvicorn's config cannot reformat it)."""
    logger = logging.Logger(name, level=level)  # noqa: LOG001 - deliberately outside logging's registry
    logger.propagate = False
    fmt = JsonFormatter()
    if stdout:
        h: logging.Handler = logging.StreamHandler(sys.stdout)
        h.setFormatter(fmt)
        logger.addHandler(h)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        h = logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def masked(text: str | None) -> str | None:
    """PII-masked and shortened text for the request log."""
    if text is None:
        return None
    from supportlm.data.text import mask_pii

    out, _ = mask_pii(text)
    return out if len(out) <= MAX_LOGGED_TEXT else out[: MAX_LOGGED_TEXT - 3] + "..."


@dataclass
class RequestContext:
    """Per-request facts collected along the way; the log line and the metrics are made from it."""

    request_id: str
    method: str
    path: str
    route: str = "other"
    key_id: str | None = None
    stream: bool = False
    client_disconnected: bool = False
    status: int | None = None
    err: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    gen_s: float | None = None  # first token -> last token
    engine: str | None = None
    prompt: str | None = field(default=None, repr=False)
    reply: str | None = field(default=None, repr=False)
    started: float = field(default_factory=time.perf_counter)
    end_reason: str | None = None  # a stream ended by the gateway: send_timeout | max_stream_duration
    charged_tokens: int = field(default=0, repr=False)  # token budget held until the refund
    quiet: bool = field(default=False, repr=False)  # no log line (a throttled auth failure already logged)


class RequestLogger:
    def __init__(self, logger: logging.Logger, log_prompts: bool = False) -> None:
        self.logger = logger
        self.log_prompts = log_prompts

    def log(self, ctx: RequestContext, latency_ms: float) -> None:
        fields = asdict(ctx)
        for k in ("prompt", "reply", "started", "gen_s", "path", "charged_tokens", "quiet"):
            fields.pop(k)
        fields = {"event": "request", **fields}
        fields["latency_ms"] = round(latency_ms, 1)
        if ctx.ttft_ms is not None:
            fields["ttft_ms"] = round(ctx.ttft_ms, 1)
        fields["tokens_per_s"] = tokens_per_s(ctx)
        if self.log_prompts:
            fields["prompt"] = masked(ctx.prompt)
            fields["reply"] = masked(ctx.reply)
        level = logging.ERROR if (ctx.status or 500) >= 500 else logging.INFO
        self.logger.log(level, "request", extra={"fields": fields})


def tokens_per_s(ctx: RequestContext) -> float | None:
    if not ctx.completion_tokens or not ctx.gen_s or ctx.gen_s <= 0:
        return None
    return round(ctx.completion_tokens / ctx.gen_s, 1)


class Metrics:
    """All gateway metrics in a registry of their own (one per app: tests build many apps)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_count = Counter(
            "supportlm_request_count",
            "Requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.request_failure = Counter(
            "supportlm_request_failure",
            "Failed requests by cause: validation, auth, rate_limit, overloaded, timeout, engine, too_large, "
            "not_found, internal.",
            ["err"],
            registry=r,
        )
        self.latency = Histogram(
            "supportlm_request_duration_seconds",
            "Request latency (streams: until the last byte).",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "supportlm_time_to_first_token_seconds",
            "Time from request arrival to the first generated token (streams).",
            ["route"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("supportlm_tokens", "Tokens processed, by kind.", ["kind"], registry=r)
        self.tokens_per_s = Histogram(
            "supportlm_generation_tokens_per_second",
            "Completion tokens per second of generation, per request.",
            buckets=TPS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("supportlm_queue_depth", "Requests waiting for an engine slot.", registry=r)
        self.inflight = Gauge("supportlm_inflight_requests", "Requests holding an engine slot.", registry=r)
        self.engine_up = Gauge(
            "supportlm_engine_up", "1 when the engine answered its last probe.", registry=r
        )
        self.engine_errors = Counter(
            "supportlm_engine_errors", "Engine call failures by reason.", ["reason"], registry=r
        )
        self.auth_throttled = Counter(
            "supportlm_auth_throttled",
            "Requests refused because their address failed authentication too often.",
            registry=r,
        )

    def queue_changed(self, active: int, waiting: int) -> None:
        self.inflight.set(active)
        self.queue_depth.set(waiting)

    def observe(self, ctx: RequestContext, latency_s: float) -> None:
        status = str(ctx.status or 500)
        self.request_count.labels(ctx.route, status).inc()
        self.latency.labels(ctx.route, status).observe(latency_s)
        if ctx.err:
            self.request_failure.labels(ctx.err).inc()
        if ctx.ttft_ms is not None:
            self.ttft.labels(ctx.route).observe(ctx.ttft_ms / 1000)
        if ctx.prompt_tokens:
            self.tokens.labels("prompt").inc(ctx.prompt_tokens)
        if ctx.completion_tokens:
            self.tokens.labels("completion").inc(ctx.completion_tokens)
        tps = tokens_per_s(ctx)
        if tps:
            self.tokens_per_s.observe(tps)
