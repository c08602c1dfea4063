"""Token buckets behind the gateway's budgets, in this process (default) or in Redis (shared by replicas).

Three budgets use the same bucket arithmetic (capacity, refill per second, take a cost or say how long
until it would fit):
- **requests per key**: `burst` requests refilled at `rate_per_s`, one unit per request;
- **tokens per key**: `token_burst` refilled at `token_rate_per_s`; a request is charged its prompt
  estimate + `max_tokens` up front and refunded what it did not use once the engine has answered;
- **failed authentications per client address**: 401s are throttled so a key cannot be guessed fast
  and the log cannot be flooded.

`LocalBuckets` keeps them in a dict (bounded: idle full buckets are dropped). `RedisBuckets` keeps one hash
per bucket, updated by one Lua script (atomic across gateway replicas), timed by Redis' own clock (the
replicas' clocks never disagree) and expiring once idle. Per-key in-flight caps stay per replica
(supportlm.serve.scheduler): a slot is a connection to this replica's engine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("supportlm.serve")
Clock = Callable[[], float]
MAX_WAIT_S = 3600.0  # what Retry-After says when the bucket never refills


class Buckets(Protocol):
    async def take(self, name: str, capacity: float, rate: float, cost: float) -> float:
        """Take `cost`; 0.0 if granted, else seconds until it would be (nothing taken)."""

    async def give(self, name: str, capacity: float, rate: float, amount: float) -> None:
        """Return `amount` (a refund), never above `capacity`."""

    async def peek(self, name: str, capacity: float, rate: float, cost: float) -> float:
        """What `take` would answer, without taking."""

    async def aclose(self) -> None: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LocalBuckets:
    """Buckets in this process. Synchronous inside (no await), so exact under asyncio concurrency."""

    def __init__(self, clock: Clock = time.monotonic, max_buckets: int = 100_000) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, _Bucket] = {}
        self._rates: dict[str, tuple[float, float]] = {}

    def _refill(self, name: str, capacity: float, rate: float, now: float) -> _Bucket:
        b = self._buckets.get(name)
        if b is None:
            if len(self._buckets) >= self.max_buckets:
                self._prune(now)
            b = self._buckets[name] = _Bucket(capacity, now)
            self._rates[name] = (capacity, rate)
        elif now > b.updated:
            b.tokens = min(capacity, b.tokens + (now - b.updated) * rate)
            b.updated = now
        return b

    def _prune(self, now: float) -> None:
        """Drop buckets that have refilled to capacity: forgetting them changes nothing."""
        for name, b in list(self._buckets.items()):
            capacity, rate = self._rates[name]
            if b.tokens + (now - b.updated) * rate >= capacity:
                del self._buckets[name], self._rates[name]

    async def take(self, name: str, capacity: float, rate: float, cost: float) -> float:
        return self.take_now(name, capacity, rate, cost)

    def take_now(self, name: str, capacity: float, rate: float, cost: float, peek: bool = False) -> float:
        b = self._refill(name, capacity, rate, self.clock())
        if b.tokens >= cost:
            if not peek:
                b.tokens -= cost
            return 0.0
        if rate <= 0:
            return MAX_WAIT_S
        return min(MAX_WAIT_S, (cost - b.tokens) / rate)

    async def peek(self, name: str, capacity: float, rate: float, cost: float) -> float:
        return self.take_now(name, capacity, rate, cost, peek=True)

    async def give(self, name: str, capacity: float, rate: float, amount: float) -> None:
        b = self._refill(name, capacity, rate, self.clock())
        b.tokens = min(capacity, b.tokens + amount)

    def __len__(self) -> int:
        return len(self._buckets)

    async def aclose(self) -> None:
        return None


# KEYS[1] = bucket; ARGV = capacity, rate, cost (negative: a refund), ttl_s, peek (1: change nothing).
# Returns the wait in seconds (-1: never).
_TAKE = """
local capacity, rate, cost, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local peek = ARGV[5] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = capacity, now end
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate) end
local wait = 0
if cost < 0 then
  tokens = math.min(capacity, tokens - cost)
elseif tokens >= cost then
  if not peek then tokens = tokens - cost end
elseif rate > 0 then
  wait = (cost - tokens) / rate
else
  wait = -1
end
if not peek then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[1], ttl)
end
return tostring(wait)
"""


class RedisBuckets:
    """Buckets in Redis, shared by every gateway replica that points at the same `url` and `prefix`.

    Redis unreachable: the limits keep holding, per replica (a LocalBuckets fallback), with one warning
    per minute in the log, until Redis answers again; no request fails because of it."""

    def __init__(self, url: str, prefix: str = "supportlm:budget:", clock: Clock = time.monotonic) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.url_for_log = url.split("@")[-1]  # never log a password
        self.prefix = prefix
        self._script = self.client.register_script(_TAKE)
        self.fallback = LocalBuckets(clock)
        self.failures = 0
        self._warned = -math.inf

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning(
                "redis budget store %s unreachable (%s: %s): limits apply per replica until it is back",
                self.url_for_log,
                type(exc).__name__,
                exc,
            )

    @staticmethod
    def _ttl(capacity: float, rate: float) -> int:
        # idle longer than a full refill: the bucket is full again, so the hash can go
        return max(60, math.ceil(capacity / rate) + 60) if rate > 0 else 86_400

    async def take(self, name: str, capacity: float, rate: float, cost: float, peek: bool = False) -> float:
        from redis.exceptions import RedisError

        try:
            wait = float(await self._script(keys=[self.prefix + name],
                                            args=[capacity, rate, cost, self._ttl(capacity, rate), int(peek)]))  # fmt: skip
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self.fallback.take_now(name, capacity, rate, cost, peek=peek)
        return MAX_WAIT_S if wait < 0 else min(MAX_WAIT_S, wait)

    async def peek(self, name: str, capacity: float, rate: float, cost: float) -> float:
        return await self.take(name, capacity, rate, cost, peek=True)

    async def give(self, name: str, capacity: float, rate: float, amount: float) -> None:
        from redis.exceptions import RedisError

        if amount <= 0:
            return
        try:
            await self._script(
                keys=[self.prefix + name], args=[capacity, rate, -amount, self._ttl(capacity, rate), 0]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            await self.fallback.give(name, capacity, rate, amount)

    async def aclose(self) -> None:
        await self.client.aclose()


def make_buckets(backend: str, redis_url: str | None, clock: Clock = time.monotonic) -> Buckets:
    if backend == "redis":
        if not redis_url:  # ServeSettings refuses backend=redis without SUPPORTLM_LIMITS_REDIS_URL
            raise ValueError("backend=redis needs a redis:// URL")
        return RedisBuckets(redis_url, clock=clock)
    return LocalBuckets(clock)
