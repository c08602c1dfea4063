"""Which request runs next: bounded concurrency and queue, shared fairly between API keys.

One process-wide budget of `max_concurrency` engine slots and `max_queue` waiting places, and per key:
- **an in-flight cap that follows demand**: a key may hold at most its share of the slots,
  `min(per_key_concurrency, max(1, max_concurrency // busy keys))`, where a key is busy while it has a
  request running or queued and for `fair_window_s` after its last one (a client sending one request a
  second is busy all the time, not only during its half-second requests). A key alone gets up to
  `per_key_concurrency` slots (work-conserving); as soon as a second key is busy each is held to half,
  with four to a quarter, so slots free up for the newcomer as the flood's requests finish.
- **a queue place cap** (`per_key_queue`), and when the queue is full a newcomer from a key with fewer
  waiting requests pushes out the newest waiter of the key with the most (that one gets the 503):
  the flood is shed, not the polite client.
- **max-min wake-up**: a freed slot goes to the waiting key that holds the fewest slots (FIFO within a
  key, oldest head first between equals).

Synchronous bookkeeping (no await between check and update), so it is exact under asyncio; the caps are
per process (each gateway replica has its own slots).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from supportlm.serve.errors import Overloaded


class Slot:
    """One admitted request; release() is idempotent (stream responses release on close)."""

    def __init__(self, scheduler: FairScheduler, key_id: str) -> None:
        self._scheduler = scheduler
        self.key_id = key_id
        self._start = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler._release(self.key_id, time.monotonic() - self._start)


@dataclass
class _Waiter:
    key_id: str
    future: asyncio.Future[None]
    since: float = field(default_factory=time.monotonic)
    shed: bool = False  # pushed out of a full queue by a lighter key


class FairScheduler:
    """At most `max_concurrency` holders and `max_queue` waiters, shared between keys (module docstring)."""

    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        timeout_s: float,
        per_key_concurrency: int | None = None,
        per_key_queue: int | None = None,
        fair_window_s: float = 0.0,
        shared_concurrency: int | None = None,
        on_change: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.per_key_concurrency = min(per_key_concurrency or max_concurrency, max_concurrency)
        self.per_key_queue = min(per_key_queue or max_queue, max_queue)
        self.fair_window_s = fair_window_s
        self.shared_concurrency = shared_concurrency
        self.clock = clock
        self.last_seen: dict[str, float] = {}
        self.active = 0
        self.active_by_key: dict[str, int] = {}
        self.queues: dict[str, deque[_Waiter]] = {}
        self._service_s = 1.0  # EWMA of time a request holds a slot (for Retry-After)
        self._on_change = on_change or (lambda active, waiting: None)

    # -------------------------------------------------------- views

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def busy_keys(self, extra: str | None = None) -> int:
        now = self.clock()
        recent = {k for k, t in self.last_seen.items() if now - t <= self.fair_window_s}
        keys = (
            recent
            | {k for k, n in self.active_by_key.items() if n}
            | {k for k, q in self.queues.items() if q}
        )
        if extra is not None:
            keys.add(extra)
        return max(1, len(keys))

    def _seen(self, key_id: str) -> None:
        now = self.clock()
        self.last_seen[key_id] = now
        if len(self.last_seen) > 4 * (len(self.active_by_key) + len(self.queues)) + 1024:
            self.last_seen = {k: t for k, t in self.last_seen.items() if now - t <= self.fair_window_s}

    def share(self, key_id: str | None = None) -> int:
        """Slots one key may hold now (it counts itself as busy)."""
        busy = self.busy_keys(key_id)
        if busy == 1:
            return self.per_key_concurrency
        fair = max(1, self.max_concurrency // busy)
        return min(self.per_key_concurrency, fair, self.shared_concurrency or fair)

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free: queue length x service time / parallelism."""
        return max(1.0, (self.waiting + 1) * self._service_s / self.max_concurrency)

    # -------------------------------------------------------- admission

    def _can_run(self, key_id: str) -> bool:
        return self.active < self.max_concurrency and self.active_by_key.get(key_id, 0) < self.share(key_id)

    def _start(self, key_id: str) -> Slot:
        self.active += 1
        self.active_by_key[key_id] = self.active_by_key.get(key_id, 0) + 1
        return Slot(self, key_id)

    def _shed_heaviest(self, key_id: str) -> bool:
        """Queue full: push out the newest waiter of the key with the most waiting, if that key has more
        waiting than `key_id` would after joining. True if a place was freed."""
        mine = len(self.queues.get(key_id, ())) + 1
        heaviest = max(
            (k for k, q in self.queues.items() if q), key=lambda k: len(self.queues[k]), default=None
        )
        if heaviest is None or len(self.queues[heaviest]) <= mine:
            return False
        victim = self.queues[heaviest].pop()
        victim.shed = True
        victim.future.cancel()
        return True

    async def acquire(self, key_id: str = "-") -> Slot:
        self._seen(key_id)
        queue = self.queues.get(key_id)
        if not queue and self._can_run(key_id):
            slot = self._start(key_id)
            self._on_change(self.active, self.waiting)
            return slot
        if len(queue or ()) >= self.per_key_queue:  # checked first: it must not shed another key for nothing
            whole = self.per_key_queue >= self.max_queue  # one key may fill the queue: it is just full
            raise Overloaded(
                f"Server is at capacity ({self.active} running, {self.waiting} queued); retry later"
                if whole
                else f"This key has {len(queue or ())} requests queued (the per-key limit) and "
                f"{self.active_by_key.get(key_id, 0)} running; retry later",
                code="queue_full" if whole else "key_queue_full",
                retry_after=self.retry_after(),
            )
        if self.waiting >= self.max_queue and not self._shed_heaviest(key_id):
            raise Overloaded(
                f"Server is at capacity ({self.active} running, {self.waiting} queued); retry later",
                code="queue_full",
                retry_after=self.retry_after(),
            )
        waiter = _Waiter(key_id, asyncio.get_running_loop().create_future())
        self.queues.setdefault(key_id, deque()).append(waiter)
        self._on_change(self.active, self.waiting)
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: 3.11's can swallow a cancel
                await asyncio.shield(waiter.future)
        except (TimeoutError, asyncio.CancelledError) as exc:
            fut = waiter.future
            if fut.done() and not fut.cancelled():
                # the slot was handed to us just as we gave up: pass it on
                self._finish(key_id)
                self._wake()
            else:
                fut.cancel()
                q = self.queues.get(key_id)
                if q is not None and waiter in q:
                    q.remove(waiter)
                    if not q:
                        del self.queues[key_id]
                self._wake()  # the queue ahead of others got shorter, or a share grew
            self._on_change(self.active, self.waiting)
            if waiter.shed:
                raise Overloaded(
                    "Pushed out of the full queue by a key with fewer queued requests; retry later",
                    code="queue_full",
                    retry_after=self.retry_after(),
                ) from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Overloaded(
                f"Waited {self.timeout_s:g} s in the queue without a free slot; retry later",
                code="queue_timeout",
                retry_after=self.retry_after(),
            ) from None
        return Slot(self, key_id)

    # -------------------------------------------------------- release + wake-up

    def _finish(self, key_id: str) -> None:
        self.active -= 1
        left = self.active_by_key.get(key_id, 0) - 1
        if left > 0:
            self.active_by_key[key_id] = left
        else:
            self.active_by_key.pop(key_id, None)

    def _wake(self) -> None:
        """Hand free slots to waiting keys, fewest slots held first (max-min fair)."""
        while self.active < self.max_concurrency:
            ready = [k for k, q in self.queues.items() if q and self._can_run(k)]
            if not ready:
                break
            key_id = min(ready, key=lambda k: (self.active_by_key.get(k, 0), self.queues[k][0].since))
            waiter = self.queues[key_id].popleft()
            if not self.queues[key_id]:
                del self.queues[key_id]
            if waiter.future.done():
                continue
            self.active += 1
            self.active_by_key[key_id] = self.active_by_key.get(key_id, 0) + 1
            waiter.future.set_result(None)

    def _release(self, key_id: str, held_s: float) -> None:
        self._service_s = 0.8 * self._service_s + 0.2 * held_s
        self._finish(key_id)
        self._wake()
        self._on_change(self.active, self.waiting)
