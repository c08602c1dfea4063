"""Token buckets (supportlm.serve.budgets): in-process arithmetic, and Redis shared by two "replicas".

The Redis tests start a real `redis-server` (Debian's package; .ci/run installs it) on a free loopback port
with persistence off, and stop it after.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from supportlm.serve.budgets import MAX_WAIT_S, LocalBuckets, RedisBuckets


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_local_bucket_takes_refills_refunds_and_says_how_long():
    clock = FakeClock()
    b = LocalBuckets(clock)

    async def main():
        assert await b.take("k", 100, 10, 60) == 0.0
        assert await b.take("k", 100, 10, 60) == pytest.approx(2.0)  # 40 left, 20 missing at 10/s
        clock.t += 2
        assert await b.take("k", 100, 10, 60) == 0.0  # refilled to 60
        await b.give("k", 100, 10, 500)  # a refund never exceeds the capacity
        assert await b.take("k", 100, 10, 100) == 0.0 and await b.take("k", 100, 10, 1) > 0
        assert await b.take("never", 5, 0, 10) == MAX_WAIT_S  # no refill, more than the capacity

    run(main())


def test_local_buckets_stay_bounded_by_dropping_full_ones():
    clock = FakeClock()
    b = LocalBuckets(clock, max_buckets=100)
    for i in range(100):
        b.take_now(f"addr-{i}", 10, 1, 1)
    clock.t += 60  # every bucket is full again
    b.take_now("newcomer", 10, 1, 1)
    assert len(b) == 1


# ---------------------------------------------------------------- redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install redis-server; .ci/run does)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.terminate()
    proc.wait(10)


def test_two_replicas_share_one_budget_in_redis(redis_url):
    url, _ = redis_url

    async def main():
        one, two = RedisBuckets(url, prefix="t1:"), RedisBuckets(url, prefix="t1:")
        try:
            assert await one.take("key-a", 10, 0.001, 6) == 0.0
            wait = await two.take("key-a", 10, 0.001, 6)  # the other replica sees the same bucket
            assert wait > 1000
            await two.give("key-a", 10, 0.001, 3)  # a refund on one replica ...
            assert await one.take("key-a", 10, 0.001, 6) == 0.0  # ... is spendable on the other
            assert await one.take("key-b", 10, 0.001, 6) == 0.0  # keys do not share
            ttl = await one.client.ttl("t1:key-a")
            assert 60 <= ttl <= 10 / 0.001 + 60
            assert one.failures == two.failures == 0
        finally:
            await one.aclose()
            await two.aclose()

    run(main())


def test_redis_down_keeps_limits_per_replica(redis_url, caplog):
    url, proc = redis_url
    proc.terminate()
    proc.wait(10)

    async def main():
        b = RedisBuckets(url, prefix="t2:")
        try:
            assert await b.take("k", 10, 0.001, 8) == 0.0  # served by the local fallback
            assert await b.take("k", 10, 0.001, 8) > 1000  # and still limited
            assert b.failures == 2
        finally:
            await b.aclose()

    with caplog.at_level("WARNING", logger="supportlm.serve"):
        run(main())
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "limits apply per replica" in warnings[0].getMessage()  # once, not per call
