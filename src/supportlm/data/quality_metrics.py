"""The data-quality report's measurements: completeness, text quality, label consistency, distribution, dedup.

The stage outputs are too big to hold as rows (about 1 GB per 100k rows as dicts), so each section is an
accumulator: quality.py streams every file once and hands each row to the accumulators that need it
(`add*`); they keep counters and one or a few numbers per row (array.array), never the rows, and
`section()` returns the JSON-ready dict.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from supportlm.data.text import _CONTROL, find_pii, has_markup, is_mojibake

if TYPE_CHECKING:
    from supportlm.config import QualityParams

SPLIT_ORDER = ("train", "val", "test")
FIELDS = ("id", "intent", "category", "user_text", "assistant_text")
PII_TYPES = ("email", "phone", "card")
PLACEHOLDER = re.compile(r"\{\{[^{}\n]+\}\}")
_DIGITS = "0123456789"
LABEL_QUALITY_BINS = 10
LENGTH_BINS = 20


def json_float(x: Any, nd: int = 4) -> float | None:
    """Round to plain float; None/NaN/inf -> None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return None
    return round(x, nd)


def rate(num: int, den: int) -> float:
    """num / den rounded to 4 places; 0.0 when den is 0."""
    return round(num / den, 4) if den else 0.0


def row_texts(row: Any) -> tuple[str | None, str | None]:
    """(user text, assistant text) of a Record dict; None where the row has no such turn."""
    if not isinstance(row, dict):
        return None, None
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None, None
    users: list[str] = []
    assistants: list[str] = []
    for m in msgs:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        c = c if isinstance(c, str) else ("" if c is None else str(c))
        role = m.get("role")
        if role == "user":
            users.append(c)
        elif role == "assistant":
            assistants.append(c)
    return ("\n".join(users) if users else None), ("\n".join(assistants) if assistants else None)


def row_meta(row: Any) -> dict[str, Any]:
    """A Record dict's meta, or {} where it has none."""
    meta = row.get("meta") if isinstance(row, dict) else None
    return meta if isinstance(meta, dict) else {}


def _stats(values: Sequence[int] | np.ndarray) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(arr, [50, 95])
    return {
        "mean": json_float(arr.mean()),
        "p50": json_float(p50),
        "p95": json_float(p95),
        "max": int(arr.max()),
    }


def js_distance(p: dict[Any, float] | Sequence[float], q: dict[Any, float] | Sequence[float]) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count/probability vectors or dicts.

    Dicts are aligned on the union of their keys. None when either side is all zeros.
    """
    from scipy.spatial.distance import jensenshannon

    if isinstance(p, dict) or isinstance(q, dict):
        pd, qd = dict(p), dict(q)  # type: ignore[arg-type]
        keys = sorted(set(pd) | set(qd), key=str)
        pv = np.array([float(pd.get(k, 0.0)) for k in keys])
        qv = np.array([float(qd.get(k, 0.0)) for k in keys])
    else:
        pv, qv = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if pv.size == 0 or pv.sum() <= 0 or qv.sum() <= 0:
        return None
    pv, qv = pv / pv.sum(), qv / qv.sum()
    d = float(jensenshannon(pv, qv, base=2))
    if math.isnan(d):  # sqrt of a tiny negative rounding error for (near-)identical inputs
        d = 0.0
    return round(min(max(d, 0.0), 1.0), 4)


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """Split names as train, val, test, then any others alphabetically."""
    names = set(splits)
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


class ReasonCounts:
    """Rows and rows per `reason` of a rejected/quarantine file."""

    def __init__(self) -> None:
        self.rows = 0
        self.reasons: Counter[str] = Counter()

    def add(self, row: dict) -> None:
        self.rows += 1
        self.reasons[str(row.get("reason"))] += 1

    def by_reason(self) -> dict[str, int]:
        return dict(sorted(self.reasons.items()))


class ChangeCodes:
    """The clean stage's change log: rows per change code and how many distinct rows changed."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.ids: set[Any] = set()

    def add(self, change: dict) -> None:
        self.codes.update(str(c) for c in change.get("codes") or [])
        self.ids.add(change.get("id"))

    def by_code(self) -> dict[str, int]:
        return dict(sorted(self.codes.items()))


