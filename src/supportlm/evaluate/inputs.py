"""What evaluate and quantize score: the test rows, their seeded intent-stratified sample, and the base
model's recorded source (for lineage)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.errors import DataError
from supportlm.paths import stage_dir


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro format` first")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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


def base_model_id(paths: Any) -> str:
    """The bundled GGUF the base model came from (models/base/supportlm_source.json), for lineage."""
    src = stage_dir(paths, "base_model", "models", "base") / "supportlm_source.json"
    if src.is_file():
        return str(json.loads(src.read_text()).get("gguf", ""))
    return ""
