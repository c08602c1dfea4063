"""Built-in, deterministic, offline customer-support data with known defects.

Why this exists: the pipeline must run end to end with no network and no external
dataset, and the clean stage needs data whose defects are *known* so that its
dedup / unicode / markup / PII / length / label-noise steps can be scored against
a ground truth. `generate(n, seed)` returns `n` Bitext-style records over the
27-intent taxonomy (QA pairs, multi-turn conversations and ticket-shaped rows, in
six user registers) plus one ground-truth dict per row that received an injected
defect. The ground truth is returned separately and never stored in a record.

Everything is driven by two `random.Random` instances (content, defects), so the
same `(n, seed, rates, kinds)` always yields identical output, and changing the
defect rates leaves the clean content untouched.

This module is the entry point; the generator's parts live next to it, one concern each:
synthetic_catalog (per-intent content, data only), synthetic_templates (the `[a|b]` /
`{slot}` template language), synthetic_text (user and assistant turns per register),
synthetic_rows (defect-free rows of each kind) and synthetic_defects (defect plan and
injection).
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from supportlm.config import DefectRates
from supportlm.data.schema import INTENT_TO_CATEGORY, Record
from supportlm.data.synthetic_defects import inject_defects, plan_defects
from supportlm.data.synthetic_rows import clean_rows

__all__ = ["DEFAULT_KINDS", "SOURCE", "generate"]

SOURCE = "synthetic"
DEFAULT_KINDS: dict[str, float] = {"qa": 0.7, "conversation": 0.15, "ticket": 0.15}


def _check_kinds(kinds: dict[str, float] | None) -> dict[str, float]:
    kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
    unknown = sorted(set(kinds) - set(DEFAULT_KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; allowed: {sorted(DEFAULT_KINDS)}")
    if any(w < 0 for w in kinds.values()) or sum(kinds.values()) <= 0:
        raise ValueError(f"kind weights must be >= 0 with a positive sum, got {kinds}")
    return {k: w for k, w in kinds.items() if w > 0}


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small acyclic objects.

    Every allocation burst makes the collector rescan the ever-growing live heap;
    at 270k rows that alone more than doubles the run time. Nothing built here
    forms reference cycles, so plain reference counting frees it all the same.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Records(Sequence[Record]):
    """The generated rows as `Record`s, each built when it is read.

    Why: a pydantic Record costs several times its plain row, and the ingest stage writes each
    one once; building them on the way out keeps 1M rows in the plain rows' memory only."""

    def __init__(self, rows: Sequence[Any], ids: Sequence[str], source: str) -> None:
        self._rows, self._ids, self._source = rows, ids, source

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self._rows[i]
        return Record(
            id=self._ids[i],
            source=self._source,
            kind=row.kind,
            messages=[{"role": r, "content": c} for r, c in row.messages],
            intent=row.intent,
            category=INTENT_TO_CATEGORY[row.intent],
            meta=row.meta,
        )

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(len(self)))


def generate(
    n: int,
    seed: int,
    rates: DefectRates | None = None,
    kinds: dict[str, float] | None = None,
    source: str = SOURCE,
    id_prefix: str = "",
) -> tuple[Records, list[dict[str, Any]]]:
    """`n` synthetic records plus the ground truth of the defects injected into them.

    Ground-truth entries, one per defective record in record order:
    {"id", "defects": [type, ...], "duplicate_of": id | None, "true_intent": str | None}.
    Ids are `{id_prefix}syn-000000` onwards; `source` names the rows' source.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rates = rates or DefectRates()
    kinds = _check_kinds(kinds)
    with _gc_paused():
        return _generate(n, seed, rates, kinds, source, id_prefix)


def _generate(
    n: int, seed: int, rates: DefectRates, kinds: dict[str, float], source: str, id_prefix: str
) -> tuple[Records, list[dict[str, Any]]]:
    # Separate streams: the clean content for a seed does not move when defect rates change.
    content_rng = random.Random(seed)
    defect_rng = random.Random(f"supportlm-synthetic-defects-{seed}")
    rows, seen = clean_rows(n, kinds, content_rng)
    plan = plan_defects(n, rates.counts(n), defect_rng)
    ids = [f"{id_prefix}syn-{i:06d}" for i in range(n)]
    truth = []
    for i in range(n):
        entry = inject_defects(i, rows, plan, defect_rng, ids, seen)
        if entry is not None:
            truth.append(entry)
    return Records(rows, ids, source), truth
