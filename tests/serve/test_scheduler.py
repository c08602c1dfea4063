"""The fair scheduler (supportlm.serve.scheduler): one key cannot take every slot or the whole queue."""

from __future__ import annotations

import asyncio

import pytest

from supportlm.serve.errors import Overloaded
from supportlm.serve.scheduler import FairScheduler


def run(coro):
    return asyncio.run(coro)


async def _fill(s: FairScheduler, key: str, n: int) -> list:
    return [await s.acquire(key) for _ in range(n)]


def test_a_key_alone_is_capped_below_the_total_and_another_key_runs_at_once():
    async def main():
        s = FairScheduler(max_concurrency=8, max_queue=32, timeout_s=5, per_key_concurrency=6)
        slots = await _fill(s, "flood", 6)  # alone: up to per_key_concurrency, no waiting
        assert s.active == 6 and s.waiting == 0
        extra = asyncio.ensure_future(s.acquire("flood"))  # the 7th waits although 2 slots are free
        await asyncio.sleep(0)
        assert not extra.done() and s.waiting == 1
        polite = await asyncio.wait_for(s.acquire("polite"), 0.1)  # a free slot, straight away
        assert polite.key_id == "polite" and s.active == 7
        polite.release()
        slots[0].release()  # the flood's own slot frees: its waiter gets it
        assert (await asyncio.wait_for(extra, 0.1)).key_id == "flood"

    run(main())


def test_shares_shrink_as_keys_become_busy():
    async def main():
        s = FairScheduler(max_concurrency=8, max_queue=32, timeout_s=5, per_key_concurrency=6)
        assert s.share("a") == 6
        await _fill(s, "a", 2)
        await _fill(s, "b", 2)
        await _fill(s, "c", 2)
        assert s.share("d") == 2  # 4 busy keys: 8 // 4
        await _fill(s, "d", 2)
        late = asyncio.ensure_future(s.acquire("d"))
        await asyncio.sleep(0)
        assert not late.done() and s.active == 8
        late.cancel()

    run(main())


def test_a_freed_slot_goes_to_the_waiting_key_holding_fewest():
    async def main():
        s = FairScheduler(max_concurrency=2, max_queue=8, timeout_s=5, per_key_concurrency=2)
        a1, a2 = await _fill(s, "a", 2)
        a3 = asyncio.ensure_future(s.acquire("a"))  # first in the queue
        await asyncio.sleep(0)
        b1 = asyncio.ensure_future(s.acquire("b"))  # later, but holds nothing
        await asyncio.sleep(0)
        a1.release()
        assert (await asyncio.wait_for(b1, 0.1)).key_id == "b"
        assert not a3.done()
        a2.release()
        assert (await asyncio.wait_for(a3, 0.1)).key_id == "a"

    run(main())


def test_full_queue_sheds_the_flood_not_the_newcomer():
    async def main():
        s = FairScheduler(max_concurrency=2, max_queue=4, timeout_s=5, per_key_concurrency=1)
        await s.acquire("flood")
        await s.acquire("other")
        waiters = [asyncio.ensure_future(s.acquire("flood")) for _ in range(4)]
        await asyncio.sleep(0)
        assert s.waiting == 4
        polite = asyncio.ensure_future(s.acquire("polite"))
        await asyncio.sleep(0.01)
        assert not polite.done() and s.waiting == 4  # queued in place of the flood's newest
        with pytest.raises(Overloaded) as err:
            await waiters[-1]
        assert err.value.code == "queue_full" and "fewer queued" in err.value.message
        assert all(not w.done() for w in waiters[:-1])
        # a fourth key arriving now: the flood still has the most waiting, so it is shed again
        third = asyncio.ensure_future(s.acquire("third"))
        await asyncio.sleep(0.01)
        assert waiters[-2].done() and not third.done()
        for w in (*waiters, polite, third):
            w.cancel()

    run(main())


