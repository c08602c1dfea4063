"""What the gateway lets through: API keys, per-key token buckets, bounded concurrency + queue, body size.

- **API keys** come from `SUPPORTLM_API_KEYS` ("k1,k2" or "id1:k1,id2:k2") and/or a keys file
  (`key_id: key` per line, `#` comments). Clients send `Authorization: Bearer <key>` (OpenAI style)
  or `X-API-Key: <key>`. Keys are compared as SHA-256 digests with `hmac.compare_digest` against
  every stored key (no early exit), so timing says nothing about which key or how much matched.
  Only the key id is ever logged; a key without an id gets `key-<first 8 hex of its sha256>`.
- **Rate limit**: one token bucket per key id (`burst` tokens, refilled at `rate_per_s`); a request
  takes one token; an empty bucket answers 429 with `Retry-After` = seconds until one token is back.
  The clock is injectable so tests are exact.
- **Concurrency**: at most `max_concurrency` requests in the engine; up to `max_queue` more wait
  (FIFO, at most `queue_timeout_s`); beyond that 503 + `Retry-After` estimated from the recent
  service time. The queue depth is what `supportlm_queue_depth` shows.
- **Body size**: 413 when `Content-Length` says so, and again while the body streams in
  (chunked uploads have no Content-Length).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from supportlm.errors import ConfigError
from supportlm.serve.errors import Overloaded

Clock = Callable[[], float]

# ---------------------------------------------------------------- API keys


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def default_key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class KeyStore:
    """key id -> SHA-256 of the key. Empty store = no keys configured."""

    digests: dict[str, bytes] = field(default_factory=dict)

    def add(self, key_id: str, key: str) -> None:
        key_id, key = key_id.strip(), key.strip()
        if not key:
            raise ConfigError(f"API key `{key_id}` is empty")
        if key_id in self.digests:
            raise ConfigError(f"API key id `{key_id}` is defined twice")
        self.digests[key_id] = _digest(key)

    def __len__(self) -> int:
        return len(self.digests)

    def check(self, presented: str | None) -> str | None:
        """The key id if `presented` is a known key, else None. Constant time in the key's content."""
        if not presented:
            return None
        probe = _digest(presented)
        found: str | None = None
        for key_id, digest in self.digests.items():  # no early exit
            if hmac.compare_digest(probe, digest) and found is None:
                found = key_id
        return found

    @classmethod
    def load(cls, env_value: str | None = None, path: Path | None = None) -> KeyStore:
        store = cls()
        for item in (env_value or "").split(","):
            item = item.strip()
            if not item:
                continue
            key_id, sep, key = item.partition(":")
            if sep and key.strip() and key_id.strip():
                store.add(key_id, key)
            else:
                store.add(default_key_id(item), item)
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"api keys file not found: {path}")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key_id, sep, key = line.partition(":")
                if not sep or not key_id.strip() or not key.strip():
                    raise ConfigError(
                        f"{path}:{n}: expected `key_id: key`"
                    )  # never echo the line: it holds a key
                store.add(key_id, key)
        return store


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer ...` or `X-API-Key`, from raw ASGI headers."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


# ---------------------------------------------------------------- rate limit


@dataclass
class TokenBucket:
    capacity: float
    rate_per_s: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; 0.0 if granted, else the seconds until they would be available."""
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        if self.rate_per_s <= 0:
            return math.inf
        return (cost - self.tokens) / self.rate_per_s


class RateLimiter:
    """One bucket per key id. Synchronous (no await inside), so it is exact under asyncio concurrency."""

    MAX_RETRY_AFTER_S = 3600  # what Retry-After says when the bucket never refills

    def __init__(self, burst: int, rate_per_s: float, clock: Clock = time.monotonic) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def acquire(self, key_id: str) -> float:
        """0.0 if the request may go; else seconds to wait (the Retry-After)."""
        now = self.clock()
        bucket = self.buckets.get(key_id)
        if bucket is None:
            bucket = self.buckets[key_id] = TokenBucket(self.burst, self.rate_per_s, float(self.burst), now)
        wait = bucket.take(now)
        return min(wait, self.MAX_RETRY_AFTER_S)


# ---------------------------------------------------------------- concurrency + queue


class Slot:
    """One admitted request; release() is idempotent (stream responses release on close)."""

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self._limiter = limiter
        self._start = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(time.monotonic() - self._start)


class ConcurrencyLimiter:
    """At most `max_concurrency` holders, at most `max_queue` waiters (FIFO), waits bounded by `timeout_s`."""

    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        timeout_s: float,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._service_s = 1.0  # EWMA of time a request holds a slot (for Retry-After)
        self._on_change = on_change or (lambda active, waiting: None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> float:
        """Seconds until a queue slot is likely free: queue length x service time / parallelism."""
        return max(1.0, (self.waiting + 1) * self._service_s / self.max_concurrency)

    async def acquire(self) -> Slot:
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
            self._on_change(self.active, self.waiting)
            return Slot(self)
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(
                f"Server is at capacity ({self.active} running, {self.waiting} queued); retry later",
                code="queue_full",
                retry_after=self.retry_after(),
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._on_change(self.active, self.waiting)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if fut.done() and not fut.cancelled():
                # the slot was handed to us just as we gave up: pass it on
                self.active -= 1
                self._wake()
            else:
                fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            self._on_change(self.active, self.waiting)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Overloaded(
                f"Waited {self.timeout_s:g} s in the queue without a free slot; retry later",
                code="queue_timeout",
                retry_after=self.retry_after(),
            ) from None
        return Slot(self)

    def _wake(self) -> None:
        while self._waiters and self.active < self.max_concurrency:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    def _release(self, held_s: float) -> None:
        self._service_s = 0.8 * self._service_s + 0.2 * held_s
        self.active -= 1
        self._wake()
        self._on_change(self.active, self.waiting)


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
