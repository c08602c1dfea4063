"""Split: stratified by intent, near-duplicates and conversations never cross splits."""

import json
from collections import Counter

import numpy as np
import pytest

from supportlm.config import DedupParams, SplitParams
from supportlm.data import dedup
from supportlm.data.schema import Message, Record
from supportlm.data.split import (
    SPLITS,
    Columns,
    RowStore,
    assign,
    group_ids,
    leakage,
    read_columns,
    run_split,
    split,
    written_order,
)
from supportlm.errors import DataError
from supportlm.io import write_jsonl
from supportlm.paths import Paths
from tests.stage_params import project_params

INTENTS = ["track_order", "get_refund", "cancel_order", "review"]


def rec(i, intent, text, conv=None, reply=None):
    meta = {"conversation_id": conv} if conv else {}
    return Record(
        id=f"r{i:04d}",
        source="t",
        kind="qa",
        intent=intent,
        category="X",
        meta=meta,
        messages=[
            Message(role="user", content=text),
            Message(role="assistant", content=reply or f"answer {i} " * 5),
        ],
    )


def corpus():
    rows = []
    i = 0
    for intent in INTENTS:
        for k in range(50):
            rows.append(rec(i, intent, f"{intent} question number {k} with unique words w{i} z{i * 13}"))
            i += 1
    # near-duplicate family: 6 paraphrases of one long text
    long = " ".join(f"parcel{w}" for w in range(40))  # 40 distinct words: one edit keeps Jaccard ~0.9
    for k in range(6):
        rows.append(rec(i, "track_order", long + f" v{k}", reply="Let me check that parcel for you."))
        i += 1
    # one conversation stored as 4 rows with very different text
    for k in range(4):
        rows.append(rec(i, "review", f"turn {k} totally different content {k * 99} foo{k}", conv="conv-1"))
        i += 1
    return rows


def run(records, p):
    """split + the leakage check on the rows as written; (ids per split, report)."""
    cols = Columns.from_records(records, DedupParams())
    out, _groups, rep = split(cols, p)
    ids = {s: [cols.ids[i] for i in out[s]] for s in SPLITS}
    flat, split_of = written_order(out)
    cols.reorder(flat)
    assert cols.ids == [i for s in SPLITS for i in ids[s]]
    rep |= leakage(cols, split_of, p)
    return ids, rep


def test_ratios_stratification_and_no_leaks():
    records = corpus()
    intent_of = {r.id: r.intent for r in records}
    out, rep = run(records, SplitParams(seed=3))
    assert sum(rep["counts"].values()) == 210
    assert sorted(i for ids in out.values() for i in ids) == sorted(intent_of)  # every row once
    assert rep["leaked_groups"] == 0 and rep["conversations_crossing"] == 0
    assert rep["cross_split_exact_duplicates"] == 0
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(rep["ratios"][name] - share) < 0.05
    for name in SPLITS:  # every intent in every split; rows written sorted by id
        assert set(Counter(intent_of[i] for i in out[name])) == set(INTENTS)
        assert out[name] == sorted(out[name])
    where = {i: s for s, ids in out.items() for i in ids}
    family = [where[f"r{i:04d}"] for i in range(200, 206)]
    conv = [where[f"r{i:04d}"] for i in range(206, 210)]
    assert len(set(family)) == 1 and len(set(conv)) == 1
    assert rep["largest_group"] == 6 and rep["rows_in_multi_row_groups"] == 10 and rep["groups"] == 202


def test_seed_changes_assignment_but_is_deterministic():
    a, _ = run(corpus(), SplitParams(seed=1))
    b, _ = run(corpus(), SplitParams(seed=1))
    c, _ = run(corpus(), SplitParams(seed=7))
    assert a["test"] == b["test"] and a["test"] != c["test"]


def test_group_ids_name_the_first_row_of_each_group():
    records = corpus()
    cols = Columns.from_records(records, DedupParams())
    groups = group_ids(cols.ids, cols.convs, cols.sigs, SplitParams())
    assert groups[:200] == cols.ids[:200]  # unrelated rows: groups of one
    assert groups[200:206] == ["r0200"] * 6 and groups[206:] == ["r0206"] * 4
    out = assign(cols.ids, cols.intents, groups, SplitParams())
    assert sorted(i for v in out.values() for i in v) == list(range(len(records)))


def test_reorder_permutes_every_column():
    records = corpus()
    cols = Columns.from_records(records, DedupParams())
    before = Columns.from_records(records, DedupParams())
    idx = np.random.default_rng(0).permutation(len(records))
    cols.reorder(idx)
    assert cols.ids == [before.ids[i] for i in idx] and cols.convs == [before.convs[i] for i in idx]
    assert cols.intents == [before.intents[i] for i in idx]
    assert np.array_equal(cols.sigs, before.sigs[idx]) and np.array_equal(cols.exact, before.exact[idx])
    with pytest.raises(ValueError, match="permutation"):
        cols.reorder(np.zeros(len(records), dtype=np.int64))