def test_equal_queues_refuse_the_newcomer_and_the_per_key_queue_cap_holds():
    async def main():
        s = FairScheduler(max_concurrency=1, max_queue=2, timeout_s=5, per_key_concurrency=1, per_key_queue=1)
        await s.acquire("a")
        wa = asyncio.ensure_future(s.acquire("a"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as err:
            await s.acquire("a")  # its one queue place is taken
        assert err.value.code == "key_queue_full"
        wb = asyncio.ensure_future(s.acquire("b"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as err:
            await s.acquire("c")  # a and b have 1 waiting each, c would have 1: nobody is heavier
        assert err.value.code == "queue_full"
        wa.cancel()
        wb.cancel()

    run(main())


def test_queue_timeout_and_a_cancelled_waiter_leave_no_trace():
    async def main():
        s = FairScheduler(max_concurrency=1, max_queue=4, timeout_s=0.05)
        slot = await s.acquire("a")
        with pytest.raises(Overloaded) as err:
            await s.acquire("b")
        assert err.value.code == "queue_timeout" and s.waiting == 0
        waiter = asyncio.ensure_future(s.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert s.waiting == 0
        slot.release()
        slot.release()  # idempotent
        assert s.active == 0 and s.active_by_key == {}

    run(main())


def test_a_key_that_sent_recently_still_counts_as_busy():
    """A polite client between its requests keeps the flood held to half the slots for fair_window_s."""

    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()

    async def main():
        s = FairScheduler(
            max_concurrency=8, max_queue=32, timeout_s=5, per_key_concurrency=8, fair_window_s=10, clock=clock
        )
        (await s.acquire("polite")).release()  # done already: nothing running or queued for it
        clock.t = 5.0
        assert s.share("flood") == 4
        await _fill(s, "flood", 4)
        late = asyncio.ensure_future(s.acquire("flood"))
        await asyncio.sleep(0)
        assert not late.done()  # the 5th waits although 4 slots are free: the polite key may be back
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)
        clock.t = 16.0  # polite quiet for longer than the window: the flood may use every slot
        assert s.share("flood") == 8
        more = await _fill(s, "flood", 4)
        assert s.active == 8 and len(more) == 4

    run(main())


def test_shared_concurrency_caps_each_key_only_while_others_are_busy():
    async def main():
        s = FairScheduler(max_concurrency=8, max_queue=8, timeout_s=5, shared_concurrency=2)
        alone = await _fill(s, "a", 8)  # alone: every slot (work-conserving)
        for slot in alone:
            slot.release()
        await s.acquire("b")
        assert s.share("a") == 2  # b busy: a may hold 2, not 8 // 2 = 4

    run(main())


# ---------------------------------------------------------------- a client leaving while queued (gateway.py)


@pytest.mark.parametrize("shed", [False, True], ids=["granted", "shed"])
def test_a_cancelled_acquire_never_returns_a_slot(shed: bool) -> None:
    """Gateway.acquire cancels a queued acquire when the client leaves. If the slot was granted (or the
    waiter shed) just before the cancel took effect, the acquire still ends cancelled (or Overloaded), never
    with a Slot: a granted slot is handed on by the scheduler itself. So a caller that cancelled it never
    holds a Slot to release (the branch Gateway.acquire once had for that was unreachable)."""

    async def main() -> None:
        s = FairScheduler(max_concurrency=1, max_queue=2, timeout_s=5, per_key_queue=2)
        held = await s.acquire("a")
        first = asyncio.ensure_future(s.acquire("b"))
        b = asyncio.ensure_future(s.acquire("b"))
        await asyncio.sleep(0)
        assert s.waiting == 2
        if shed:  # the queue is full: a newcomer pushes out b's newest waiter (b has the most waiting) ...
            c = asyncio.ensure_future(s.acquire("c"))
            await asyncio.sleep(0)
        else:  # ... or a's slot goes to b's first waiter; then that one's slot to b
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            held.release()  # b's future holds the grant; b's task has not run yet
        b.cancel()  # the client left in the same loop turn
        (outcome,) = await asyncio.gather(b, return_exceptions=True)
        if shed:
            assert isinstance(outcome, Overloaded) and outcome.code == "queue_full"
            for task in (first, c):
                task.cancel()
            await asyncio.gather(first, c, return_exceptions=True)
            held.release()
        else:
            assert b.cancelled()
        await asyncio.sleep(0)
        assert s.active == 0 and s.waiting == 0 and not s.active_by_key  # the grant was handed on, not leaked

    run(main())


def test_unless_client_leaves_cancels_the_work_when_the_client_goes_first() -> None:
    from supportlm.serve.gateway import unless_client_leaves
    from supportlm.serve.logging import RequestContext

    async def main() -> None:
        cancelled = asyncio.Event()

        async def forever() -> str:
            try:
                await asyncio.sleep(60)
            finally:
                cancelled.set()
            return "never"

        async def gone() -> dict:
            return {"type": "http.disconnect"}

        async def stays() -> dict:
            await asyncio.sleep(60)
            return {"type": "http.disconnect"}

        ctx = RequestContext("rid", "POST", "/v1/chat/completions")
        assert await unless_client_leaves(ctx, gone, forever()) is None
        assert ctx.client_disconnected and cancelled.is_set()  # cancelled and awaited: its clean-up ran

        async def quick() -> str:
            return "reply"

        ctx = RequestContext("rid", "POST", "/v1/chat/completions")
        assert await unless_client_leaves(ctx, stays, quick()) == "reply" and not ctx.client_disconnected
        with pytest.raises(Overloaded):  # the work's exception is the caller's
            await unless_client_leaves(ctx, stays, s_raise())
        cancelled.clear()
        outer = asyncio.ensure_future(unless_client_leaves(ctx, stays, forever()))
        await asyncio.sleep(0.01)
        outer.cancel()  # the request itself is cancelled (server shutdown): the work goes too
        await asyncio.gather(outer, return_exceptions=True)
        await asyncio.wait_for(cancelled.wait(), 1)

    async def s_raise() -> None:
        raise Overloaded("full", code="queue_full")

    run(main())
