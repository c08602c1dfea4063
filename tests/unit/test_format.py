"""The format stage streams: batched chat-template spans, JSONL + token file written a batch at a time."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_utils import SYSTEM, tiny_messages, tiny_tokenizer

from supportlm.chat_template import INSTRUCT_OUTPUT, assistant_spans_batch, template_ids
from supportlm.config import FormatParams
from supportlm.data.format import format_file, format_split
from supportlm.data.schema import Record, iter_records
from supportlm.data.tokens import TokenTable, TokenWriter, tokens_path
from supportlm.errors import DataError


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    return [
        Record(id=f"r{i:03d}", source="tiny", kind="qa", intent="track_order", category="ORDER", messages=tiny_messages(i, rng))
        for i in range(n)
    ]


def _spans_one_call_per_render(tokenizer, messages):
    """The spans as the stage computed them before batching: apply_chat_template(tokenize=True) per prefix."""
    full = template_ids(tokenizer, messages)
    spans, exact = [], True
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            before = template_ids(tokenizer, messages[:i], add_generation_prompt=True)
            after = template_ids(tokenizer, messages[: i + 1])
            spans.append((len(before), len(after)))
            exact = exact and after == full[: len(after)] and before == after[: len(before)]
    return full, spans, exact


@pytest.mark.parametrize("template", ["model", "instruct_output"])
def test_batched_spans_equal_one_call_per_render(tok, template):
    """One batched tokenizer call gives the ids, spans and exactness of tokenizing every render alone,
    for one- and two-turn conversations, a conversation with no assistant turn, and a template
    (Phi-2's Instruct/Output) whose turn boundaries tokenize differently from ChatML's."""
    tokenizer = tok
    if template == "instruct_output":
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = INSTRUCT_OUTPUT
    conversations = [r.model_dump()["messages"] for r in _records(24)]
    conversations.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello?"}])
    got = assistant_spans_batch(tokenizer, conversations)
    assert got == [_spans_one_call_per_render(tokenizer, m) for m in conversations]
    assert any(len(spans) == 2 for _, spans, _ in got) and got[-1][1] == []


def test_format_file_is_the_same_at_any_batch_size(tok, tmp_path):
    """Streaming in batches of 1, 7 or all rows writes byte-identical JSONL, the same token rows (in as
    many record batches as were formatted) and the same statistics as formatting the split in memory."""
    p = FormatParams(system_prompt=SYSTEM, max_length=40)
    records = _records(30, seed=5)
    rows, stats, tokens = format_split(records, tok, p)
    outputs = []
    for batch_rows in (1, 7, 1000):
        out = tmp_path / f"b{batch_rows}" / "train.jsonl"
        assert format_file(iter(records), out, tok, p, batch_rows=batch_rows) == stats
        outputs.append(out.read_bytes())
        table = TokenTable(tokens_path(out))
        assert table.num_rows == 30 and len(table._columns) == -(-30 // batch_rows)
        assert [table.example(i) for i in range(30)] == list(zip(tokens["input_ids"], tokens["labels"], strict=True))
        with pytest.raises(IndexError, match="row 30 of a 30-row token file"):
            table.example(30)
    assert outputs[0] == outputs[1] == outputs[2]
    assert [json.loads(line) for line in outputs[0].decode().splitlines()] == rows
    assert stats["rows"] == 30 and stats["truncated_rows"] > 0  # max_length 40 cuts some rows


def test_a_bad_row_mid_stream_keeps_the_old_outputs(tok, tmp_path):
    """A row that fails the schema after several batches were written is a DataError naming file:line
    and the field; the previous JSONL and token file stay as they were, and no part or temp file is left."""
    src = tmp_path / "processed.jsonl"
    lines = [r.model_dump_json() for r in _records(20)]
    bad = json.loads(lines[11])
    bad["kind"] = "email"
    lines[11] = json.dumps(bad)
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "formatted" / "train.jsonl"
    out.parent.mkdir()
    out.write_text("old rows\n")
    tokens_path(out).write_bytes(b"old tokens")
    p = FormatParams(system_prompt=SYSTEM)
    with pytest.raises(DataError, match=r"processed.jsonl:12: `kind`"):
        format_file(iter_records(src, "split"), out, tok, p, batch_rows=4)
    assert out.read_text() == "old rows\n" and tokens_path(out).read_bytes() == b"old tokens"
    assert sorted(f.name for f in out.parent.iterdir()) == ["train.jsonl", "train.tokens.arrow"]


def test_token_writer_writes_nothing_on_error(tmp_path):
    path = tmp_path / "x.tokens.arrow"
    with pytest.raises(RuntimeError), TokenWriter(path) as out:
        out.write({"ids": ["a"], "input_ids": [[1, 2]], "labels": [[-100, 2]]})
        raise RuntimeError("stage killed")
    assert list(tmp_path.iterdir()) == []
    with TokenWriter(path) as out:
        out.write({"ids": ["a", "b"], "input_ids": [[1, 2], [3]], "labels": [[-100, 2], [3]]})
        out.write({"ids": [], "input_ids": [], "labels": []})  # an empty batch adds no record batch
    table = TokenTable(path)
    assert (table.num_rows, table.example(1), len(table._columns)) == (2, ([3], [3]), 1)
