"""Train/val/test split: stratified by intent, grouped so related rows never cross splits.

A group joins rows that share a conversation id (turns of one dialogue, when a
source stores them as separate rows) and rows that are near-duplicates above
`split.group_threshold` (MinHash/LSH connected components). Whole groups are
assigned, intent by intent, to reach the target ratios; the leakage check then
re-derives groups from the written splits and counts any that span two splits.

Memory: clean.jsonl is streamed in batches and validated row by row, but no Record is kept. The
split works on compact per-row columns (`Columns`: id, intent, conversation key, exact-duplicate
key and the MinHash signature row, 4 bytes a permutation); each row's JSON waits in an unnamed
scratch file (`RowStore`, read back by offset) until its split is written.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from supportlm.config import DedupParams, Params, SplitParams
from supportlm.data import dedup
from supportlm.data.schema import Record, iter_records
from supportlm.data.stream import batches
from supportlm.errors import DataError
from supportlm.io import write_json, write_jsonl
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths

SPLITS = ("train", "val", "test")
# rows validated and hashed at a time: bounds the transient Records, shingle sets (~12 KB a row) and MinHash objects
BATCH_ROWS = 1_000
EXACT_KEY = "S32"  # dedup.exact_key is 32 hex digits: kept as 32 bytes, not a 81-byte str object


@dataclass
class Columns:
    """What the split needs of each row, in file order; the rows themselves stay in a `RowStore`."""

    ids: list[str]
    intents: list[str]  # interned: one str object per intent
    convs: list[str | None]  # f"{source}:{conversation_id}", None when the row has no conversation id
    exact: np.ndarray  # (n,) EXACT_KEY: dedup.exact_key of the row's text
    sigs: np.ndarray  # (n, num_perm) uint32 MinHash signatures (dedup.signatures)

    def __len__(self) -> int:
        return len(self.ids)

    def reorder(self, idx: np.ndarray) -> None:
        """In place: the rows become rows `idx` (a permutation), in that order.

        The signature matrix is permuted row by row along its cycles, so it is never held twice."""
        n = len(self)
        if len(idx) != n or not np.array_equal(np.sort(idx), np.arange(n)):
            raise ValueError(f"not a permutation of {n} rows")
        pick = idx.tolist()
        self.ids = [self.ids[i] for i in pick]
        self.intents = [self.intents[i] for i in pick]
        self.convs = [self.convs[i] for i in pick]
        self.exact = self.exact[idx]
        _permute_rows(self.sigs, pick)

    @classmethod
    def from_records(cls, records: Sequence[Record], dedup_p: DedupParams) -> Columns:
        builder = _ColumnsBuilder(len(records), dedup_p)
        for start in range(0, len(records), BATCH_ROWS):
            builder.add(records[start : start + BATCH_ROWS])
        return builder.build()


def _permute_rows(a: np.ndarray, perm: list[int]) -> None:
    """a[:] = a[perm] for a permutation, with one row of scratch memory."""
    done = bytearray(len(perm))
    for start in range(len(perm)):
        if done[start]:
            continue
        first = a[start].copy()
        k = start
        while True:
            done[k] = 1
            j = perm[k]
            if j == start:
                a[k] = first
                break
            a[k] = a[j]
            k = j


class _ColumnsBuilder:
    """Fills the columns batch by batch; `capacity` is an upper bound on the row count (unused tail untouched)."""

    def __init__(self, capacity: int, dedup_p: DedupParams) -> None:
        self.dedup_p = dedup_p
        self.ids: list[str] = []
        self.intents: list[str] = []
        self.convs: list[str | None] = []
        self._intern: dict[str, str] = {}
        self.exact = np.empty(capacity, dtype=EXACT_KEY)
        self.sigs = np.empty((capacity, dedup_p.num_perm), dtype=np.uint32)

    def add(self, records: Sequence[Record]) -> None:
        start = len(self.ids)
        texts = [r.text() for r in records]
        for r in records:
            self.ids.append(r.id)
            self.intents.append(self._intern.setdefault(r.intent, r.intent))
            conv = r.meta.get("conversation_id")
            self.convs.append(None if conv is None else f"{r.source}:{conv}")
        end = len(self.ids)
        self.exact[start:end] = [dedup.exact_key(t) for t in texts]
        # a text's signature does not depend on the batch it is hashed in
        self.sigs[start:end] = dedup.signatures(texts, self.dedup_p.num_perm, self.dedup_p.shingle_words)

    def build(self) -> Columns:
        n = len(self.ids)
        return Columns(self.ids, self.intents, self.convs, self.exact[:n], self.sigs[:n])


class RowStore:
    """Each row's JSON, appended to an unnamed scratch file and read back by offset.

    The file has no name (O_TMPFILE, or unlinked at once), so a crash leaves nothing behind; reads go
    through the page cache (os.pread), not a memory map, so the rows never count as this process's memory.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder
        self._fh: IO[bytes] | None = None  # opened on the first append, so a missing input creates nothing
        self._offsets = array("q", [0])  # row i is bytes [offsets[i], offsets[i + 1]): 8 bytes a row

    def append(self, lines: Iterable[bytes]) -> None:
        if self._fh is None:
            if self._folder is not None:
                self._folder.mkdir(parents=True, exist_ok=True)
            self._fh = tempfile.TemporaryFile(dir=self._folder, prefix=".split-rows-")  # noqa: SIM115 (close())
        end = self._offsets[-1]
        for line in lines:
            self._fh.write(line)
            end += len(line)
            self._offsets.append(end)
        self._fh.flush()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def get(self, i: int) -> bytes:
        start, end = self._offsets[i], self._offsets[i + 1]
        assert self._fh is not None, f"row {i} of an empty store"
        return os.pread(self._fh.fileno(), end - start, start)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _row_capacity(path: Path) -> int:
    """An upper bound on the rows of a JSONL file (line breaks + 1), counted without parsing."""
    if not path.is_file():
        return 0  # read_jsonl reports the missing file
    breaks = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            breaks += chunk.count(b"\n") + chunk.count(b"\r")  # universal newlines: \r alone also ends a line
    return breaks + 1


