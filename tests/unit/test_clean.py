"""The clean stage's guarantees: every row kept or quarantined with a reason, every change recorded."""

import pytest

from supportlm.config import CleanParams, LabelParams
from supportlm.data.clean import clean

REPLY = (
    "Thanks for reaching out. To track order {{Order Number}}, sign in to {{Website URL}}, open "
    "Orders and pick Track. You will see the carrier and the expected delivery date there."
)


def row(rid, user, reply=REPLY, intent="track_order", category="ORDER", kind="qa"):
    return {
        "id": rid,
        "source": "t",
        "kind": kind,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
        "intent": intent,
        "category": category,
        "meta": {},
    }


P = CleanParams(labels=LabelParams(enabled=False), max_tokens=200)


def test_every_row_is_accounted_for_with_reason():
    rows = [
        row("a", "where is my order?"),
        row("b", "where is my order?"),  # exact duplicate of a
        row("c", "   "),  # whitespace-only user turn
        row("d", "word " * 400),  # too long for max_tokens=200
        {"id": "e", "source": "t", "kind": "faq", "messages": [], "intent": "x", "category": "y"},  # bad kind
        row("f", "hello", kind="qa") | {"messages": [{"role": "user", "content": "hi"}]},  # no assistant turn
        row("g", "my email is jane.doe@example.com, <b>help</b> with itâ€™s tracking"),
    ]
    res = clean(rows, P)
    assert [r.id for r in res.kept] == ["a", "g"]
    reasons = {q["id"]: q["reason"] for q in res.quarantine}
    assert reasons == {
        "b": "exact_duplicate",
        "c": "empty_field",
        "d": "too_long",
        "e": "invalid_record",
        "f": "bad_structure",
    }
    assert res.report["rows_in"] == 7 == res.report["rows_kept"] + res.report["rows_quarantined"]
    # quarantined rows keep the original record: nothing is lost
    assert next(q for q in res.quarantine if q["id"] == "c")["record"] == rows[2]
    assert "kind" in next(q for q in res.quarantine if q["id"] == "e")["detail"]
    g = res.kept[1].messages[0].content
    assert g == "my email is {{Email Address}}, help with it’s tracking"
    change = next(c for c in res.changes if c["id"] == "g")
    assert change["codes"] == ["unicode_repaired", "markup_stripped", "pii_masked:email"]
    assert change["before"]["0"] == rows[6]["messages"][0]["content"]


def test_near_duplicates_quarantined_with_partner():
    rows = [
        row("a", "where is my order, it has been a week"),
        row("b", "where is my order, it has been a week!!"),
    ]
    res = clean(rows, P)
    assert [q["reason"] for q in res.quarantine] == ["near_duplicate"]
    assert "with a" in res.quarantine[0]["detail"]


def make_label_rows(n_per_intent=30):
    """Two intents with distinct vocabulary, and two rows whose labels are flipped."""
    rows = []
    for i in range(n_per_intent):
        rows.append(
            row(
                f"t{i}",
                f"track parcel shipment {i} where is delivery courier status {i * 7}",
                reply=f"Tracking reply number {i}: {REPLY}",
            )
        )
        rows.append(
            row(
                f"r{i}",
                f"refund money back return payment {i} reimburse charge {i * 3}",
                reply=f"Refund reply number {i}: you can request a refund in your account.",
                intent="get_refund",
                category="REFUND",
            )
        )
    rows[0]["intent"], rows[0]["category"] = "get_refund", "REFUND"  # flipped
    rows[3]["intent"], rows[3]["category"] = "track_order", "ORDER"  # flipped
    return rows


@pytest.mark.parametrize("action", ["flag", "drop", "relabel"])
def test_label_issue_actions(action):
    pytest.importorskip("cleanlab")
    p = CleanParams(labels=LabelParams(enabled=True, action=action, folds=3))
    res = clean(make_label_rows(), p)
    flagged = {i["id"] for i in res.label_issues}
    assert flagged == {"t0", "r1"}
    kept = {r.id: r for r in res.kept}
    if action == "drop":
        assert flagged.isdisjoint(kept) and {q["reason"] for q in res.quarantine} == {"label_issue"}
    elif action == "relabel":
        assert kept["t0"].intent == "track_order" and kept["t0"].category == "ORDER"
        assert kept["t0"].meta["original_intent"] == "get_refund"
    else:
        assert kept["t0"].intent == "get_refund" and kept["t0"].meta["label_issue"] is True
    assert res.report["rows_in"] == res.report["rows_kept"] + res.report["rows_quarantined"]


def test_streamed_clean_writes_nothing_when_the_input_breaks(tmp_path):
    """A bad line half-way (after several batches) leaves no outputs, parts or scratch files behind."""
    from supportlm.data import clean as clean_module
    from supportlm.errors import DataError

    def rows():
        for i in range(12):
            yield row(f"r{i}", f"where is order number {i}? it has been {i} days since I paid")
        raise DataError("records.jsonl:13: not valid JSON")

    out = tmp_path / "interim"
    clean_module.BATCH_ROWS, old = 5, clean_module.BATCH_ROWS
    try:
        with pytest.raises(DataError, match="records.jsonl:13"):
            clean_module.clean_files(rows(), P, out)
    finally:
        clean_module.BATCH_ROWS = old
    assert list(out.iterdir()) == []


def test_batching_does_not_change_the_result(monkeypatch):
    """Exact and near duplicates are found across batch boundaries: the same outputs at any batch size."""
    from supportlm.data import clean as clean_module

    rows = [
        row(f"r{i:02d}", f"where is my order {i % 7}? I ordered it {i % 7} days ago and paid by card")
        for i in range(30)
    ]
    whole = clean(rows, P)
    monkeypatch.setattr(clean_module, "BATCH_ROWS", 4)
    batched = clean(rows, P)
    assert [r.id for r in batched.kept] == [r.id for r in whole.kept] and len(whole.kept) == 7
    assert batched.quarantine == whole.quarantine and batched.changes == whole.changes
    assert {q["reason"] for q in whole.quarantine} == {"exact_duplicate"}
