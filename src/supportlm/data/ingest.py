"""The ingest stage's logic: load every configured source into one Record stream.

Records are written as they are read (a synthetic source builds each one on the way out), so the
stage holds one source's plain rows at a time, never a second copy as Records.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from supportlm.config import IngestParams, Params
from supportlm.data.sources import load_source
from supportlm.data.stream import JsonlParts
from supportlm.errors import DataError
from supportlm.io import write_json
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths


def ingest(
    p: IngestParams, base_dir: Path, records: JsonlParts, rejected: JsonlParts, defects: JsonlParts
) -> dict[str, Any]:
    """Write every source's records, rejected rows and synthetic defect ground truth; return the report."""
    t0 = time.perf_counter()
    seen: set[str] = set()
    clashes: list[str] = []
    kinds: Counter[str] = Counter()
    intents: set[str] = set()
    reasons: Counter[str] = Counter()
    injected: Counter[str] = Counter()
    by_source: dict[str, dict[str, int]] = {}
    for src in p.sources:
        result = load_source(src, p.seed, base_dir)
        for rec in result.records:
            if rec.id in seen:
                clashes.append(rec.id)
            seen.add(rec.id)
            kinds[rec.kind] += 1
            intents.add(rec.intent)
            records.write(rec)
        for row in result.rejected:
            rejected.write(row)
            reasons[row["reason"]] += 1
        for truth in result.defects:
            defects.write(truth)
            injected.update(truth["defects"])
        by_source[src.name] = {"rows": len(result.records), "rejected": len(result.rejected)}
    if clashes:
        raise DataError(
            f"duplicate record ids across sources (first: {clashes[:3]}); give sources distinct names"
        )
    return {
        "rows": len(seen),
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "by_source": by_source,
        "by_kind": dict(sorted(kinds.items())),
        "intents": len(intents),
        "injected_defects": dict(sorted(injected.items())),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_ingest(params: Params, paths: Paths, base_dir: Path | None = None) -> dict[str, Any]:
    """The ingest stage: params.ingest.sources -> data/raw/{records,rejected,defects}.jsonl + reports/ingest.json.

    The three files appear together or not at all (a failing source leaves the old ones)."""
    with (
        JsonlParts(paths.raw / "records.jsonl") as records,
        JsonlParts(paths.raw / "rejected.jsonl") as rejected,
        JsonlParts(paths.raw / "defects.jsonl") as defects,
    ):
        report = ingest(params.ingest, base_dir or paths.root, records, rejected, defects)
    report |= {"params_hash": params_hash(params.ingest), "peak_rss_mb": peak_rss_mb()}
    write_json(paths.reports / "ingest.json", report)
    return report