def read_columns(
    path: Path,
    dedup_p: DedupParams,
    store: RowStore,
    produced_by: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Columns:
    """Stream a Record JSONL file: validate each row, keep its columns, append its JSON to `store`.

    The stored JSON is the Record's own `model_dump(mode="json")`, which is what write_jsonl writes."""
    builder = _ColumnsBuilder(_row_capacity(path), dedup_p)
    for batch in batches(iter_records(path, produced_by), batch_rows):
        builder.add(batch)
        store.append(
            (json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n").encode() for r in batch
        )
    return builder.build()


def group_ids(ids: Sequence[str], convs: Sequence[str | None], sigs: np.ndarray, p: SplitParams) -> list[str]:
    """Per row, the id of the first row in its group (near-duplicate or same-conversation links)."""
    if len(sigs) != len(ids) or len(convs) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(convs)} conversation keys and {len(sigs)} signatures")
    edges = dedup.near_duplicate_edges(sigs, p.group_threshold)
    first_of_conv: dict[str, int] = {}
    for i, conv in enumerate(convs):
        if conv is not None:
            first = first_of_conv.setdefault(conv, i)
            if first != i:  # (i, i) would join nothing
                edges.append((first, i))
    return [ids[c] for c in dedup.connected_components(len(ids), edges).tolist()]


def assign(
    ids: Sequence[str], intents: Sequence[str], groups: Sequence[str], p: SplitParams
) -> dict[str, list[int]]:
    """Greedy per-intent assignment of whole groups to the split furthest below its target.

    Returns, per split, its row indices as written: sorted by id."""
    rng = random.Random(p.seed)
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # a group's stratum is its most common intent (ties -> alphabetical)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for g, idx in members.items():
        counts = Counter(intents[i] for i in idx)
        intent = min(counts, key=lambda k: (-counts[k], k))
        by_intent[intent].append(g)
    ratios = {"train": p.train, "val": p.val, "test": p.test}
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
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
            out[target].extend(members[g])
    for s in SPLITS:
        out[s].sort(key=ids.__getitem__)  # stable: rows sharing an id keep their assignment order
    return out


def written_order(out: dict[str, list[int]]) -> tuple[np.ndarray, list[str]]:
    """The rows as written, split after split: their indices and each one's split."""
    flat = np.fromiter(
        (i for s in SPLITS for i in out[s]), dtype=np.int64, count=sum(len(v) for v in out.values())
    )
    return flat, [s for s in SPLITS for _ in out[s]]


def _codes(keys: Iterable[str]) -> np.ndarray:
    """Each key as a small int (its order of first appearance): equal keys, equal codes."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)


def _keys_crossing(keys: np.ndarray, split_codes: np.ndarray) -> int:
    """How many distinct keys occur in more than one split."""
    if not len(keys):
        return 0
    order = np.argsort(keys, kind="stable")
    k, c = keys[order], split_codes[order]
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return int(np.count_nonzero(np.minimum.reduceat(c, starts) != np.maximum.reduceat(c, starts)))


def leakage(rows: Columns, split_of: Sequence[str], p: SplitParams) -> dict[str, Any]:
    """Regroup the rows as written (`rows` in split order, `split_of` each one's split; fresh LSH index) and
    count groups, exact duplicates and conversations found in two splits.

    Independent of `assign`: it only trusts the signatures, so an assignment bug shows up here.
    """
    if len(split_of) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(split_of)} split names")
    if not len(rows):
        return {"leaked_groups": 0, "cross_split_exact_duplicates": 0, "conversations_crossing": 0}
    codes = np.array([SPLITS.index(s) for s in split_of], dtype=np.int8)
    gids = group_ids(rows.ids, rows.convs, rows.sigs, p)
    with_conv = [i for i, conv in enumerate(rows.convs) if conv is not None]
    return {
        "leaked_groups": _keys_crossing(_codes(gids), codes),
        "cross_split_exact_duplicates": _keys_crossing(rows.exact, codes),
        "conversations_crossing": _keys_crossing(_codes(rows.convs[i] for i in with_conv), codes[with_conv]),
    }


def split(cols: Columns, p: SplitParams) -> tuple[dict[str, list[int]], list[str], dict[str, Any]]:
    """Group and assign the rows: per split its row indices as written (sorted by id), each row's group id,
    and the report (all but the leakage check: see `leakage`)."""
    groups = group_ids(cols.ids, cols.convs, cols.sigs, p)
    out = assign(cols.ids, cols.intents, groups, p)
    sizes = np.array(list(Counter(groups).values())) if groups else np.array([0])
    report = {
        "counts": {s: len(out[s]) for s in SPLITS},
        "ratios": {s: round(len(out[s]) / max(1, len(cols)), 4) for s in SPLITS},
        "groups": len(set(groups)),
        "largest_group": int(sizes.max()),
        "rows_in_multi_row_groups": int(sizes[sizes > 1].sum()),
        "intents_per_split": {s: len({cols.intents[i] for i in out[s]}) for s in SPLITS},
    }
    return out, groups, report


def _rows_with_group(store: RowStore, idx: Iterable[int], groups: Sequence[str]) -> Iterator[dict[str, Any]]:
    for i in idx:
        row = json.loads(store.get(i))
        row["meta"]["group_id"] = groups[i]
        yield row


def run_split(params: Params, paths: Paths) -> dict[str, Any]:
    """The split stage: data/interim/clean.jsonl -> data/processed/{train,val,test}.jsonl + reports/split.json."""
    t0 = time.perf_counter()
    source = paths.interim / "clean.jsonl"
    with RowStore(paths.processed) as store:
        cols = read_columns(source, params.clean.dedup, store, produced_by="clean")
        if not len(cols):
            raise DataError(f"{source}: no rows left after cleaning; see quarantine.jsonl")
        out, groups, report = split(cols, params.split)
        flat, split_of = written_order(out)
        cols.reorder(flat)  # the rows as written
        report |= leakage(cols, split_of, params.split)
        del cols
        if report["leaked_groups"]:
            raise DataError(
                f"split leaks {report['leaked_groups']} near-duplicate groups across splits (bug)"
            )
        for name in SPLITS:
            write_jsonl(paths.processed / f"{name}.jsonl", _rows_with_group(store, out[name], groups))
    report |= {
        "params_hash": params_hash(params.split),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "split.json", report)
    return report
