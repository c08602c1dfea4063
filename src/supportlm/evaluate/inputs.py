"""What evaluate and quantize score: the test rows and their seeded intent-stratified sample."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

SYSTEMS = ("base", "finetuned")  # the two models evaluate compares, in table and plot order


def stratified_sample(rows: Sequence[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """Seeded sample of n rows, round-robin over intents (shuffled within and across intents)."""
    rows = [r for r in rows if any(x["role"] == "assistant" for x in r["messages"][1:])]
    if n is None or n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    by_intent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_intent[r.get("intent", "")].append(r)
    intents = sorted(by_intent)
    rng.shuffle(intents)
    for k in intents:
        rng.shuffle(by_intent[k])
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < n:
        for k in intents:
            if depth < len(by_intent[k]):
                out.append(by_intent[k][depth])
                if len(out) == n:
                    break
        depth += 1
    return out