class Completeness:
    """Per field: missing (key/turn absent or None) and empty (blank) counts; rows per kind."""

    def __init__(self) -> None:
        self.rows = 0
        self.missing = [0] * len(FIELDS)
        self.empty = [0] * len(FIELDS)
        self.kinds: Counter[str] = Counter()

    def add(self, row: Any, texts: tuple[str | None, str | None]) -> None:
        u, a = texts
        self.rows += 1
        if isinstance(row, dict):
            get = row.get
            values: tuple[Any, ...] = (get("id"), get("intent"), get("category"), u, a)
            self.kinds[str(get("kind"))] += 1
        else:
            values = (None, None, None, u, a)
            self.kinds["None"] += 1
        for k, v in enumerate(values):
            if v is None:
                self.missing[k] += 1
            elif v.__class__ is str:
                if not v or v.isspace():
                    self.empty[k] += 1
            elif not str(v).strip():
                self.empty[k] += 1

    def section(self) -> dict[str, Any]:
        n, missing, empty = self.rows, self.missing, self.empty
        fields = {
            f: {
                "missing": missing[k],
                "empty": empty[k],
                "missing_rate": rate(missing[k], n),
                "empty_rate": rate(empty[k], n),
                "incomplete_rate": rate(missing[k] + empty[k], n),
            }
            for k, f in enumerate(FIELDS)
        }
        return {"rows": n, "fields": fields, "rows_by_kind": dict(sorted(self.kinds.items()))}


def _has_control(s: str) -> bool:
    """text._CONTROL's check, with a fast path: printable ASCII (bar \\n \\t \\r) holds none."""
    if s.isascii() and s.replace("\n", "").replace("\t", "").replace("\r", "").isprintable():
        return False
    return _CONTROL.search(s) is not None


def _maybe_pii(s: str) -> bool:
    """Every PII pattern needs an '@' or a digit; `in` scans are ~15x faster than a regex class."""
    return "@" in s or any(d in s for d in _DIGITS)