def test_leakage_counts_what_crosses_splits():
    """Independent of assign: rows put in the wrong split by hand are caught."""
    records = corpus()
    records.append(
        rec(210, "review", records[0].messages[0].content, reply=records[0].messages[1].content)
    )  # exact dup
    cols = Columns.from_records(records, DedupParams())
    split_of = ["train"] * len(records)
    split_of[201] = "val"  # one of the near-duplicate family
    split_of[207] = "test"  # one turn of the conversation
    split_of[210] = "test"  # the exact duplicate of row 0
    rep = leakage(cols, split_of, SplitParams())
    # the conversation's group and the duplicate's group leak too
    assert rep == {"leaked_groups": 3, "cross_split_exact_duplicates": 1, "conversations_crossing": 1}
    assert leakage(cols, ["val"] * len(records), SplitParams())["leaked_groups"] == 0


def test_columns_do_not_depend_on_batching(tmp_path):
    records = corpus()
    path = tmp_path / "clean.jsonl"
    write_jsonl(path, records)
    with RowStore(tmp_path) as s1, RowStore(tmp_path) as s2:
        small = read_columns(path, DedupParams(), s1, batch_rows=7)
        whole = read_columns(path, DedupParams(), s2, batch_rows=10_000)
        lines = path.read_bytes().splitlines(keepends=True)
        assert [s1.get(i) for i in range(len(s1))] == lines == [s2.get(i) for i in range(len(s2))]
    assert list(tmp_path.iterdir()) == [path]  # the scratch files have no name
    assert small.ids == whole.ids == [r.id for r in records]
    assert np.array_equal(small.sigs, whole.sigs) and small.sigs.shape == (
        len(records),
        DedupParams().num_perm,
    )
    assert np.array_equal(small.sigs, dedup.signatures([r.text() for r in records], 128, 3))
    assert small.exact.tolist() == [dedup.exact_key(r.text()).encode() for r in records]
    assert small.convs[:200] == [None] * 200 and small.convs[206:] == ["t:conv-1"] * 4
    assert small.intents == [r.intent for r in records]


def test_run_split_writes_records_with_group_ids(tmp_path):
    """The files are what write_jsonl of the Records (meta.group_id added, sorted by id) gives, byte for byte."""
    records = corpus()
    paths = Paths(root=tmp_path)
    write_jsonl(paths.interim / "clean.jsonl", records[::-1])  # file order is not id order
    rep = run_split(project_params(split=SplitParams(seed=3)), paths)
    assert rep["leaked_groups"] == 0 and sum(rep["counts"].values()) == len(records)
    assert sorted(p.name for p in paths.processed.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    by_id = {r.id: r for r in records}
    family = {f"r{i:04d}" for i in range(200, 206)}
    for name in SPLITS:
        written = (paths.processed / f"{name}.jsonl").read_bytes()
        rows = [json.loads(line) for line in written.splitlines()]
        assert len(rows) == rep["counts"][name]
        expected = []
        for row in rows:
            r = by_id[row["id"]].model_copy(deep=True)
            r.meta["group_id"] = row["meta"]["group_id"]
            expected.append(r)
        write_jsonl(tmp_path / "expected.jsonl", sorted(expected, key=lambda r: r.id))
        assert written == (tmp_path / "expected.jsonl").read_bytes()
        for row in rows:
            if row["id"] in family:
                assert row["meta"]["group_id"] == "r0205"  # the group's first row in file order
    assert json.loads((paths.reports / "split.json").read_text())["counts"] == rep["counts"]


def test_bad_row_names_file_line_and_field(tmp_path):
    paths = Paths(root=tmp_path)
    good = corpus()[0].model_dump(mode="json")
    bad = good | {"id": "r9999", "messages": [{"role": "robot", "content": "hi"}]}
    paths.interim.mkdir(parents=True)
    (paths.interim / "clean.jsonl").write_text(
        json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"clean\.jsonl:3: `messages\.0\.role`"):
        run_split(project_params(), paths)
    assert not list(paths.processed.glob("*"))


def test_no_rows_is_an_error(tmp_path):
    paths = Paths(root=tmp_path)
    paths.interim.mkdir(parents=True)
    (paths.interim / "clean.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no rows left"):
        run_split(project_params(), paths)
    with pytest.raises(DataError, match="not found"):
        run_split(project_params(), Paths(root=tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
