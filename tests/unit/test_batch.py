"""Offline batch inference on a tiny random Llama: resumable, bad lines reported, batching == one by one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import USER_LINES, tiny_model_dir

from supportlm.errors import DataError
from supportlm.inference.engines import HFEngine
from supportlm.serve.batch import BadRow, batch, done_ids, parse_row

GOOD = 7


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("batch") / "m", seed=1)


@pytest.fixture(scope="module")
def engine(model_dir) -> HFEngine:
    return HFEngine.load(model_dir)


def _input(path: Path) -> Path:
    """7 good rows (chat, prompt-only, formatted rows with a reference reply) and 4 bad lines."""
    lines = []
    for i in range(GOOD):
        if i % 3 == 0:
            lines.append(json.dumps({"id": f"r{i}", "prompt": USER_LINES[i % len(USER_LINES)]}))
        else:
            lines.append(
                json.dumps(
                    {
                        "id": f"r{i}",
                        "messages": [
                            {"role": "user", "content": USER_LINES[i % len(USER_LINES)]},
                            {"role": "assistant", "content": "reference reply, dropped before generation"},
                        ],
                    }
                )
            )
    lines.insert(2, '{"id": "broken", "messages": [')  # line 3: invalid JSON
    lines.insert(4, json.dumps({"id": "no-input", "text": "hello"}))  # line 5: neither messages nor prompt
    lines.insert(6, "[1, 2, 3]")  # line 7: not an object
    lines.insert(8, "")  # line 9: blank, ignored
    lines.append(json.dumps({"id": "r1", "prompt": "dup"}))  # line 12: duplicate id
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]


def test_batch_resume_and_bad_lines(engine, tmp_path):
    src, out = _input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    first = batch(src, out, engine, max_new_tokens=6, batch_size=3, progress=False)
    assert first["generated"] == GOOD and first["skipped_done"] == 0
    assert first["error_lines"] == [3, 5, 7, 12]
    errors = [json.loads(x) for x in Path(first["errors_file"]).read_text().splitlines()]
    assert [e["line"] for e in errors] == [3, 5, 7, 12]
    assert "invalid JSON" in errors[0]["error"] and "missing `messages` or `prompt`" in errors[1]["error"]
    assert "duplicate id" in errors[3]["error"]
    assert sorted(_ids(out)) == sorted(f"r{i}" for i in range(GOOD))
    rec = json.loads(out.read_text().splitlines()[0])
    assert set(rec) >= {"id", "reply", "finish_reason", "prompt_tokens", "completion_tokens", "line"}

    # simulate a crash: keep 3 complete rows and half of the 4th
    kept = out.read_text().splitlines(keepends=True)
    out.write_text("".join(kept[:3]) + kept[3][: len(kept[3]) // 2])
    second = batch(src, out, engine, max_new_tokens=6, batch_size=3, progress=False)
    assert second["skipped_done"] == 3 and second["generated"] == GOOD - 3
    ids = _ids(out)  # every line parses (the torn line is gone) ...
    assert sorted(ids) == sorted(f"r{i}" for i in range(GOOD)) and len(ids) == len(
        set(ids)
    )  # ... each id once

    third = batch(src, out, engine, max_new_tokens=6, batch_size=3, progress=False)
    assert third["generated"] == 0 and third["skipped_done"] == GOOD and len(_ids(out)) == GOOD


def test_batch_loads_model_from_path(model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Where is my order?"}) + "\n")
    res = batch(src, tmp_path / "o.jsonl", model_dir, max_new_tokens=4, progress=False)
    assert res["generated"] == 1 and _ids(tmp_path / "o.jsonl") == ["line-1"]
    with pytest.raises(DataError, match="HF model dir or a .gguf"):
        batch(src, tmp_path / "o2.jsonl", tmp_path / "nowhere", progress=False)


def test_left_padded_batches_match_single_sequences(engine):
    """Greedy output must not depend on the batch it was decoded in (left padding + attention mask)."""
    convs = [[{"role": "user", "content": u}] for u in USER_LINES[:5]]
    prompts = [engine.prompt_ids(c) for c in convs]
    assert len({len(p) for p in prompts}) > 1  # different lengths: padding really happens
    batched = engine.generate_ids(prompts, max_new_tokens=8, batch_size=5)
    single = [engine.generate_ids([p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert [g.ids for g in batched] == [g.ids for g in single]
    assert all(g.completion_tokens == len(g.ids) <= 8 for g in batched)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "invalid JSON"),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"messages\[0\]"),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', "user turn"),
        ('{"prompt": "  "}', "non-empty string"),
        ('{"id": [1], "prompt": "x"}', "`id`"),
    ],
)
def test_parse_row_errors(line, error):
    with pytest.raises(BadRow, match=error):
        parse_row(line, 1)


def test_parse_row_adds_system_prompt_and_drops_trailing_reply():
    rid, msgs, _ = parse_row(
        json.dumps(
            {
                "id": 5,
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ref"}],
            }
        ),
        1,
        system_prompt="SYS",
    )
    assert rid == "5" and msgs == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"}]


def test_done_ids_drops_torn_line(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "rep')
    assert done_ids(out) == {"a", "b"}
    assert out.read_text() == '{"id": "a"}\n{"id": "b"}\n'
