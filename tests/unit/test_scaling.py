"""data-bench's targets: times compare only within one invocation, and only over the stages both runs timed."""

from __future__ import annotations

from supportlm.data.scaling import _targets


def _run(rows: int, invocation: str | None, **seconds: float) -> dict:
    return {"rows": rows, "invocation": invocation, "seconds": seconds, "peak_rss_mb": 100.0}


def test_time_per_row_ratio_needs_one_invocation_and_common_stages():
    mid = _run(270_000, "t1", ingest=27.0, clean=243.0, format=270.0)
    big = _run(1_000_000, "t1", ingest=100.0, clean=1_100.0)  # no format: compared on ingest+clean only
    ratio = [t for t in _targets([mid, big]) if "time per row" in t["name"]]
    assert ratio == [{"name": "1,000,000 rows: time per row vs 270,000 rows (ingest+clean)", "goal": "<= 1.3x",
                      "measured": 1.2, "met": True}]  # fmt: skip
    other_session = big | {"invocation": "t0"}
    assert not [t for t in _targets([mid, other_session]) if "time per row" in t["name"]]
    assert not [t for t in _targets([mid | {"invocation": None}, big | {"invocation": None}]) if "time per row" in t["name"]]
    slow = _run(1_000_000, "t1", ingest=150.0, clean=1_500.0)
    assert [t["met"] for t in _targets([mid, slow]) if "time per row" in t["name"]] == [False]
