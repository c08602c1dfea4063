"""Exact and MinHash/LSH near-duplicate detection."""

import random

import numpy as np

from supportlm.data import dedup

BASE = (
    "I am sorry to hear that your order has not arrived yet. Please open the Orders page, "
    "select order {{Order Number}} and choose Track to see where the parcel is right now."
)


def test_exact_duplicates_ignore_case_and_spacing():
    texts = ["Hello  World", "hello world", "other", "HELLO WORLD "]
    assert dedup.find_exact_duplicates(texts) == {1: 0, 3: 0}


def test_near_duplicates_found_and_earlier_row_wins():
    near = BASE.replace("right now", "right now.")  # punctuation edit
    other = "How do I change the delivery address on my account? I moved last week and need it updated."
    sigs = dedup.signatures(
        [BASE, other, near, BASE.replace("parcel", "package")], num_perm=128, shingle_words=3
    )
    found = dedup.find_near_duplicates(sigs, threshold=0.7)  # one swapped word: true Jaccard 28/34
    assert set(found) == {2, 3}
    assert found[2] == (0, 1.0)  # punctuation is ignored by the shingles
    assert found[3][0] == 0


def test_skip_excludes_rows_from_the_index():
    sigs = dedup.signatures([BASE, BASE], num_perm=64, shingle_words=3)
    assert dedup.find_near_duplicates(sigs, 0.9, skip={0}) == {}


def test_groups_are_connected_components():
    a2 = BASE.replace("yet", "yet,")
    other = (
        "Please cancel my newsletter subscription immediately, I never signed up for it in the first place."
    )
    sigs = dedup.signatures([BASE, other, a2, other + " thanks"], num_perm=128, shingle_words=2)
    groups = dedup.near_duplicate_groups(sigs, 0.7).tolist()
    assert groups[0] == groups[2] and groups[1] == groups[3] and groups[0] != groups[1]


def test_signature_is_deterministic():
    a = dedup.signatures([BASE], 64, 3)[0]
    b = dedup.signatures([BASE], 64, 3)[0]
    assert (a == b).all()


def test_compact_signatures_equal_datasketch_minhash(monkeypatch):
    """The uint32 matrix holds exactly MinHash.bulk's values, chunked or not, at 4 bytes a permutation."""
    from datasketch import MinHash

    texts = [BASE, BASE.replace("parcel", "package"), "short", "", "Where is {{Order Number}}?"] * 3
    ref = MinHash.bulk([dedup.shingles(t, 3) for t in texts], num_perm=128, seed=1)
    monkeypatch.setattr(dedup, "SIGNATURE_CHUNK", 4)  # several bulk calls
    sigs = dedup.signatures(texts, 128, 3)
    assert sigs.dtype == np.uint32 and sigs.shape == (15, 128) and sigs.nbytes == 15 * 128 * 4
    assert all(m.hashvalues.dtype == np.uint32 and (sigs[i] == m.hashvalues).all() for i, m in enumerate(ref))
    assert dedup.jaccard(sigs[0], sigs[1]) == ref[0].jaccard(ref[1])


def _components_by_search(n, edges):
    """Reference: flood-fill each component; its label is the smallest member index."""
    adj = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    label = [-1] * n
    for start in range(n):  # ascending, so the first unlabelled item is its component's minimum
        if label[start] >= 0:
            continue
        stack = [start]
        while stack:
            x = stack.pop()
            if label[x] < 0:
                label[x] = start
                stack.extend(adj[x])
    return label


def test_connected_components_match_a_brute_force_reference():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randrange(0, 40)
        m = rng.randrange(0, 2 * n + 1) if n else 0
        edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(m)]
        got = dedup.connected_components(n, edges)
        assert got.dtype == np.int64 and got.shape == (n,)
        assert got.tolist() == _components_by_search(n, edges)
        assert dedup.connected_components(n, edges[::-1]).tolist() == got.tolist()  # edge order is irrelevant


def test_band_index_finds_what_datasketch_lsh_finds():
    """BandIndex returns MinHashLSH.query's candidates: same bands, rows sharing one band's values."""
    from datasketch import LeanMinHash, MinHashLSH

    rng = random.Random(7)
    words = [
        "order",
        "refund",
        "parcel",
        "account",
        "address",
        "invoice",
        "track",
        "cancel",
        "payment",
        "card",
        "delivery",
    ]
    texts = [" ".join(rng.choices(words, k=12)) for _ in range(60)]
    texts += [t.replace(t.split()[3], "newsletter") for t in texts[:30]]  # near copies
    sigs = dedup.signatures(texts, 128, 2)
    for threshold in (0.5, 0.8, 0.9):
        index = dedup.BandIndex(sigs, threshold)
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        assert (index.bands, index.rows_per_band) == (lsh.b, lsh.r)
        for i, sig in enumerate(sigs):
            view = LeanMinHash(seed=1, hashvalues=sig, scheme=dedup.SCHEME)
            assert index.candidates(i) == set(lsh.query(view)), (threshold, i)
            index.insert(i)
            lsh.insert(i, view)
        assert any(index.candidates(i) for i in range(60, 90))  # the copies did collide
