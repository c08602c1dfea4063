"""What one key may spend: requests per second, tokens per second, and the size of one body.

- **Request rate** (`rate_per_s`, `burst`): one unit per request, per key id; an empty bucket answers
  429 with `Retry-After` = seconds until one is back.
- **Token budget** (`token_rate_per_s`, `token_burst`): a request is charged its prompt estimate
  (characters / 4) + `max_tokens` before it is queued, and refunded what the engine did not use once it
  answered (usage from the engine, else the estimate), so long generations cost what they cost and a
  key cannot reserve the engine with `max_tokens: 2048` for free. 429 `token_budget_exceeded` when short.
- **Body size**: 413 when `Content-Length` says so, and again while the body streams in (chunked
  uploads have no Content-Length).

The buckets live in supportlm.serve.budgets (this process, or Redis shared by replicas); API keys and
the failed-auth throttle in supportlm.serve.auth; slots and the queue in supportlm.serve.scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from supportlm.serve.budgets import Buckets


class RequestRate:
    """One bucket of `burst` requests per key id, refilled at `rate_per_s`."""

    def __init__(self, buckets: Buckets, burst: int, rate_per_s: float) -> None:
        self.buckets, self.burst, self.rate_per_s = buckets, burst, rate_per_s

    async def acquire(self, key_id: str) -> float:
        """0.0 if the request may go; else seconds to wait (the Retry-After)."""
        return await self.buckets.take("rate:" + key_id, self.burst, self.rate_per_s, 1.0)


class TokenBudget:
    """One bucket of `burst` tokens per key id, refilled at `rate_per_s`; charge up front, refund after."""

    def __init__(self, buckets: Buckets, burst: int, rate_per_s: float) -> None:
        self.buckets, self.burst, self.rate_per_s = buckets, burst, rate_per_s

    async def charge(self, key_id: str, tokens: int) -> float:
        return await self.buckets.take("tokens:" + key_id, self.burst, self.rate_per_s, float(tokens))

    async def refund(self, key_id: str, tokens: int) -> None:
        if tokens > 0:
            await self.buckets.give("tokens:" + key_id, self.burst, self.rate_per_s, float(tokens))


# ---------------------------------------------------------------- body size


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`, so FastAPI passes it through its body parsing untouched."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit:,} bytes")


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def limit_body(receive: Receive, limit: int) -> Receive:
    """`receive` that raises BodyTooLarge once more than `limit` bytes have arrived."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return limited
