"""What the recipe trains on: the formatted train/val splits read, subset, tokenized and batched."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.config import TrainParams
from supportlm.errors import DataError
from supportlm.io import read_rows
from supportlm.lineage import file_md5
from supportlm.train.batching import Batch, BatchStream, Example, fixed_batches, steps_for, tokenize_rows

log = logging.getLogger("supportlm.train")


def read_formatted(path: Path) -> list[dict[str, Any]]:
    """The rows of a formatted split; DataError (naming the line) for a missing file, bad JSON or no rows."""
    rows = read_rows(path, "format", require={"messages": list})
    if not rows:
        raise DataError(f"{path}: no rows; check the split/format stages (reports/format.json)")
    return rows


def seeded_subset(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """n rows sampled with a fixed seed, kept in file order (None or n >= len = all rows)."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(f"supportlm-subset-{seed}").sample(range(len(rows)), n))
    return [rows[i] for i in keep]


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
    train_rows = seeded_subset(read_formatted(train_file), p.train_rows, p.seed)
    val_rows = seeded_subset(read_formatted(val_file), p.val_rows, p.seed)
    train_examples, train_stats = tokenize_rows(train_rows, tokenizer, p.max_length)
    val_examples, val_stats = tokenize_rows(val_rows, tokenizer, p.max_length)
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
