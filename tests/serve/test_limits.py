"""API keys (401), per-key token buckets (429 + Retry-After, exact with an injected clock), bounded
concurrency + queue (503 + Retry-After)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from supportlm.errors import ConfigError
from supportlm.serve.errors import Overloaded
from supportlm.serve.limits import ConcurrencyLimiter, KeyStore, RateLimiter, default_key_id

from .conftest import ALICE, BOB, FakeClock, chat_body, gateway, make_settings
from .fake_engine import create_app as create_fake_engine


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer sk-wrong"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-alice-12"}, "invalid_api_key"),  # a prefix of a real key
        ({"Authorization": "Basic c2stYWxpY2UtMTIz"}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"X-API-Key": "nope"}, "invalid_api_key"),
    ],
)
def test_missing_or_bad_key_is_401(headers: dict[str, str], code: str) -> None:
    async def go() -> Any:
        async with gateway() as c:
            return await c.post("/v1/chat/completions", json=chat_body(), headers=headers)

    r = run(go())
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == code


def test_auth_comes_before_body_parsing() -> None:
    """An unauthenticated client learns nothing about the body (401, not 422)."""

    async def go() -> Any:
        async with gateway() as c:
            return await c.post(
                "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
            )

    assert run(go()).status_code == 401


def test_good_keys_both_headers() -> None:
    async def go() -> list[int]:
        async with gateway() as c:
            a = await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)
            b = await c.post("/v1/chat/completions", json=chat_body(), headers={"X-API-Key": "sk-bob-456"})
            m = await c.get("/v1/models", headers=BOB)
            return [a.status_code, b.status_code, m.status_code]

    assert run(go()) == [200, 200, 200]


def test_no_keys_configured_refuses_unless_anonymous_is_allowed() -> None:
    async def go(**kw: Any) -> Any:
        async with gateway(make_settings(api_keys=None, **kw)) as c:
            return await c.post("/v1/chat/completions", json=chat_body())

    r = run(go())
    assert r.status_code == 401 and r.json()["error"]["code"] == "no_keys_configured"
    assert run(go(allow_anonymous=True)).status_code == 200


def test_keystore_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "keys.txt"
    f.write_text("# team keys\nalice: sk-a\n\nbob:sk-b  \n")
    store = KeyStore.load("sk-plain, carol:sk-c", f)
    assert len(store) == 4
    assert store.check("sk-a") == "alice" and store.check("sk-b") == "bob" and store.check("sk-c") == "carol"
    assert store.check("sk-plain") == default_key_id("sk-plain") and default_key_id("sk-plain").startswith(
        "key-"
    )
    assert store.check("sk-") is None and store.check("") is None and store.check(None) is None
    bad = tmp_path / "bad.txt"
    bad.write_text("just-a-secret-without-id\n")
    with pytest.raises(ConfigError) as exc:
        KeyStore.load(None, bad)
    assert "bad.txt:1" in str(exc.value) and "just-a-secret" not in str(exc.value)  # never echo a key
    with pytest.raises(ConfigError, match="twice"):
        KeyStore.load("a:1,a:2")


# ---------------------------------------------------------------- rate limit


def test_token_bucket_retry_after_is_computed_from_the_bucket() -> None:
    clock = FakeClock()
    rl = RateLimiter(burst=3, rate_per_s=0.5, clock=clock)
    assert [rl.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.acquire("k") == pytest.approx(2.0)  # one token at 0.5/s
    clock.advance(1.0)
    assert rl.acquire("k") == pytest.approx(1.0)  # half a token back
    clock.advance(1.0)
    assert rl.acquire("k") == 0.0
    assert rl.acquire("other") == 0.0  # buckets are per key
    never = RateLimiter(burst=1, rate_per_s=0.0, clock=clock)
    never.acquire("k")
    assert never.acquire("k") == RateLimiter.MAX_RETRY_AFTER_S


def test_100_concurrent_requests_on_a_burst_10_key_give_exactly_90_429s() -> None:
    clock = FakeClock()
    settings = make_settings(limits_burst=10, limits_rate_per_s=0.001)  # ~0 refill: 1 token / 1000 s

    async def go() -> tuple[Counter[int], set[str], int, int]:
        async with gateway(settings, clock=clock) as c:
            rs = await asyncio.gather(
                *(
                    c.post("/v1/chat/completions", json=chat_body(max_tokens=2), headers=ALICE)
                    for _ in range(100)
                )
            )
            retry = {r.headers.get("retry-after", "") for r in rs if r.status_code == 429}
            other_key = (
                await c.post("/v1/chat/completions", json=chat_body(max_tokens=2), headers=BOB)
            ).status_code
            clock.advance(1000.0)  # exactly one token comes back
            again = (
                await c.post("/v1/chat/completions", json=chat_body(max_tokens=2), headers=ALICE)
            ).status_code
            return Counter(r.status_code for r in rs), retry, other_key, again

    statuses, retry_after, other_key, again = run(go())
    assert statuses == {200: 10, 429: 90}
    assert retry_after == {"1000"}  # (1 - 0 tokens) / 0.001 per s
    assert other_key == 200  # bob has his own bucket
    assert again == 200


def test_429_body() -> None:
    async def go() -> Any:
        async with gateway(make_settings(limits_burst=1, limits_rate_per_s=0.5), clock=FakeClock()) as c:
            await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)
            return await c.post("/v1/chat/completions", json=chat_body(), headers=ALICE)

    r = run(go())
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    err = r.json()["error"]
    assert (
        err["type"] == "rate_limit_error"
        and err["code"] == "rate_limit_exceeded"
        and "`alice`" in err["message"]
    )


# ---------------------------------------------------------------- concurrency + queue


def test_queue_full_is_503_with_retry_after() -> None:
    """2 running + 2 queued fit; the other 4 of 8 simultaneous requests are turned away at once."""
    fake = create_fake_engine(token_delay=0.02)  # 16 tokens x 20 ms = 0.32 s per request
    settings = make_settings(limits_max_concurrency=2, limits_max_queue=2)

    async def go() -> tuple[Counter[int], list[Any], int]:
        async with gateway(settings, fake=fake) as c:
            rs = await asyncio.gather(
                *(c.post("/v1/chat/completions", json=chat_body(), headers=ALICE) for _ in range(8))
            )
            return (
                Counter(r.status_code for r in rs),
                [r for r in rs if r.status_code == 503],
                fake.state.fake["max_active"],
            )

    statuses, rejected, max_active = run(go())
    assert statuses == {200: 4, 503: 4}
    assert max_active == 2  # the engine never saw more than max_concurrency
    for r in rejected:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "overloaded_error" and r.json()["error"]["code"] == "queue_full"


def test_queue_wait_is_bounded() -> None:
    async def go() -> None:
        lim = ConcurrencyLimiter(max_concurrency=1, max_queue=5, timeout_s=0.1)
        held = await lim.acquire()
        with pytest.raises(Overloaded) as exc:
            await lim.acquire()
        assert exc.value.code == "queue_timeout" and exc.value.retry_after >= 1
        assert lim.waiting == 0
        held.release()
        held.release()  # idempotent
        assert lim.active == 0
        again = await asyncio.wait_for(lim.acquire(), 1)
        again.release()

    run(go())


def test_queue_is_fifo_and_slots_are_handed_over() -> None:
    async def go() -> list[int]:
        changes: list[tuple[int, int]] = []
        lim = ConcurrencyLimiter(1, 10, 5, on_change=lambda a, w: changes.append((a, w)))
        order: list[int] = []
        first = await lim.acquire()

        async def worker(i: int) -> None:
            slot = await lim.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            slot.release()

        tasks = [asyncio.create_task(worker(i)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert lim.waiting == 5 and max(w for _, w in changes) == 5
        first.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert lim.active == 0 and lim.waiting == 0
        return order

    assert run(go()) == [0, 1, 2, 3, 4]
