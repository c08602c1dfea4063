"""Chat formatting with the base model's own chat template, plus token-length statistics.

The trainer needs to know which tokens are the assistant's (loss is computed on
those only), so every formatted row carries the full templated `text`, its token
count and how many of those tokens are assistant tokens (`<split>.jsonl`, for people
and for evaluation), and the token ids themselves are written once, with their
assistant-only labels, as `<split>.tokens.arrow` (`data/tokens.py`: the file the
trainer memory-maps instead of tokenizing every row again at start-up).

The stage streams: each split is read, formatted and written a batch of rows at a
time (one batched tokenizer call per batch), so its memory does not grow with the
split; only the per-row lengths are kept for the statistics.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supportlm.chat_template import assistant_spans, assistant_spans_batch, span_labels
from supportlm.config import FormatParams, Params
from supportlm.data.schema import Record, iter_records
from supportlm.data.stream import JsonlParts, batches
from supportlm.data.tokens import TokenWriter, tokens_path
from supportlm.errors import DataError
from supportlm.io import write_json
from supportlm.lineage import params_hash
from supportlm.paths import Paths

BATCH_ROWS = 2_000  # rows formatted per tokenizer call: the stage's memory is a few batches of rows


def to_chat(rec: Record, system_prompt: str) -> list[dict[str, str]]:
    msgs = [m.model_dump() for m in rec.messages]
    if msgs and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def assistant_token_count(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens inside assistant turns (the ones the trainer computes loss on)."""
    _, spans, _ = assistant_spans(tokenizer, messages)
    return sum(end - start for start, end in spans)


def format_batch(
    records: Sequence[Record], tokenizer: Any, p: FormatParams
) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Rows of `<split>.jsonl` and the token columns of `<split>.tokens.arrow` for a batch of records."""
    conversations = [to_chat(rec, p.system_prompt) for rec in records]
    spans_of = assistant_spans_batch(tokenizer, conversations)
    rows: list[dict[str, Any]] = []
    tokens: dict[str, list] = {"ids": [], "input_ids": [], "labels": []}
    for rec, messages, (full, spans, _) in zip(records, conversations, spans_of, strict=True):
        n = len(full)
        tokens["ids"].append(rec.id)
        tokens["input_ids"].append(full)
        tokens["labels"].append(span_labels(full, spans))
        rows.append(
            {
                "id": rec.id,
                "intent": rec.intent,
                "category": rec.category,
                "kind": rec.kind,
                "messages": messages,
                "text": tokenizer.apply_chat_template(messages, tokenize=False),
                "n_tokens": n,
                "n_assistant_tokens": sum(end - start for start, end in spans),
                "truncated": n > p.max_length,
            }
        )
    return rows, tokens


def format_split(
    records: Sequence[Record], tokenizer: Any, p: FormatParams
) -> tuple[list[dict], dict, dict[str, list]]:
    """Rows of `<split>.jsonl`, their length statistics, and the token columns of `<split>.tokens.arrow`
    (in memory: for tests and the GPU check; the stage streams with `format_file`)."""
    rows, tokens = format_batch(records, tokenizer, p)
    stats = length_stats([r["n_tokens"] for r in rows], [r["n_assistant_tokens"] for r in rows], p.max_length)
    return rows, stats, tokens


def format_file(
    records: Iterable[Record], out: Path, tokenizer: Any, p: FormatParams, batch_rows: int = BATCH_ROWS
) -> dict[str, Any]:
    """Stream `records` into `out` (JSONL) and its token file; returns the length statistics.

    Both files appear only if every row was formatted: an error leaves the old ones in place."""
    lengths, assistant = array("i"), array("i")
    with JsonlParts(out) as rows_out, TokenWriter(tokens_path(out)) as tokens_out:
        for batch in batches(records, batch_rows):
            rows, tokens = format_batch(batch, tokenizer, p)
            for row in rows:
                rows_out.write(row)
                lengths.append(row["n_tokens"])
                assistant.append(row["n_assistant_tokens"])
            tokens_out.write(tokens)
    return length_stats(lengths, assistant, p.max_length)


def length_stats(lengths: Sequence[int], assistant: Sequence[int], max_length: int) -> dict[str, Any]:
    if not len(lengths):
        return {"rows": 0}
    arr = np.asarray(lengths, dtype=np.int64)
    clipped = np.minimum(arr, max_length)
    return {
        "rows": int(arr.size),
        "tokens_total": int(arr.sum()),
        "tokens_mean": round(float(arr.mean()), 1),
        "tokens_p50": int(np.percentile(arr, 50)),
        "tokens_p95": int(np.percentile(arr, 95)),
        "tokens_max": int(arr.max()),
        "assistant_token_share": round(float(np.asarray(assistant, dtype=np.int64).sum() / arr.sum()), 4),
        "truncated_rows": int((arr > max_length).sum()),
        # what a naive batcher pads to: every row padded to max_length
        "padding_waste_at_max_length": round(float(1 - clipped.sum() / (max_length * arr.size)), 4),
    }


def run_format(params: Params, paths: Paths) -> dict[str, Any]:
    """The format stage: data/processed/*.jsonl -> chat-template token ids in data/formatted/*.jsonl."""
    from supportlm.tokenizer import load_tokenizer

    if not paths.base_model.exists():
        raise DataError(f"{paths.base_model}: missing input; run `dvc repro base_model` first")
    tokenizer = load_tokenizer(paths.base_model)
    report: dict[str, Any] = {"params_hash": params_hash(params.format), "splits": {}}
    for name in ("train", "val", "test"):
        records = iter_records(paths.processed / f"{name}.jsonl", "split")
        report["splits"][name] = format_file(records, paths.formatted / f"{name}.jsonl", tokenizer, params.format)
    report["chat_template_source"] = str(paths.base_model / "chat_template.jinja")
    write_json(paths.reports / "format.json", report)
    return report
