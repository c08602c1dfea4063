"""How many CPU threads a decoding or training process should use on this machine right now."""

from __future__ import annotations

import os
import time


def busy_cores(window_s: float = 0.5) -> float | None:
    """Cores other processes keep busy right now: /proc/stat sampled over `window_s` (we sleep meanwhile).

    Not the load average: its 1-minute decay still reports ~2 busy cores a minute after the previous
    DVC stage (train) exited, which made the next stage pick 1 thread on an idle machine (237 s vs 176 s).
    """
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        t0, i0 = sample()
        time.sleep(window_s)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):  # not Linux
        return None
    total = t1 - t0
    return (1 - (i1 - i0) / total) * (os.cpu_count() or 1) if total > 0 else None


def resolve_threads(requested: int | None) -> int:
    """CPU threads for torch / llama.cpp: `requested`, or auto = the cores other processes leave idle.

    Why auto and not "all cores": decoding runs hundreds of tiny parallel regions per token, each
    ending in a barrier. When another process holds one of 2 cores, every barrier waits for the
    descheduled thread: measured on a busy 2-core box (load avg ~4), a batch-16 decode step of
    SmolLM2-135M took 3-5 s with 2 threads and 0.16 s with 1. On an idle machine auto = all cores.
    """
    if requested:
        return requested
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]  # runnable processes, 1-minute average
        except OSError:  # pragma: no cover - neither /proc nor getloadavg
            return cores
    return max(1, min(cores, int(cores - busy + 0.5)))
