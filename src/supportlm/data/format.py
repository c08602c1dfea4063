"""Chat formatting with the base model's own chat template, plus token-length statistics.

The trainer needs to know which tokens are the assistant's (loss is computed on
those only), so every formatted row carries the full templated `text`, its token
count and how many of those tokens are assistant tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from supportlm.chat_template import assistant_spans
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


def format_split(records: Sequence[Record], tokenizer: Any, p: FormatParams) -> tuple[list[dict], dict]:
    rows: list[dict[str, Any]] = []
    lengths, assistant = [], []
    for rec in records:
        messages = to_chat(rec, p.system_prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        n_asst = assistant_token_count(tokenizer, messages)
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
    return rows, length_stats(lengths, assistant, p.max_length)


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
        rows, stats = format_split(records, tokenizer, params.format)
        write_jsonl(paths.formatted / f"{name}.jsonl", rows)
        report["splits"][name] = stats
    report["chat_template_source"] = str(paths.base_model / "chat_template.jinja")
    write_json(paths.reports / "format.json", report)
    return report
