"""Paired bootstrap intervals (supportlm.evaluate.intervals) on data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from supportlm.evaluate.intervals import paired_difference, paired_ratio_difference, rows_to_resolve


def _pair(n: int, shift: float, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two systems on the same rows: row difficulty (large spread) shared, plus a small per-row difference."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.05, 0.6, n)
    return difficulty + shift + rng.normal(0, noise, n), difficulty


def test_a_real_shift_is_inside_the_interval_and_zero_is_not():
    a, b = _pair(400, 0.03, 0.05)
    r = paired_difference(a, b, scale=100, seed=1)
    assert r["low"] < 3.0 < r["high"] and r["low"] > 0  # 3 points, resolved
    assert r["delta"] == pytest.approx(100 * float(np.mean(a - b)))
    assert r["n"] == 400 and r["sd"] == pytest.approx(100 * float(np.std(a - b, ddof=1)))
    assert r["half_width"] == pytest.approx(1.96 * r["sd"] / math.sqrt(400), rel=0.15)  # ~ the normal theory


def test_pairing_is_what_makes_the_interval_narrow():
    """The shared row difficulty cancels in each row's difference: resampling the two systems independently
    (as if they had answered different rows) gives a far wider interval for the same data."""
    from scipy.stats import bootstrap

    a, b = _pair(200, 0.01, 0.03)
    paired = paired_difference(a, b, seed=3)
    unpaired = bootstrap((a, b), lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis), vectorized=True,
                         n_resamples=2000, method="percentile", rng=3).confidence_interval  # fmt: skip
    assert (paired["high"] - paired["low"]) * 3 < unpaired.high - unpaired.low


def test_identical_replies_give_a_zero_width_interval_and_seeds_repeat():
    a, _ = _pair(50, 0, 0.05)
    r = paired_difference(a, a, scale=100)
    assert (r["delta"], r["low"], r["high"], r["sd"]) == (0.0, 0.0, 0.0, 0.0)
    x, y = _pair(60, 0.02, 0.05, seed=5)
    assert paired_difference(x, y, seed=7) == paired_difference(x, y, seed=7)


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="paired rows"):
        paired_difference([0.1, 0.2], [0.1])


def test_token_weighted_ratio_matches_the_pooled_perplexity():
    rng = np.random.default_rng(2)
    tokens = rng.integers(10, 80, 300).astype(float)
    nll_b = tokens * rng.uniform(1.5, 2.5, 300)  # per-row NLL sums
    nll_a = nll_b * 1.05 + rng.normal(0, 2, 300)
    r = paired_ratio_difference(nll_a, nll_b, tokens, seed=0)
    pooled = math.log(math.exp(nll_a.sum() / tokens.sum()) / math.exp(nll_b.sum() / tokens.sum()))
    assert r["delta"] == pytest.approx(pooled)
    assert r["low"] < r["delta"] < r["high"] and r["low"] > 0  # a 5% worse model: resolved


def test_rows_to_resolve_is_the_normal_theory_count():
    assert rows_to_resolve(10.0, 2.0) == math.ceil((1.959963984540054 * 10 / 2) ** 2) == 97
    assert rows_to_resolve(float("nan"), 2.0) is None and rows_to_resolve(0.0, 2.0) == 2
