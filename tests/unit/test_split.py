"""Split: stratified by intent, near-duplicates and conversations never cross splits."""

from collections import Counter

from supportlm.config import DedupParams, SplitParams
from supportlm.data.schema import Message, Record
from supportlm.data.split import split

INTENTS = ["track_order", "get_refund", "cancel_order", "review"]


def rec(i, intent, text, conv=None, reply=None):
    meta = {"conversation_id": conv} if conv else {}
    return Record(
        id=f"r{i:04d}", source="t", kind="qa", intent=intent, category="X", meta=meta,
        messages=[Message(role="user", content=text), Message(role="assistant", content=reply or f"answer {i} " * 5)],
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


def test_ratios_stratification_and_no_leaks():
    out, rep = split(corpus(), SplitParams(seed=3), DedupParams())
    assert sum(rep["counts"].values()) == 210
    assert rep["leaked_groups"] == 0 and rep["conversations_crossing"] == 0
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(rep["ratios"][name] - share) < 0.05
    for name in ("train", "val", "test"):  # every intent in every split
        assert set(Counter(r.intent for r in out[name])) == set(INTENTS)
    where = {r.id: s for s, rows in out.items() for r in rows}
    family = [where[f"r{i:04d}"] for i in range(200, 206)]
    conv = [where[f"r{i:04d}"] for i in range(206, 210)]
    assert len(set(family)) == 1 and len(set(conv)) == 1


def test_seed_changes_assignment_but_is_deterministic():
    a, _ = split(corpus(), SplitParams(seed=1), DedupParams())
    b, _ = split(corpus(), SplitParams(seed=1), DedupParams())
    c, _ = split(corpus(), SplitParams(seed=7), DedupParams())
    ids = lambda o: [r.id for r in o["test"]]
    assert ids(a) == ids(b) and ids(a) != ids(c)
