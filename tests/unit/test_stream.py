"""Streaming helpers of the data stages: parted JSONL files and batches."""

import json

import pytest

from supportlm.data.stream import JsonlParts, batches


def test_parts_are_joined_in_their_declared_order(tmp_path):
    out = tmp_path / "q.jsonl"
    with JsonlParts(out, ("first", "second")) as f:
        f.write({"n": 1}, "second")
        f.write({"n": 2}, "first")
        f.write({"n": 3}, "second")
        assert not out.exists()  # nothing visible until the block ends
    assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [2, 1, 3]
    assert f.counts == {"first": 1, "second": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]  # no part or tmp file left


def test_a_failure_keeps_the_old_file_and_leaves_no_parts(tmp_path):
    out = tmp_path / "q.jsonl"
    out.write_text('{"old": true}\n')
    with pytest.raises(RuntimeError), JsonlParts(out, ("a", "b")) as f:
        f.write({"new": 1}, "a")
        raise RuntimeError("killed half-way")
    assert out.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_batches_cover_every_item_once():
    assert list(batches(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches([], 3)) == []
