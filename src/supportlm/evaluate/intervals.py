"""Paired bootstrap 95% intervals for the difference between two systems scored on the same rows.

Why paired: both systems answer the same prompts, so the spread between easy and hard prompts (far
larger than the difference between two quantizations) cancels out of each row's difference. Resampling
rows with replacement (scipy.stats.bootstrap, paired=True, percentile method) keeps each row's two
scores together (Koehn 2004's paired bootstrap for MT metrics).

Why the percentile method, not BCa: two close variants often give identical replies on most rows, and
BCa's jackknife acceleration is undefined on such degenerate data; percentile intervals stay defined.

`rows_to_resolve(sd, difference)`: how many rows a difference needs before a 95% interval excludes zero
(half-width 1.96 * sd / sqrt(n) below it), from the spread of per-row differences measured in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CONFIDENCE = 0.95
RESAMPLES = 2000
Z95 = 1.959963984540054


def _interval(statistic: Any, data: tuple[Any, ...], seed: int, resamples: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    res = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=resamples,
                    confidence_level=CONFIDENCE, method="percentile", rng=seed)  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, scale: float = 1.0, seed: int = 0, resamples: int = RESAMPLES
) -> dict[str, Any]:
    """mean(a) - mean(b) (times `scale`, e.g. 100 for ROUGE points) with its paired bootstrap 95% interval.

    Returns {delta, low, high, n, sd (of the per-row differences), half_width, rows_to_resolve_2}:
    rows_to_resolve_2 = rows a 2-unit difference would need for its interval to exclude zero at this sd.
    """
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64) * scale, np.asarray(b, dtype=np.float64) * scale
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired rows needed: got {x.shape} and {y.shape}")
    n = int(x.size)
    diff = x - y
    delta = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    if n < 2 or float(np.ptp(diff)) == 0.0:  # identical differences on every row: no spread to resample
        low = high = delta
    else:
        low, high = _interval(lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis), (x, y), seed, resamples)
    return {"delta": delta, "low": low, "high": high, "n": n, "sd": sd,
            "half_width": (high - low) / 2, "rows_to_resolve_2": rows_to_resolve(sd, 2.0)}  # fmt: skip


def paired_ratio_difference(
    num_a: Sequence[float],
    num_b: Sequence[float],
    den: Sequence[float],
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """sum(num_a)/sum(den) - sum(num_b)/sum(den) with its paired interval, rows resampled together.

    For token-weighted means such as NLL per reply token (num = a row's NLL sum, den = its tokens): the
    same reply tokens are scored under both models, so den is shared. exp() of the result and its bounds
    is the perplexity ratio a / b.
    """
    import numpy as np

    x, y, d = (np.asarray(v, dtype=np.float64) for v in (num_a, num_b, den))
    if not (x.shape == y.shape == d.shape) or x.ndim != 1:
        raise ValueError(f"paired rows needed: got {x.shape}, {y.shape}, {d.shape}")
    total = float(d.sum())
    delta = float((x.sum() - y.sum()) / total) if total else float("nan")
    if x.size < 2 or float(np.ptp(x - y)) == 0.0:
        low = high = delta
    else:
        low, high = _interval(
            lambda u, v, w, axis: (u.sum(axis=axis) - v.sum(axis=axis)) / w.sum(axis=axis), (x, y, d), seed, resamples
        )
    return {"delta": delta, "low": low, "high": high, "n": int(x.size)}


def rows_to_resolve(sd: float, difference: float) -> int | None:
    """Rows for a 95% interval of half-width `difference`: (1.96 sd / difference)^2, rounded up."""
    if math.isnan(sd) or difference <= 0:  # nan sd: fewer than two rows
        return None
    return max(2, math.ceil((Z95 * sd / difference) ** 2))


__all__ = ["CONFIDENCE", "paired_difference", "paired_ratio_difference", "rows_to_resolve"]
