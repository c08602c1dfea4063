"""Loaders: every source yields the one `Record` schema.

Structural problems (missing file or columns, empty file, undecodable bytes, a
column mapping that names no column) stop with a `DataError` naming the file, the
line and what is wrong. Content problems in one row (broken JSON line, a row with
no intent) do not stop the load: the row is returned as a rejection with a reason
code, so nothing vanishes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supportlm import hub
from supportlm.config import BitextSource, ColumnMap, HFSource, SyntheticSource, TableSource
from supportlm.data.schema import INTENT_TO_CATEGORY, Message, Record, canonical_category
from supportlm.errors import DataError

# A 5 MB field is content (quarantined later as too_long), not a reason to crash the csv module.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

BITEXT_REQUIRED = ("instruction", "response", "intent", "category")


@dataclass
class SourceResult:
    records: Sequence[Record] = field(default_factory=list)  # synthetic: built as they are read
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {source, line, reason, detail, raw}
    defects: list[dict[str, Any]] = field(default_factory=list)  # synthetic ground truth only


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    # strict decoding: a wrong codec must stop loudly, never silently replace characters;
    # the handle is returned open, the caller closes it
    return io.TextIOWrapper(
        gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb"),
        encoding=encoding,
        errors="strict",
        newline="",
    )


def _decode_error(path: Path, encoding: str) -> DataError:
    """Find the first undecodable byte in the whole file (error path only) and name its line."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    try:
        data.decode(encoding)
        where, bad = "", b"?"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"line {line}: "
        bad = data[exc.start : exc.start + 1]
    return DataError(
        f"{path}: {where}byte 0x{bad.hex()} is not valid {encoding}; the file looks like "
        f"latin-1/cp1252. Set `encoding: cp1252` on this source in params.yaml (ingest.sources)."
    )


def _iter_csv(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str], list[str]]]:
    """Yield (line number, row, header). Line numbers are physical lines (multi-line fields counted)."""
    fh = _open_text(path, encoding)
    line_no = 1
    try:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}: no header row (file holds only whitespace?)")
        line_no = reader.line_num
        for row in reader:
            if None in row:  # more cells than header columns
                extra = row.pop(None)
                row["__extra__"] = json.dumps(extra)
            yield line_no + 1, row, list(header)
            line_no = reader.line_num
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except csv.Error as exc:
        raise DataError(f"{path}: line {line_no + 1}: malformed CSV: {exc}") from None
    finally:
        fh.close()


def _iter_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any] | None, str, str]]:
    """Yield (line number, parsed object or None when broken, what is wrong, the line as read)."""
    fh = _open_text(path, encoding)
    line_no = 0
    seen = False
    try:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            seen = True
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}", line.rstrip("\r\n")
                continue
            if not isinstance(obj, dict):
                yield line_no, None, f"expected a JSON object, got {type(obj).__name__}", line.rstrip("\r\n")
                continue
            yield line_no, obj, "", line
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    finally:
        fh.close()
    if not seen:
        raise DataError(f"{path}: file has no JSON lines (only whitespace)")


def _check_columns(path: Path | str, header: list[str], wanted: dict[str, str | None]) -> None:
    missing = {role: col for role, col in wanted.items() if col is not None and col not in header}
    if missing:
        detail = ", ".join(f"{role} -> '{col}'" for role, col in missing.items())
        raise DataError(
            f"{path}: column(s) not found: {detail}. Columns present: {header}. "
            f"Fix the source's `columns:` mapping in params.yaml."
        )


def _qa_record(
    rid: str,
    source: str,
    kind: str,
    instruction: str,
    response: str,
    intent: str,
    category: str | None,
    meta: dict[str, Any],
) -> Record:
    intent = intent.strip()
    cat = canonical_category(category) if category and category.strip() else None
    return Record(
        id=rid,
        source=source,
        kind=kind,  # type: ignore[arg-type]
        messages=[Message(role="user", content=instruction), Message(role="assistant", content=response)],
        intent=intent,
        category=cat or INTENT_TO_CATEGORY.get(intent, "UNKNOWN"),
        meta=meta,
    )


def _reject(source: str, line: int, reason: str, detail: str, raw: Any) -> dict[str, Any]:
    return {"source": source, "line": line, "reason": reason, "detail": detail, "raw": raw}


def load_bitext(src: BitextSource, base_dir: Path) -> SourceResult:
    """Both Bitext layouts: 27K `flags,instruction,category,intent,response` and the sample's wider one."""
    path = (base_dir / src.path).resolve()
    out = SourceResult()
    checked = False
    for line, row, header in _iter_csv(path, "utf-8"):
        if not checked:
            _check_columns(path, header, {c: c for c in BITEXT_REQUIRED})
            checked = True
        if not row.get("intent", "").strip():
            out.rejected.append(_reject(src.name, line, "missing_intent", "column `intent` is empty", row))
            continue
        meta = {k: v for k, v in row.items() if k not in BITEXT_REQUIRED and v not in ("", None)}
        meta["line"] = line
        meta["bitext_category"] = row["category"]
        out.records.append(
            _qa_record(
                f"{src.name}:{line}",
                src.name,
                "qa",
                row["instruction"],
                row["response"],
                row["intent"],
                row["category"],
                meta,
            )
        )
    return out


