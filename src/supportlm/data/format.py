"""Chat formatting with the base model's own chat template, plus token-length statistics.

The trainer needs to know which tokens are the assistant's (loss is computed on
those only), so every formatted row carries the full templated `text`, its token
count and how many of those tokens are assistant tokens (`<split>.jsonl`, for people
and for evaluation), and the token ids themselves are written once, with their
assistant-only labels, as `<split>.tokens.arrow` (an uncompressed Arrow IPC file the
trainer memory-maps instead of tokenizing every row again at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supportlm.chat_template import assistant_spans, span_labels
from supportlm.config import FormatParams, Params
from supportlm.data.schema import Record, read_records
from supportlm.errors import DataError
from supportlm.io import write_json, write_jsonl
from supportlm.lineage import params_hash
from supportlm.paths import Paths


def to_chat(rec: Record, system_prompt: str) -> list[dict[str, str]]:
    msgs = [m.model_dump() for m in rec.messages]
    if msgs and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def assistant_token_count(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens inside assistant turns (the ones the trainer computes loss on)."""
    _, spans, _ = assistant_spans(tokenizer, messages)
    return sum(end - start for start, end in spans)


def tokens_path(jsonl: Path) -> Path:
    """data/formatted/train.jsonl -> data/formatted/train.tokens.arrow."""
    return jsonl.with_name(jsonl.stem + ".tokens.arrow")


def write_tokens(path: Path, tokens: dict[str, list]) -> None:
    """The templated ids and assistant-only labels, untruncated (the trainer cuts to train.max_length).

    Columns id (string), input_ids and labels (list<int32>); uncompressed, so a reader can memory-map it."""
    import pyarrow as pa  # here: the GPU check imports this module on hosts without pyarrow

    table = pa.table({"id": pa.array(tokens["ids"], pa.string()),
                      "input_ids": pa.array(tokens["input_ids"], pa.list_(pa.int32())),
                      "labels": pa.array(tokens["labels"], pa.list_(pa.int32()))})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    tmp.replace(path)


def format_split(
    records: Sequence[Record], tokenizer: Any, p: FormatParams
) -> tuple[list[dict], dict, dict[str, list]]:
    """Rows of `<split>.jsonl`, their length statistics, and the token columns of `<split>.tokens.arrow`."""
    rows: list[dict[str, Any]] = []
    tokens: dict[str, list] = {"ids": [], "input_ids": [], "labels": []}
    lengths, assistant = [], []
    for rec in records:
        messages = to_chat(rec, p.system_prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        full, spans, _ = assistant_spans(tokenizer, messages)
        n_asst = sum(end - start for start, end in spans)
        tokens["ids"].append(rec.id)
        tokens["input_ids"].append(full)
        tokens["labels"].append(span_labels(full, spans))
        lengths.append(n)
        assistant.append(n_asst)
        rows.append(
            {
                "id": rec.id,
                "intent": rec.intent,
                "category": rec.category,
                "kind": rec.kind,
                "messages": messages,
                "text": text,
                "n_tokens": n,
                "n_assistant_tokens": n_asst,
                "truncated": n > p.max_length,
            }
        )
    return rows, length_stats(lengths, assistant, p.max_length), tokens


def length_stats(lengths: list[int], assistant: list[int], max_length: int) -> dict[str, Any]:
    if not lengths:
        return {"rows": 0}
    arr = np.array(lengths)
    clipped = np.minimum(arr, max_length)
    return {
        "rows": int(arr.size),
        "tokens_total": int(arr.sum()),
        "tokens_mean": round(float(arr.mean()), 1),
        "tokens_p50": int(np.percentile(arr, 50)),
        "tokens_p95": int(np.percentile(arr, 95)),
        "tokens_max": int(arr.max()),
        "assistant_token_share": round(float(np.sum(assistant) / arr.sum()), 4),
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
        records = read_records(paths.processed / f"{name}.jsonl", "split")
        rows, stats, tokens = format_split(records, tokenizer, params.format)
        write_jsonl(paths.formatted / f"{name}.jsonl", rows)
        write_tokens(tokens_path(paths.formatted / f"{name}.jsonl"), tokens)
        report["splits"][name] = stats
    report["chat_template_source"] = str(paths.base_model / "chat_template.jinja")
    write_json(paths.reports / "format.json", report)
    return report