class TextProfile:
    """Lengths, mojibake / control / markup / placeholder rates and PII hits over (user, assistant) texts.

    Keeps four int64 lengths per row (for the percentiles and the length plot), not the texts."""

    def __init__(self) -> None:
        self.rows = 0
        self.user_chars, self.user_words = array("q"), array("q")
        self.asst_chars, self.asst_words = array("q"), array("q")
        self.moj = self.ctrl = self.markup = self.placeholder = self.pii_rows = 0
        self.pii_hits: Counter[str] = Counter()
        self.pii_rows_by_type: Counter[str] = Counter()

    def add(self, texts: tuple[str | None, str | None]) -> None:
        u, a = texts
        u = u or ""
        a = a or ""
        self.rows += 1
        self.user_chars.append(len(u))
        self.user_words.append(len(u.split()))
        self.asst_chars.append(len(a))
        self.asst_words.append(len(a.split()))
        full = f"{u}\n{a}"
        if not full.isascii() and is_mojibake(full):
            self.moj += 1
        if _has_control(full):
            self.ctrl += 1
        if ("<" in full or "&" in full) and has_markup(full):
            self.markup += 1
        i = full.find("{{")
        if i >= 0 and PLACEHOLDER.search(full, i):
            self.placeholder += 1
        if _maybe_pii(full):
            any_hit = False
            for k, v in find_pii(full).items():
                if v:
                    self.pii_hits[k] += v
                    self.pii_rows_by_type[k] += 1
                    any_hit = True
            self.pii_rows += any_hit

    def words(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, assistant) words per row, for the length plot."""
        return np.array(self.user_words, dtype=np.int64), np.array(self.asst_words, dtype=np.int64)

    def section(self) -> dict[str, Any]:
        n = self.rows
        return {
            "rows": n,
            "user": {"chars": _stats(self.user_chars), "words": _stats(self.user_words)},
            "assistant": {"chars": _stats(self.asst_chars), "words": _stats(self.asst_words)},
            "mojibake_rows": self.moj,
            "mojibake_rate": rate(self.moj, n),
            "control_char_rows": self.ctrl,
            "control_char_rate": rate(self.ctrl, n),
            "markup_rows": self.markup,
            "markup_rate": rate(self.markup, n),
            "placeholder_rows": self.placeholder,
            "placeholder_rate": rate(self.placeholder, n),
            "pii_hits": {k: int(self.pii_hits.get(k, 0)) for k in PII_TYPES},
            "pii_rows": {k: int(self.pii_rows_by_type.get(k, 0)) for k in PII_TYPES},
            "pii_row_rate": rate(self.pii_rows, n),
        }


class RowsProfile:
    """Completeness and text profile of one stage's rows: each row's texts are extracted once for both."""

    def __init__(self) -> None:
        self.completeness = Completeness()
        self.text = TextProfile()

    def add(self, row: Any) -> None:
        texts = row_texts(row)
        self.completeness.add(row, texts)
        self.text.add(texts)


class LabelCheck:
    """The clean stage's label check: summary, issues per intent, top confusions, quality histogram.

    Feed the label issues before the kept rows: a kept row's score counts as "not flagged" only when
    its id is not among the issues."""

    def __init__(self) -> None:
        self.issues = 0
        self.issue_ids: set[Any] = set()
        self.issues_by_intent: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.issue_quality = array("d")
        self.examined: Counter[str] = Counter()  # rows the check examined, by the intent they were given
        self.ok_quality = array("d")

    def add_issue(self, issue: dict) -> None:
        self.issues += 1
        self.issue_ids.add(issue["id"])
        given = str(issue.get("given_intent"))
        self.issues_by_intent[given] += 1
        self.pairs[(given, str(issue.get("predicted_intent")))] += 1
        if issue.get("label_quality") is not None:
            self.issue_quality.append(float(issue["label_quality"]))

    def add_kept(self, row: dict) -> None:
        meta = row_meta(row)
        if "label_quality" not in meta:
            return
        self.examined[str(meta.get("original_intent", row.get("intent")))] += 1
        if row.get("id") not in self.issue_ids and meta["label_quality"] is not None:
            self.ok_quality.append(float(meta["label_quality"]))

    def add_quarantined(self, q: dict) -> None:
        if q.get("reason") == "label_issue" and isinstance(q.get("record"), dict):
            self.examined[str(q["record"].get("intent"))] += 1

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(not flagged, flagged) label-quality scores, for the plot."""
        return np.array(self.ok_quality, dtype=np.float64), np.array(self.issue_quality, dtype=np.float64)

    def section(self, clean_report: dict, params: QualityParams) -> dict[str, Any]:
        labels = clean_report.get("labels") or {}
        summary = {
            "enabled": bool(labels.get("enabled", bool(self.issues))),
            "action": labels.get("action"),
            "issues": int(labels.get("issues", self.issues)),
            "oof_accuracy": json_float(labels.get("oof_accuracy")),
            "mean_label_quality": json_float(labels.get("mean_label_quality")),
        }
        examined = Counter(self.examined)
        issues_by_intent = self.issues_by_intent
        for intent in issues_by_intent:  # a row flagged but absent from kept/quarantine still counts
            examined[intent] = max(examined[intent], issues_by_intent[intent])
        per_intent = {
            intent: {
                "rows": examined[intent],
                "issues": issues_by_intent.get(intent, 0),
                "rate": rate(issues_by_intent.get(intent, 0), examined[intent]),
            }
            for intent in sorted(examined)
        }
        ranked = sorted(self.pairs.items(), key=lambda kv: (-kv[1], kv[0]))[: params.top_confusions]
        confusions = [{"given": g, "predicted": p, "count": c} for (g, p), c in ranked]
        if not confusions and labels.get("confused_pairs"):
            confusions = list(labels["confused_pairs"])[: params.top_confusions]
        ok_quality, issue_quality = self.scores()
        edges = np.linspace(0.0, 1.0, LABEL_QUALITY_BINS + 1)
        hist_ok, hist_issue = (
            np.histogram(np.clip(q, 0, 1), bins=edges)[0] if q.size else np.zeros(len(edges) - 1)
            for q in (ok_quality, issue_quality)
        )
        all_q = np.concatenate([ok_quality, issue_quality])
        return {
            "summary": summary,
            "issues_per_intent": per_intent,
            "top_confusions": confusions,
            "label_quality_histogram": {
                "bin_edges": [json_float(e) for e in edges],
                "not_flagged": [int(x) for x in hist_ok],
                "flagged": [int(x) for x in hist_issue],
                "rows": len(all_q),
                "mean": json_float(np.mean(all_q)) if all_q.size else None,
                "p05": json_float(np.percentile(all_q, 5)) if all_q.size else None,
            },
        }


def _length_of(row: dict) -> int:
    n = row_meta(row).get("n_tokens")
    if isinstance(n, int | float):
        return int(n)
    u, a = row_texts(row)
    return len(f"{u or ''}\n{a or ''}".split())


