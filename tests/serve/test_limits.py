"""API keys (401), per-key request buckets (429 + Retry-After, exact with an injected clock), bounded
concurrency + queue (503 + Retry-After). Fairness between keys: test_scheduler.py and test_hardening.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from supportlm.errors import ConfigError
from supportlm.serve.auth import KeyStore, default_key_id
from supportlm.serve.budgets import MAX_WAIT_S, LocalBuckets
from supportlm.serve.errors import Overloaded
from supportlm.serve.limits import RequestRate
from supportlm.serve.scheduler import FairScheduler

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
        ({"Authorization": "Bearer sk-alice-012345678"}, "invalid_api_key"),  # a prefix of a real key
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
            b = await c.post(
                "/v1/chat/completions", json=chat_body(), headers={"X-API-Key": "sk-bob-4567890123"}
            )
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
    a, b, c, plain = ("sk-" + x * 16 for x in "abcp")
    f.write_text(f"# team keys\nalice: {a}\n\nbob:{b}  \n")
    store = KeyStore.load(f"{plain}, carol:{c}", f)
    assert len(store) == 4
    assert store.check(a) == "alice" and store.check(b) == "bob" and store.check(c) == "carol"
    assert store.check(plain) == default_key_id(plain) and default_key_id(plain).startswith("key-")
    assert store.check("sk-") is None and store.check("") is None and store.check(None) is None
    bad = tmp_path / "bad.txt"
    bad.write_text("just-a-secret-without-id\n")
    with pytest.raises(ConfigError) as exc:
        KeyStore.load(None, bad)
    assert "bad.txt:1" in str(exc.value) and "just-a-secret" not in str(exc.value)  # never echo a key
    with pytest.raises(ConfigError, match="twice"):
        KeyStore.load(f"a:{a},a:{b}")


@pytest.mark.parametrize("where", ["env", "file"])
def test_short_keys_are_refused_at_startup_naming_the_key_id_not_the_key(tmp_path: Path, where: str) -> None:
    f = tmp_path / "keys.txt"
    f.write_text("dev: sk-dev\n")
    with pytest.raises(ConfigError) as exc:
        KeyStore.load("dev:sk-dev") if where == "env" else KeyStore.load(None, f)
    msg = str(exc.value)
    assert "`dev` is 6 characters" in msg and "at least 16" in msg and "secrets.token_urlsafe" in msg
    assert "sk-dev" not in msg
    assert where == "env" or "keys.txt:1" in msg
    assert len(KeyStore.load("dev:sk-dev", min_length=6)) == 1  # the operator may lower it, knowingly


def test_docs_examples_use_keys_the_gateway_accepts() -> None:
    """Every key the README, docs/ and compose.yaml show is long enough to start the gateway."""
    import re

    from .conftest import ROOT

    texts = [ROOT / "README.md", ROOT / "docker" / "compose.yaml", *sorted((ROOT / "docs").glob("*.md"))]
    keys = []
    for path in texts:
        text = path.read_text(encoding="utf-8")
        keys += [(path.name, k) for k in re.findall(r"Bearer ([A-Za-z0-9_\-]+)", text)]
        for spec in re.findall(r"SUPPORTLM_API_KEYS[=:]\s*\"?([A-Za-z0-9][^\s\"]*)", text):
            keys += [(path.name, item.partition(":")[2] or item) for item in spec.split(",")]
    keys = [
        (n, k)
        for n, k in keys
        if not k.startswith(("$", "<", "...")) and k not in ("...", "id", "key", "wrong")
    ]
    assert keys, "no example keys found: the pattern above is stale"
    assert [(n, k) for n, k in keys if len(k) < 16] == []


# ---------------------------------------------------------------- rate limit


def test_token_bucket_retry_after_is_computed_from_the_bucket() -> None:
    clock = FakeClock()
    rl = RequestRate(LocalBuckets(clock), burst=3, rate_per_s=0.5)

    async def go() -> None:
        assert [await rl.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert await rl.acquire("k") == pytest.approx(2.0)  # one token at 0.5/s
        clock.advance(1.0)
        assert await rl.acquire("k") == pytest.approx(1.0)  # half a token back
        clock.advance(1.0)
        assert await rl.acquire("k") == 0.0
        assert await rl.acquire("other") == 0.0  # buckets are per key
        never = RequestRate(LocalBuckets(clock), burst=1, rate_per_s=0.0)
        await never.acquire("k")
        assert await never.acquire("k") == MAX_WAIT_S

    run(go())


def test_100_concurrent_requests_on_a_burst_10_key_give_exactly_90_429s() -> None:
    clock = FakeClock()
    settings = make_settings(limits={"burst": 10, "rate_per_s": 0.001})  # ~0 refill: 1 token / 1000 s

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
        async with gateway(make_settings(limits={"burst": 1, "rate_per_s": 0.5}), clock=FakeClock()) as c:
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
    settings = make_settings(limits={"max_concurrency": 2, "max_queue": 2})

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
        lim = FairScheduler(max_concurrency=1, max_queue=5, timeout_s=0.1)
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
        lim = FairScheduler(1, 10, 5, on_change=lambda a, w: changes.append((a, w)))  # one key: FIFO
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