def _from_mapping(
    src: TableSource | HFSource, cols: ColumnMap, line: int, row: dict[str, Any]
) -> tuple[Record | None, dict[str, Any] | None]:
    intent = row.get(cols.intent)
    if intent is None or not str(intent).strip():
        return None, _reject(src.name, line, "missing_intent", f"column `{cols.intent}` is empty", row)
    rid = str(row[cols.id]) if cols.id and row.get(cols.id) not in (None, "") else str(line)
    used = {cols.instruction, cols.response, cols.intent, cols.category, cols.id}
    meta: dict[str, Any] = {k: v for k, v in row.items() if k not in used and v not in ("", None)}
    meta["line"] = line
    if cols.conversation_id and row.get(cols.conversation_id) not in (None, ""):
        meta["conversation_id"] = str(row[cols.conversation_id])
    kind = src.kind if isinstance(src, TableSource) else "qa"
    record = _qa_record(
        f"{src.name}:{rid}",
        src.name,
        kind,
        "" if row.get(cols.instruction) is None else str(row[cols.instruction]),
        "" if row.get(cols.response) is None else str(row[cols.response]),
        str(intent),
        None if cols.category is None or row.get(cols.category) is None else str(row[cols.category]),
        meta,
    )
    return record, None


def _mapping_columns(cols: ColumnMap) -> dict[str, str | None]:
    return {k: v for k, v in cols.model_dump().items()}


def load_table(src: TableSource, base_dir: Path) -> SourceResult:
    path = (base_dir / src.path).resolve()
    out = SourceResult()
    if src.type == "csv":
        checked = False
        for line, row, header in _iter_csv(path, src.encoding):
            if not checked:
                _check_columns(path, header, _mapping_columns(src.columns))
                checked = True
            rec, rej = _from_mapping(src, src.columns, line, row)
            (out.records.append(rec) if rec else out.rejected.append(rej))  # type: ignore[arg-type]
        return out
    keys_seen: set[str] = set()
    for line, obj, err, raw in _iter_jsonl(path, src.encoding):
        if obj is None:  # the line's text is kept: a broken export line is evidence, not noise
            out.rejected.append(_reject(src.name, line, "invalid_json", err, raw))
            continue
        keys_seen |= set(obj)
        rec, rej = _from_mapping(src, src.columns, line, obj)
        (out.records.append(rec) if rec else out.rejected.append(rej))  # type: ignore[arg-type]
    required = {
        k: v for k, v in _mapping_columns(src.columns).items() if k in ("instruction", "response", "intent")
    }
    _check_columns(path, sorted(keys_seen), required)  # a mapping that matches no row's keys is structural
    return out


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def load_hf(src: HFSource, base_dir: Path) -> SourceResult:
    """HF `datasets`: a local dir/file (offline), or a hub id at a pinned revision (online; a host that
    cannot reach the Hub fails here, naming the dataset and how to use a local copy: never other data)."""
    import datasets  # heavy import, only when this source is used

    local = (base_dir / src.dataset).resolve()
    key = f"ingest.sources[{src.name}].dataset"
    try:
        if local.is_dir() and (local / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(local))
            ds = ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
        elif local.exists():
            builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(
                local.suffix
            )
            ds = (
                datasets.load_dataset(builder, data_files=str(local), split="train")
                if builder
                else datasets.load_dataset(str(local), split=src.split)
            )
        elif _offline():
            raise hub.unreachable(
                src.dataset, "dataset", key, OSError("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set")
            )
        else:  # a hub id: pinned, reachable and allowed, checked before anything is downloaded
            revision = hub.require_pinned(src.dataset, src.revision, f"{key}.revision", "dataset")
            hub.check_access(src.dataset, revision, key, "dataset")
            ds = datasets.load_dataset(src.dataset, split=src.split, revision=revision)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        raise DataError(
            f"{key}: cannot load '{src.dataset}' (split {src.split}): {exc}. "
            f"Offline? Point `dataset:` at a local dir or file."
        ) from None
    _check_columns(src.dataset, list(ds.column_names), _mapping_columns(src.columns))
    out = SourceResult()
    for i, row in enumerate(ds, start=1):
        rec, rej = _from_mapping(src, src.columns, i, row)
        (out.records.append(rec) if rec else out.rejected.append(rej))  # type: ignore[arg-type]
    return out


def load_synthetic(src: SyntheticSource, seed: int) -> SourceResult:
    from supportlm.data import synthetic

    records, truth = synthetic.generate(
        src.rows, seed, src.defects, dict(src.kinds), source=src.name, id_prefix=f"{src.name}:"
    )
    return SourceResult(records=records, defects=truth)


def sample(result: SourceResult, weight: float, max_rows: int | None, seed: int, name: str) -> SourceResult:
    """Take `weight` of the rows (seeded, order kept), then cap at `max_rows`."""
    n = len(result.records)
    take = min(round(weight * n), max_rows or n)
    if take >= n:
        return result
    rng = random.Random(f"{seed}:{name}")
    keep = sorted(rng.sample(range(n), take))
    records = [result.records[i] for i in keep]
    ids = {r.id for r in records}
    return SourceResult(records, result.rejected, [d for d in result.defects if d["id"] in ids])


def load_source(src: Any, seed: int, base_dir: Path) -> SourceResult:
    if isinstance(src, SyntheticSource):
        result = load_synthetic(src, seed)
    elif isinstance(src, BitextSource):
        result = load_bitext(src, base_dir)
    elif isinstance(src, TableSource):
        result = load_table(src, base_dir)
    elif isinstance(src, HFSource):
        result = load_hf(src, base_dir)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown source type {type(src).__name__}")
    if not result.records and not result.rejected:
        raise DataError(f"source '{src.name}': yielded no rows")
    return sample(result, src.weight, src.max_rows, seed, src.name)