class Distribution:
    """Intents and categories per split, mean length per intent, and drift of each split vs train.

    Keeps one float (the length) per split row. Mean length per intent is over the data the model
    sees: the split rows, or the kept rows when the splits hold none; so feed the splits first."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.intents: dict[str, Counter[str]] = {s: Counter() for s in names}
        self.categories: dict[str, Counter[str]] = {s: Counter() for s in names}
        self.lengths: dict[str, array[float]] = {s: array("d") for s in names}
        self.split_rows = 0
        self.tok_sum: defaultdict[str, float] = defaultdict(float)
        self.tok_n: Counter[str] = Counter()
        self.pool_rows = self.pool_with_n_tokens = 0

    def add(self, split: str, row: dict) -> None:
        intent = str(row.get("intent"))
        self.intents[split][intent] += 1
        self.categories[split][str(row.get("category"))] += 1
        length = float(_length_of(row))
        self.lengths[split].append(length)
        self.split_rows += 1
        self._pool(row, intent, length)

    def add_kept(self, row: dict) -> None:
        if not self.split_rows:
            self._pool(row, str(row.get("intent")), float(_length_of(row)))

    def _pool(self, row: dict, intent: str, length: float) -> None:
        self.tok_sum[intent] += length
        self.tok_n[intent] += 1
        self.pool_rows += 1
        self.pool_with_n_tokens += "n_tokens" in row_meta(row)

    def rows(self, split: str) -> int:
        return sum(self.intents[split].values())

    def section(self, params: QualityParams) -> dict[str, Any]:
        names = self.names
        all_intents = sorted({i for s in names for i in self.intents[s]})
        per_split: dict[str, Any] = {}
        for s in names:
            n, ic, cc = self.rows(s), self.intents[s], self.categories[s]
            per_split[s] = {
                "rows": n,
                "intents": {k: {"count": v, "share": rate(v, n)} for k, v in sorted(ic.items())},
                "categories": {k: {"count": v, "share": rate(v, n)} for k, v in sorted(cc.items())},
                "n_intents": len(ic),
                "missing_intents": [i for i in all_intents if i not in ic],
                "imbalance_ratio": json_float(max(ic.values()) / min(ic.values())) if ic else None,
            }
        tok_n = self.tok_n
        tokens_per_intent = {
            k: {"rows": tok_n[k], "mean": json_float(self.tok_sum[k] / tok_n[k])} for k in sorted(tok_n)
        }
        use_n_tokens = self.pool_rows and self.pool_with_n_tokens == self.pool_rows
        measure = "n_tokens" if use_n_tokens else "words"
        return {
            "splits": per_split,
            "tokens_per_intent": tokens_per_intent,
            "token_measure": measure,
            "drift": self._drift(params.drift_alert, measure),
        }

    def _drift(self, threshold: float, measure: str) -> dict[str, Any]:
        """Intent distribution and binned length distribution (shared quantile bins) vs train."""
        lengths = {s: np.array(v, dtype=np.float64) for s, v in self.lengths.items()}
        pooled = np.concatenate(list(lengths.values())) if lengths else np.array([])
        if pooled.size:
            edges = np.unique(np.quantile(pooled, np.linspace(0, 1, LENGTH_BINS + 1)))
            if edges.size < 2:
                edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        else:
            edges = np.array([0.0, 1.0])
        drift: dict[str, Any] = {"threshold": threshold, "length_measure": measure, "pairs": {}}
        if "train" in lengths:
            train_len = np.histogram(lengths["train"], bins=edges)[0]
            for other in lengths:
                if other == "train":
                    continue
                other_len = np.histogram(lengths[other], bins=edges)[0]
                d_int = js_distance(self.intents["train"], self.intents[other])
                d_len = js_distance(train_len, other_len)
                drift["pairs"][f"train_vs_{other}"] = {
                    "intent": {"distance": d_int, "alert": d_int is not None and d_int > threshold},
                    "length": {"distance": d_len, "alert": d_len is not None and d_len > threshold},
                }
        return drift


class SplitGroups:
    """meta.group_id of the split rows: group sizes and the groups found in more than one split."""

    def __init__(self) -> None:
        self.sizes: Counter[Any] = Counter()
        self.first_split: dict[Any, str] = {}
        self.spanning: set[Any] = set()

    def add(self, split: str, row: dict) -> None:
        g = row_meta(row).get("group_id")
        if g is None:
            return
        self.sizes[g] += 1
        if self.first_split.setdefault(g, split) != split:
            self.spanning.add(g)


def dedup(raw_rows: int, groups: SplitGroups, clean_report: dict, split_report: dict) -> dict[str, Any]:
    """Duplicates removed by the clean stage and near-duplicate groups leaking across splits."""
    by_reason = clean_report.get("by_reason") or {}
    exact = int(by_reason.get("exact_duplicate", 0))
    near = int(by_reason.get("near_duplicate", 0))
    sizes = groups.sizes
    return {
        "exact_duplicates_removed": exact,
        "near_duplicates_removed": near,
        "duplicate_rate_raw": rate(exact + near, raw_rows),
        "leaked_groups": int(split_report.get("leaked_groups", 0) or 0),
        "cross_split_exact_duplicates": int(split_report.get("cross_split_exact_duplicates", 0) or 0),
        "conversations_crossing": int(split_report.get("conversations_crossing", 0) or 0),
        "groups": split_report.get("groups", len(sizes) if sizes else None),
        "largest_group": split_report.get("largest_group", max(sizes.values()) if sizes else None),
        "rows_in_multi_row_groups": split_report.get(
            "rows_in_multi_row_groups", sum(v for v in sizes.values() if v > 1) if sizes else None
        ),
        # cross-check from the split rows' own meta.group_id
        "group_ids_in_splits": len(sizes),
        "group_ids_spanning_splits": len(groups.spanning),
    }
