"""Train/val/test split: stratified by intent, grouped so related rows never cross splits.

A group joins rows that share a conversation id (turns of one dialogue, when a
source stores them as separate rows) and rows that are near-duplicates above
`split.group_threshold` (MinHash/LSH connected components). Whole groups are
assigned, intent by intent, to reach the target ratios; the leakage check then
re-derives groups from the written splits and counts any that span two splits.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from supportlm.config import DedupParams, Params, SplitParams
from supportlm.data import dedup
from supportlm.data.schema import Record, read_records
from supportlm.errors import DataError
from supportlm.io import write_json, write_jsonl
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths

SPLITS = ("train", "val", "test")


def signatures(records: Sequence[Record], dedup_p: DedupParams) -> np.ndarray:
    return dedup.signatures([r.text() for r in records], dedup_p.num_perm, dedup_p.shingle_words)


def group_ids(records: Sequence[Record], p: SplitParams, sigs: np.ndarray) -> list[str]:
    """Per record, the id of the first record in its group (near-duplicate or same-conversation links)."""
    if len(sigs) != len(records):
        raise ValueError(f"{len(records)} records but {len(sigs)} signatures")
    edges = dedup.near_duplicate_edges(sigs, p.group_threshold)
    first_of_conv: dict[str, int] = {}
    for i, r in enumerate(records):
        conv = r.meta.get("conversation_id")
        if conv is not None:
            edges.append((first_of_conv.setdefault(f"{r.source}:{conv}", i), i))
    return [records[c].id for c in dedup.connected_components(len(records), edges)]


def assign(records: Sequence[Record], groups: Sequence[str], p: SplitParams) -> dict[str, list[Record]]:
    """Greedy per-intent assignment of whole groups to the split furthest below its target."""
    rng = random.Random(p.seed)
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # a group's stratum is its most common intent (ties -> alphabetical)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for g, idx in members.items():
        counts = Counter(records[i].intent for i in idx)
        intent = min(counts, key=lambda k: (-counts[k], k))
        by_intent[intent].append(g)
    ratios = {"train": p.train, "val": p.val, "test": p.test}
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for intent in sorted(by_intent):
        gs = sorted(by_intent[intent])
        rng.shuffle(gs)
        gs.sort(key=lambda g: -len(members[g]))  # big groups first, so the small ones can even things out
        filled = dict.fromkeys(SPLITS, 0)
        total = sum(len(members[g]) for g in gs)
        for g in gs:
            # the split whose share is furthest below its target (ties -> train, val, test order)
            deficit = {s: ratios[s] * total - filled[s] for s in SPLITS}
            target = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
            filled[target] += len(members[g])
            for i in members[g]:
                rec = records[i]
                rec.meta["group_id"] = g
                out[target].append(rec)
    for s in SPLITS:
        out[s].sort(key=lambda r: r.id)
    return out


def leakage(splits: dict[str, list[Record]], p: SplitParams, sig_by_id: dict[str, Any]) -> dict[str, Any]:
    """Regroup the rows as written (split order, fresh LSH index) and count groups found in two splits.

    Independent of `assign`: it only trusts the signatures, so an assignment bug shows up here.
    """
    flat = [(s, r) for s in SPLITS for r in splits[s]]
    if not flat:
        return {"leaked_groups": 0, "cross_split_exact_duplicates": 0, "conversations_crossing": 0}
    recs = [r for _, r in flat]
    gids = group_ids(recs, p, np.stack([sig_by_id[r.id] for r in recs]))
    where: dict[str, set[str]] = defaultdict(set)
    for (s, _), g in zip(flat, gids, strict=True):
        where[g].add(s)
    exact_where: dict[str, set[str]] = defaultdict(set)
    for s, r in flat:
        exact_where[dedup.exact_key(r.text())].add(s)
    conv_where: dict[str, set[str]] = defaultdict(set)
    for s, r in flat:
        if "conversation_id" in r.meta:
            conv_where[f"{r.source}:{r.meta['conversation_id']}"].add(s)
    return {
        "leaked_groups": sum(1 for v in where.values() if len(v) > 1),
        "cross_split_exact_duplicates": sum(1 for v in exact_where.values() if len(v) > 1),
        "conversations_crossing": sum(1 for v in conv_where.values() if len(v) > 1),
    }


def split(records: list[Record], p: SplitParams, dedup_p: DedupParams) -> tuple[dict[str, list[Record]], dict]:
    sigs = signatures(records, dedup_p)
    groups = group_ids(records, p, sigs)
    out = assign(records, groups, p)
    sizes = np.array(list(Counter(groups).values())) if groups else np.array([0])
    report = {
        "counts": {s: len(out[s]) for s in SPLITS},
        "ratios": {s: round(len(out[s]) / max(1, len(records)), 4) for s in SPLITS},
        "groups": len(set(groups)),
        "largest_group": int(sizes.max()),
        "rows_in_multi_row_groups": int(sizes[sizes > 1].sum()),
        "intents_per_split": {s: len({r.intent for r in out[s]}) for s in SPLITS},
    }
    report |= leakage(out, p, {r.id: sig for r, sig in zip(records, sigs, strict=True)})
    return out, report


def run_split(params: Params, paths: Paths) -> dict[str, Any]:
    """The split stage: data/interim/clean.jsonl -> data/processed/{train,val,test}.jsonl + reports/split.json."""
    t0 = time.perf_counter()
    records = read_records(paths.interim / "clean.jsonl", "clean")
    if not records:
        raise DataError(f"{paths.interim / 'clean.jsonl'}: no rows left after cleaning; see quarantine.jsonl")
    out, report = split(records, params.split, params.clean.dedup)
    if report["leaked_groups"]:
        raise DataError(f"split leaks {report['leaked_groups']} near-duplicate groups across splits (bug)")
    for name, rows in out.items():
        write_jsonl(paths.processed / f"{name}.jsonl", rows)
    report |= {
        "params_hash": params_hash(params.split),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "split.json", report)
    return report
