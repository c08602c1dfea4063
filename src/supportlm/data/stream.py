"""Streaming the data stages' files: JSONL written in parts, rows taken in batches.

Why a module: the data stages read and write files larger than the memory they may use, so they
take rows in batches and write each output as it goes, joining its parts at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class JsonlParts:
    """One JSONL file streamed as named parts, joined in the given order when the block ends.

    Why: a streaming stage finds rows of one file at different times (a quarantine learns its
    too-long rows during the first pass and its duplicates after it) but the file must list them
    part by part. Each part goes to its own temp file; nothing reaches `path` unless the block
    finishes without an exception, so a killed stage never leaves half a file."""

    def __init__(self, path: Path, parts: Sequence[str] = ("rows",)) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._files = {name: self.path.with_name(f"{self.path.name}.{name}.part") for name in parts}
        self._handles = {name: f.open("w", encoding="utf-8") for name, f in self._files.items()}
        self.counts = dict.fromkeys(parts, 0)

    def write(self, row: dict[str, Any] | BaseModel, part: str = "rows") -> None:
        if isinstance(row, BaseModel):
            row = row.model_dump(mode="json")
        self._handles[part].write(json.dumps(row, ensure_ascii=False) + "\n")
        self.counts[part] += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for fh in self._handles.values():
            fh.close()
        try:
            if kind is None:
                tmp = self.path.with_name(self.path.name + ".tmp")
                with tmp.open("wb") as out:
                    for f in self._files.values():
                        with f.open("rb") as part:
                            shutil.copyfileobj(part, out)
                tmp.replace(self.path)
        finally:
            for f in self._files.values():
                f.unlink(missing_ok=True)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter): how the data stages stream."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
