"""Reading and writing the pipeline's JSON and JSONL files: atomic writes, reads that name the bad line.

Why one module: every stage hands its successor JSONL rows; one reader means one error message for a
missing file (which stage makes it) and for a corrupt line (file:line, what is wrong).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from supportlm.errors import DataError


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Pretty JSON written atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Write rows atomically (tmp file + rename) so a killed stage never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            if isinstance(row, BaseModel):
                row = row.model_dump(mode="json")
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(
    path: Path, produced_by: str | None = None, require: dict[str, type] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, skipping blank lines.

    A missing file names the stage that writes it (`produced_by`); a line that is not a JSON object, or
    lacks a `require`d key of the given type, is a DataError naming file:line."""
    path = Path(path)
    if not path.is_file():
        hint = f"; run `dvc repro {produced_by}` first" if produced_by else ""
        raise DataError(f"{path}: not found{hint}")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            for key, kind in (require or {}).items():
                if not isinstance(row.get(key), kind):
                    rerun = f"; rerun `dvc repro {produced_by}`" if produced_by else ""
                    raise DataError(f"{path}:{n}: a row needs `{key}` ({kind.__name__}){rerun}")
            yield row


def read_rows(
    path: Path, produced_by: str | None = None, require: dict[str, type] | None = None
) -> list[dict[str, Any]]:
    """All rows of a JSONL file as a list (see read_jsonl)."""
    return list(read_jsonl(path, produced_by, require))
