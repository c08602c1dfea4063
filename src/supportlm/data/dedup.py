"""Exact and near-duplicate detection that never compares all pairs.

Exact: a hash of the normalized text. Near: MinHash signatures over word shingles
(datasketch, vectorised `MinHash.bulk`) indexed by LSH banding, so each row is
checked against its few LSH candidates only and cost grows linearly with rows.
The same index builds the split stage's near-duplicate groups.

Signatures are kept as one (rows, num_perm) uint32 matrix, 4 bytes per permutation (512 bytes a
row at 128), not as a MinHash object per row (its array, its permutations reference and the Python
object): datasketch's `affine32` scheme (pinned here) stores uint32 values.

The LSH index is `BandIndex`: datasketch's band layout (its `_optimal_param` for the threshold),
buckets found with numpy over the matrix, and per band two int32 arrays (bucket -> last inserted row,
row -> the row inserted before it in its bucket). It returns the candidates `MinHashLSH.query` returns
(rows sharing a band's values exactly) at 108 bytes a row for 9 bands (three int32 per band), where `MinHashLSH` keeps a
bytes key, a set and dict entries per row and band: measured ~2.7 KB a row (210 MB at 76K rows).
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Iterable, Sequence

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from supportlm.data.text import normalize_for_match

_WORD = re.compile(r"\w+|\{\{[^}]*\}\}")


def shingles(text: str, n: int) -> set[bytes]:
    """Word n-grams of the lowercased text, punctuation dropped (so "now." == "now")."""
    words = _WORD.findall(normalize_for_match(text))
    if len(words) < n:
        return {" ".join(words).encode()} if words else {b""}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


SIGNATURE_CHUNK = 2_000  # texts hashed per MinHash.bulk call: bounds the transient MinHash objects
SCHEME = "affine32"  # datasketch's default permutation scheme, pinned: its values are uint32


def signatures(texts: Sequence[str], num_perm: int, shingle_words: int, seed: int = 1) -> np.ndarray:
    """One MinHash signature per text, as the rows of a (len(texts), num_perm) uint32 matrix.

    `bulk` hashes a chunk of texts with numpy (much faster than update()); each chunk's MinHash
    objects are dropped once copied into the matrix."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start in range(0, len(texts), SIGNATURE_CHUNK):
        chunk = texts[start : start + SIGNATURE_CHUNK]
        sets = [shingles(t, shingle_words) for t in chunk]
        for i, m in enumerate(MinHash.bulk(sets, num_perm=num_perm, seed=seed, scheme=SCHEME)):
            out[start + i] = m.hashvalues
    return out


class BandIndex:
    """LSH banding over a signature matrix: rows are candidates when all `r` values of some band are equal.

    Rows join the index one at a time (`insert`), so a search sees only the rows inserted before it,
    exactly as a `MinHashLSH` filled in row order would."""

    def __init__(self, sigs: np.ndarray, threshold: float) -> None:
        n, num_perm = sigs.shape
        self.bands, self.rows_per_band = _optimal_param(threshold, num_perm, 0.5, 0.5)
        r = self.rows_per_band
        # bucket id of each row in each band: rows with byte-equal band values share it
        self.bucket = np.empty((n, self.bands), dtype=np.int32)
        for k in range(self.bands):
            band = np.ascontiguousarray(sigs[:, k * r : (k + 1) * r]).view(f"V{4 * r}").ravel()
            self.bucket[:, k] = np.unique(band, return_inverse=True)[1].ravel()
        self._last = [array("i", [-1]) * n for _ in range(self.bands)]  # bucket -> last row inserted
        self._before = [array("i", [-1]) * n for _ in range(self.bands)]  # row -> previous row in bucket

    def candidates(self, i: int) -> set[int]:
        """The inserted rows that share at least one band with row `i`."""
        found: set[int] = set()
        for k, b in enumerate(self.bucket[i].tolist()):
            before, j = self._before[k], self._last[k][b]
            while j >= 0:
                found.add(j)
                j = before[j]
        return found

    def insert(self, i: int) -> None:
        for k, b in enumerate(self.bucket[i].tolist()):
            self._before[k][i] = self._last[k][b]
            self._last[k][b] = i


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard of two signatures: the share of equal permutation minima (as MinHash.jaccard)."""
    return np.count_nonzero(a == b) / len(a)


def _exact_digest(text: str) -> bytes:
    return hashlib.blake2b(normalize_for_match(text).encode(), digest_size=16).digest()


def exact_key(text: str) -> str:
    return _exact_digest(text).hex()


class ExactIndex:
    """Exact duplicates of rows that arrive one at a time (a stream): earlier rows win.

    Keeps a 16-byte digest per distinct text, never the texts."""

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}
        self._rows = 0

    def add(self, text: str) -> int | None:
        """Index the next row; return the index of the earlier row with the same normalized text, if any."""
        i, self._rows = self._rows, self._rows + 1
        first = self._first.setdefault(_exact_digest(text), i)
        return None if first == i else first


def find_exact_duplicates(texts: Iterable[str]) -> dict[int, int]:
    """index -> index of the first row with the same normalized text."""
    index = ExactIndex()
    return {i: first for i, t in enumerate(texts) if (first := index.add(t)) is not None}


def find_near_duplicates(
    sigs: np.ndarray, threshold: float, skip: set[int] | None = None
) -> dict[int, tuple[int, float]]:
    """index -> (index of the earlier kept row it duplicates, estimated Jaccard).

    Rows are visited in order; a row whose best LSH candidate reaches `threshold` is a
    duplicate of that candidate, otherwise it joins the index. Earlier rows win, so
    the result is deterministic for a given row order.
    """
    skip = skip or set()
    dupes: dict[int, tuple[int, float]] = {}
    if not len(sigs):
        return dupes
    index = BandIndex(sigs, threshold)
    for i, sig in enumerate(sigs):
        if i in skip:
            continue
        best, best_j = -1, 0.0
        for cand in index.candidates(i):
            j = jaccard(sig, sigs[cand])
            if j >= threshold and (j > best_j or (j == best_j and cand < best)):
                best, best_j = cand, j
        if best >= 0:
            dupes[i] = (best, best_j)
        else:
            index.insert(i)
    return dupes


def connected_components(n: int, edges: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union-find over `n` items; each item's label is the smallest index in its component.

    Smallest-index labels depend only on which items are connected, never on edge
    order, so group ids (and the split assigned from them) are stable.
    """
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root stays the component's smallest index
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def near_duplicate_edges(sigs: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, earlier row) pairs with estimated Jaccard >= threshold, found through an LSH index."""
    edges: list[tuple[int, int]] = []
    if not len(sigs):
        return edges
    index = BandIndex(sigs, threshold)
    for i, sig in enumerate(sigs):
        edges.extend((i, cand) for cand in index.candidates(i) if jaccard(sig, sigs[cand]) >= threshold)
        index.insert(i)
    return edges


def near_duplicate_groups(sigs: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the LSH 'similar >= threshold' graph; one group id per row."""
    return connected_components(len(sigs), near_duplicate_edges(sigs, threshold))
