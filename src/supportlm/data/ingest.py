"""The ingest stage's logic: load every configured source into one Record stream."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from supportlm.config import IngestParams, Params
from supportlm.data.schema import Record
from supportlm.data.sources import load_source
from supportlm.errors import DataError
from supportlm.io import write_json, write_jsonl
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths


def ingest(p: IngestParams, base_dir: Path) -> tuple[list[Record], list[dict], list[dict], dict[str, Any]]:
    """Return (records, rejected rows, synthetic defect ground truth, report)."""
    t0 = time.perf_counter()
    records: list[Record] = []
    rejected: list[dict[str, Any]] = []
    defects: list[dict[str, Any]] = []
    by_source: dict[str, dict[str, int]] = {}
    for src in p.sources:
        result = load_source(src, p.seed, base_dir)
        records += result.records
        rejected += result.rejected
        defects += result.defects
        by_source[src.name] = {"rows": len(result.records), "rejected": len(result.rejected)}
    ids = Counter(r.id for r in records)
    clashes = [i for i, c in ids.items() if c > 1]
    if clashes:
        raise DataError(f"duplicate record ids across sources (first: {clashes[:3]}); give sources distinct names")
    report = {
        "rows": len(records),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "by_source": by_source,
        "by_kind": dict(sorted(Counter(r.kind for r in records).items())),
        "intents": len({r.intent for r in records}),
        "injected_defects": dict(sorted(Counter(d for t in defects for d in t["defects"]).items())),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return records, rejected, defects, report


def run_ingest(params: Params, paths: Paths, base_dir: Path | None = None) -> dict[str, Any]:
    """The ingest stage: params.ingest.sources -> data/raw/{records,rejected,defects}.jsonl + reports/ingest.json."""
    records, rejected, defects, report = ingest(params.ingest, base_dir or paths.root)
    write_jsonl(paths.raw / "records.jsonl", records)
    write_jsonl(paths.raw / "rejected.jsonl", rejected)
    write_jsonl(paths.raw / "defects.jsonl", defects)
    report |= {"params_hash": params_hash(params.ingest), "peak_rss_mb": peak_rss_mb()}
    write_json(paths.reports / "ingest.json", report)
    return report
