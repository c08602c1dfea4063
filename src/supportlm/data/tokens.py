"""The token files: each formatted split's ids and assistant-only labels, written once, memory-mapped by the trainer.

Why a module of its own: the format stage writes these files and the trainer reads them, and the
trainer should depend on the file layout only, not on how formatting works (editing the formatter
would otherwise rerun training through DVC for nothing).

Layout: `<split>.tokens.arrow` beside `<split>.jsonl`, an uncompressed Arrow IPC file with columns
id (string), input_ids and labels (list<int32>), written as record batches while the stage streams,
untruncated (the trainer cuts to train.max_length). Uncompressed, so a reader maps it without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np


def tokens_path(jsonl: Path) -> Path:
    """data/formatted/train.jsonl -> data/formatted/train.tokens.arrow."""
    return jsonl.with_name(jsonl.stem + ".tokens.arrow")


def _schema() -> Any:
    import pyarrow as pa  # here: the GPU check imports the format module on hosts without pyarrow

    return pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


class TokenWriter:
    """A token file written one batch of rows at a time; it reaches `path` only if the block ends cleanly."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, _schema())

    def write(self, tokens: dict[str, Sequence]) -> None:
        """One record batch of token columns (`ids`, `input_ids`, `labels`, as the formatter returns them)."""
        import pyarrow as pa

        if not tokens["ids"]:
            return
        schema = _schema()
        columns = [pa.array(tokens[key], field.type) for key, field in zip(("ids", "input_ids", "labels"), schema, strict=True)]
        self._writer.write_batch(pa.record_batch(columns, schema=schema))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._writer.close()
            self._sink.close()
            if kind is None:
                self._tmp.replace(self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


def write_tokens(path: Path, tokens: dict[str, list]) -> None:
    """Token columns held in memory (`ids`, `input_ids`, `labels`) written as one token file."""
    with TokenWriter(path) as out:
        out.write(tokens)


class TokenTable:
    """A token file mapped into memory: `example(i)` reads one row's ids and labels, whichever batch holds it.

    Nothing is copied at open (the pages are read when a row is used), so opening a 1M-row file costs
    what its batch index costs, not its size."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        self._columns: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        sizes = []
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            ids, labels = batch.column("input_ids"), batch.column("labels")
            self._columns.append((ids.offsets.to_numpy(), ids.values.to_numpy(),
                                  labels.offsets.to_numpy(), labels.values.to_numpy()))  # fmt: skip
            sizes.append(batch.num_rows)
        self._starts = np.cumsum([0, *sizes])
        self.num_rows = int(self._starts[-1])

    def example(self, i: int) -> tuple[list[int], list[int]]:
        """Row i's input_ids and labels, untruncated."""
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} of a {self.num_rows}-row token file")
        b = int(np.searchsorted(self._starts, i, side="right")) - 1
        k = i - int(self._starts[b])
        io, iv, lo, lv = self._columns[b]
        return iv[io[k] : io[k + 1]].tolist(), lv[lo[k] : lo[k + 1]].tolist()
