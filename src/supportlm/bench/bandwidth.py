"""Memory bandwidth and the decode speed it allows.

Single-stream decoding reads every weight once per generated token, so on a CPU its ceiling is

    tokens/s <= memory bandwidth / model bytes per token   (~ the GGUF file size)

(the KV cache and activations are tiny next to the weights at short contexts). Decoding only *reads*
the weights, so the bound uses read bandwidth: a numpy reduction over a buffer much larger than the
last-level cache, split over 1..`threads` threads (the decode thread count), best of N, highest rate
seen. An earlier version used a one-thread copy counted STREAM-style (read + write bytes): that
understated what 2 decode threads can read, and f16 "reached" 103% of its bound, so the fractions
were flattering. The copy figure is still reported for reference.

Small models sit far below this bound: per-token fixed costs (graph build, ~30 layers of small
matmuls, sampling) dominate when the weights are only ~100 MB. The fraction is reported honestly.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


def copy_bandwidth(mb: int = 256, repeats: int = 5) -> dict[str, Any]:
    """Best-of-`repeats` copy bandwidth of an `mb` MiB float64 buffer, in GB/s (1e9 bytes).

    Returns:
        {"gb_s": read+write GB/s (STREAM Copy convention), "read_gb_s": the buffer size / time,
         "buffer_mb", "repeats", "best_s", "method"}.
    """
    n = mb * 2**20 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    nbytes = src.nbytes
    return {
        "gb_s": round(2 * nbytes / best / 1e9, 2),
        "read_gb_s": round(nbytes / best / 1e9, 2),
        "buffer_mb": mb,
        "repeats": repeats,
        "best_s": round(best, 5),
        "method": "numpy.copyto float64, 1 thread, best of N; GB/s = (read + written bytes) / s",
    }


def read_bandwidth(mb: int = 256, repeats: int = 5, threads: int = 1) -> dict[str, Any]:
    """Best read bandwidth of an `mb` MiB buffer in GB/s, over 1..`threads` threads (numpy's reductions
    release the GIL, so Python threads read in parallel), best of `repeats` each.

    Returns {"gb_s", "threads" (the count that gave it), "by_threads", "buffer_mb", "repeats", "method"}.
    """
    n = mb * 2**20 // 8
    buf = np.ones(n, dtype=np.float64)
    buf.sum()  # fault the pages in before timing
    by_threads: dict[int, float] = {}
    for k in range(1, max(1, threads) + 1):
        chunks = [buf[i * n // k : (i + 1) * n // k] for i in range(k)]
        best = float("inf")
        for _ in range(repeats):
            workers = [threading.Thread(target=np.sum, args=(c,)) for c in chunks]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            best = min(best, time.perf_counter() - t0)
        by_threads[k] = round(buf.nbytes / best / 1e9, 2)
    top = max(by_threads, key=by_threads.__getitem__)
    return {
        "gb_s": by_threads[top],
        "threads": top,
        "by_threads": by_threads,
        "buffer_mb": mb,
        "repeats": repeats,
        "method": "numpy sum of a float64 buffer split over 1..N threads, best of N, highest rate; "
        "GB/s = bytes read / s",
    }


def decode_bound(bandwidth_gb_s: float, model_bytes: int) -> float:
    """Bandwidth-bound single-stream decode speed, tokens/s: every weight byte read once per token."""
    if model_bytes <= 0:
        raise ValueError(f"model_bytes must be > 0. Given: {model_bytes}")
    return bandwidth_gb_s * 1e9 / model_bytes


def bound_table(
    bandwidth_gb_s: float, models: dict[str, int], measured_tps: dict[str, float | None]
) -> list[dict[str, Any]]:
    """Per model: bytes, bound tokens/s, measured decode tokens/s and the fraction of the bound reached."""
    rows = []
    for name, size in models.items():
        bound = decode_bound(bandwidth_gb_s, size)
        tps = measured_tps.get(name)
        rows.append({
            "model": name,
            "size_bytes": size,
            "bound_tokens_per_s": round(bound, 1),
            "decode_tokens_per_s": round(tps, 1) if tps else None,
            "fraction_of_bound": round(tps / bound, 3) if tps else None,
        })  # fmt: skip
    return rows
