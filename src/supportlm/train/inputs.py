"""What the recipe trains on: the formatted train/val splits read, subset, tokenized and batched.

The format stage writes each split's token ids and assistant-only labels to `<split>.tokens.arrow`;
the recipe memory-maps that file and only slices the rows it trains on (start-up no longer tokenizes
the split). Without it (a formatted dir from before, or hand-made), the rows are tokenized here, the
same way.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.config import TrainParams
from supportlm.data.tokens import TokenTable, tokens_path
from supportlm.errors import DataError
from supportlm.io import read_rows
from supportlm.lineage import file_md5
from supportlm.train.batching import (
    Batch,
    BatchStream,
    Example,
    fixed_batches,
    keep_supervised,
    steps_for,
    tokenize_rows,
    truncate,
)

log = logging.getLogger("supportlm.train")


def read_formatted(path: Path) -> list[dict[str, Any]]:
    """The rows of a formatted split; DataError (naming the line) for a missing file, bad JSON or no rows."""
    rows = read_rows(path, "format", require={"messages": list})
    if not rows:
        raise DataError(f"{path}: no rows; check the split/format stages (reports/format.json)")
    return rows


def subset_indices(total: int, n: int | None, seed: int) -> list[int]:
    """Indices of n rows sampled with a fixed seed, in file order (None or n >= total = all rows)."""
    if n is None or n >= total:
        return list(range(total))
    return sorted(random.Random(f"supportlm-subset-{seed}").sample(range(total), n))


def seeded_subset(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """n rows sampled with a fixed seed, kept in file order (None or n >= len = all rows)."""
    return [rows[i] for i in subset_indices(len(rows), n, seed)]


def _count_lines(path: Path) -> int:
    """Newlines in a file, read in 1 MiB blocks (a formatted split can be larger than memory)."""
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def split_examples(
    path: Path, tokenizer: Any, n: int | None, seed: int, max_length: int
) -> tuple[list[Example], dict[str, Any]]:
    """The examples of a formatted split's seeded subset: from its .tokens.arrow when there is one."""
    arrow = tokens_path(path)
    if not arrow.exists():
        rows = seeded_subset(read_formatted(path), n, seed)
        examples, stats = tokenize_rows(rows, tokenizer, max_length)
        return examples, stats | {"source": "tokenized at start-up"}
    table = TokenTable(arrow)  # memory-mapped: only the rows trained on are read
    lines = _count_lines(path)
    if table.num_rows != lines:
        raise DataError(f"{arrow}: {table.num_rows} rows but {path} has {lines}; rerun `dvc repro format`")
    keep = subset_indices(table.num_rows, n, seed)
    examples, stats = keep_supervised((truncate(*table.example(i), max_length) for i in keep), len(keep))
    return examples, stats | {"source": arrow.name}


@dataclass
class TrainData:
    """The tokenized splits, the train batch stream, the fixed val batches and the step count."""

    train_examples: list[Example]
    val_examples: list[Example]
    stream: BatchStream
    val_batches: list[Batch]
    batches_per_epoch: int
    total_steps: int
    info: dict[str, Any]  # files, md5s and token counts (the train report's `data`)


def load_data(train_file: Path, val_file: Path, tokenizer: Any, p: TrainParams) -> TrainData:
    """Read + subset the splits, tokenize with assistant-only labels, build the batch stream."""
    train_examples, train_stats = split_examples(train_file, tokenizer, p.train_rows, p.seed, p.max_length)
    val_examples, val_stats = split_examples(val_file, tokenizer, p.val_rows, p.seed, p.max_length)
    for ex, f in ((train_examples, train_file), (val_examples, val_file)):
        if not ex:
            raise DataError(
                f"{f}: no row keeps an assistant token within train.max_length={p.max_length}; "
                "raise train.max_length or check the format stage"
            )
    pad = tokenizer.pad_token_id
    stream = BatchStream(train_examples, p.batching, p.batch_size, p.max_length, pad, p.seed)
    val_batches = fixed_batches(val_examples, p.batch_size * 2, pad, p.max_length)
    batches_per_epoch = stream.batches_per_epoch
    total_steps = steps_for(batches_per_epoch, p.gradient_accumulation_steps, p.epochs, p.max_steps)
    info = {
        "train_file": str(train_file),
        "val_file": str(val_file),
        "train_md5": file_md5(train_file),
        "val_md5": file_md5(val_file),
        "train": train_stats,
        "val": val_stats,
        "train_tokens": sum(len(e) for e in train_examples),
        "train_supervised_tokens": sum(e.n_supervised for e in train_examples),
        "val_supervised_tokens": sum(e.n_supervised for e in val_examples),
        "micro_batches_per_epoch": batches_per_epoch,
    }
    log.info(
        "data: %s train rows (%s tokens, %s supervised), %s val rows; %s micro-batches/epoch, "
        "%s optimizer steps (batch %d x accumulation %d = %d rows/step, %s batching)",
        f"{len(train_examples):,}",
        f"{info['train_tokens']:,}",
        f"{info['train_supervised_tokens']:,}",
        f"{len(val_examples):,}",
        f"{batches_per_epoch:,}",
        f"{total_steps:,}",
        p.batch_size,
        p.gradient_accumulation_steps,
        p.batch_size * p.gradient_accumulation_steps,
        p.batching,
    )
    return TrainData(train_examples, val_examples, stream, val_batches, batches_per_epoch, total_steps, info)
