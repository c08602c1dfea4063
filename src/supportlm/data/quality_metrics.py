"""The data-quality report's measurements: completeness, text quality, label consistency, distribution, dedup.

Each section is a pure function of the stage outputs (rows as plain dicts) that returns
a JSON-ready dict; quality.py assembles them. Everything is plain loops / numpy over
the rows: 270k raw rows take a few seconds.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
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


def ordered_splits(splits: dict[str, list[dict]]) -> list[str]:
    """Split names as train, val, test, then any others alphabetically."""
    return [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)


def completeness(rows: Sequence[Any], texts: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """Per field: missing (key/turn absent or None) and empty (blank) counts. One pass, no per-field calls."""
    n = len(rows)
    missing = [0] * len(FIELDS)
    empty = [0] * len(FIELDS)
    kinds: Counter[str] = Counter()
    for row, (u, a) in zip(rows, texts, strict=True):
        if isinstance(row, dict):
            get = row.get
            values: tuple[Any, ...] = (get("id"), get("intent"), get("category"), u, a)
            kinds[str(get("kind"))] += 1
        else:
            values = (None, None, None, u, a)
            kinds["None"] += 1
        for k, v in enumerate(values):
            if v is None:
                missing[k] += 1
            elif v.__class__ is str:
                if not v or v.isspace():
                    empty[k] += 1
            elif not str(v).strip():
                empty[k] += 1
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
    return {"rows": n, "fields": fields, "rows_by_kind": dict(sorted(kinds.items()))}


def _has_control(s: str) -> bool:
    """text._CONTROL's check, with a fast path: printable ASCII (bar \\n \\t \\r) holds none."""
    if s.isascii() and s.replace("\n", "").replace("\t", "").replace("\r", "").isprintable():
        return False
    return _CONTROL.search(s) is not None


def _maybe_pii(s: str) -> bool:
    """Every PII pattern needs an '@' or a digit; `in` scans are ~15x faster than a regex class."""
    return "@" in s or any(d in s for d in _DIGITS)


def text_profile(texts: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """Lengths, mojibake / control / markup / placeholder rates and PII hits over (user, assistant) texts."""
    n = len(texts)
    user_chars: list[int] = []
    user_words: list[int] = []
    asst_chars: list[int] = []
    asst_words: list[int] = []
    moj = ctrl = markup = placeholder = pii_rows = 0
    pii_hits: Counter[str] = Counter()
    pii_rows_by_type: Counter[str] = Counter()
    for u, a in texts:
        u = u or ""
        a = a or ""
        user_chars.append(len(u))
        user_words.append(len(u.split()))
        asst_chars.append(len(a))
        asst_words.append(len(a.split()))
        full = f"{u}\n{a}"
        if not full.isascii() and is_mojibake(full):
            moj += 1
        if _has_control(full):
            ctrl += 1
        if ("<" in full or "&" in full) and has_markup(full):
            markup += 1
        i = full.find("{{")
        if i >= 0 and PLACEHOLDER.search(full, i):
            placeholder += 1
        if _maybe_pii(full):
            found = find_pii(full)
            any_hit = False
            for k, v in found.items():
                if v:
                    pii_hits[k] += v
                    pii_rows_by_type[k] += 1
                    any_hit = True
            pii_rows += any_hit
    lengths = {
        "user_chars": np.array(user_chars, dtype=np.int64),
        "user_words": np.array(user_words, dtype=np.int64),
        "asst_chars": np.array(asst_chars, dtype=np.int64),
        "asst_words": np.array(asst_words, dtype=np.int64),
    }
    return {
        "rows": n,
        "user": {"chars": _stats(lengths["user_chars"]), "words": _stats(lengths["user_words"])},
        "assistant": {"chars": _stats(lengths["asst_chars"]), "words": _stats(lengths["asst_words"])},
        "mojibake_rows": moj,
        "mojibake_rate": rate(moj, n),
        "control_char_rows": ctrl,
        "control_char_rate": rate(ctrl, n),
        "markup_rows": markup,
        "markup_rate": rate(markup, n),
        "placeholder_rows": placeholder,
        "placeholder_rate": rate(placeholder, n),
        "pii_hits": {k: int(pii_hits.get(k, 0)) for k in PII_TYPES},
        "pii_rows": {k: int(pii_rows_by_type.get(k, 0)) for k in PII_TYPES},
        "pii_row_rate": rate(pii_rows, n),
        "_words": (lengths["user_words"], lengths["asst_words"]),  # for the plot; popped before JSON
    }


def label_consistency(
    kept: Sequence[dict],
    quarantine: Sequence[dict],
    label_issues: Sequence[dict],
    clean_report: dict,
    params: QualityParams,
) -> dict[str, Any]:
    """The clean stage's label check: summary, issues per intent, top confusions, quality histogram."""
    labels = clean_report.get("labels") or {}
    summary = {
        "enabled": bool(labels.get("enabled", bool(label_issues))),
        "action": labels.get("action"),
        "issues": int(labels.get("issues", len(label_issues))),
        "oof_accuracy": json_float(labels.get("oof_accuracy")),
        "mean_label_quality": json_float(labels.get("mean_label_quality")),
    }
    issue_ids = {li["id"] for li in label_issues}
    # rows the label check examined, by the intent they were given
    examined: Counter[str] = Counter()
    ok_quality: list[float] = []
    for row in kept:
        meta = row_meta(row)
        if "label_quality" not in meta:
            continue
        examined[str(meta.get("original_intent", row.get("intent")))] += 1
        if row.get("id") not in issue_ids and meta["label_quality"] is not None:
            ok_quality.append(float(meta["label_quality"]))
    for q in quarantine:
        if q.get("reason") == "label_issue" and isinstance(q.get("record"), dict):
            examined[str(q["record"].get("intent"))] += 1
    issues_by_intent = Counter(str(li.get("given_intent")) for li in label_issues)
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
    pairs = Counter((str(li.get("given_intent")), str(li.get("predicted_intent"))) for li in label_issues)
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[: params.top_confusions]
    confusions = [{"given": g, "predicted": p, "count": c} for (g, p), c in ranked]
    if not confusions and labels.get("confused_pairs"):
        confusions = list(labels["confused_pairs"])[: params.top_confusions]
    issue_quality = [float(li["label_quality"]) for li in label_issues if li.get("label_quality") is not None]
    edges = np.linspace(0.0, 1.0, LABEL_QUALITY_BINS + 1)
    hist_ok = (
        np.histogram(np.clip(ok_quality, 0, 1), bins=edges)[0] if ok_quality else np.zeros(len(edges) - 1)
    )
    hist_issue = (
        np.histogram(np.clip(issue_quality, 0, 1), bins=edges)[0]
        if issue_quality
        else np.zeros(len(edges) - 1)
    )
    all_q = ok_quality + issue_quality
    return {
        "summary": summary,
        "issues_per_intent": per_intent,
        "top_confusions": confusions,
        "label_quality_histogram": {
            "bin_edges": [json_float(e) for e in edges],
            "not_flagged": [int(x) for x in hist_ok],
            "flagged": [int(x) for x in hist_issue],
            "rows": len(all_q),
            "mean": json_float(np.mean(all_q)) if all_q else None,
            "p05": json_float(np.percentile(all_q, 5)) if all_q else None,
        },
        "_quality": (ok_quality, issue_quality),
    }


def _length_of(row: dict) -> int:
    n = row_meta(row).get("n_tokens")
    if isinstance(n, int | float):
        return int(n)
    u, a = row_texts(row)
    return len(f"{u or ''}\n{a or ''}".split())


def distribution(
    kept: Sequence[dict], splits: dict[str, list[dict]], params: QualityParams
) -> dict[str, Any]:
    """Intents and categories per split, mean length per intent, and drift of each split vs train."""
    names = ordered_splits(splits)
    all_intents = sorted({str(r.get("intent")) for s in names for r in splits[s]})
    per_split: dict[str, Any] = {}
    for s in names:
        rows = splits[s]
        n = len(rows)
        ic = Counter(str(r.get("intent")) for r in rows)
        cc = Counter(str(r.get("category")) for r in rows)
        per_split[s] = {
            "rows": n,
            "intents": {k: {"count": v, "share": rate(v, n)} for k, v in sorted(ic.items())},
            "categories": {k: {"count": v, "share": rate(v, n)} for k, v in sorted(cc.items())},
            "n_intents": len(ic),
            "missing_intents": [i for i in all_intents if i not in ic],
            "imbalance_ratio": json_float(max(ic.values()) / min(ic.values())) if ic else None,
        }
    # mean tokens per intent over the data the model sees (split rows; kept if there are no splits)
    pool = [r for s in names for r in splits[s]] or list(kept)
    tok_sum: defaultdict[str, float] = defaultdict(float)
    tok_n: Counter[str] = Counter()
    measure = "n_tokens" if pool and all("n_tokens" in row_meta(r) for r in pool) else "words"
    lengths_by_split = {s: np.array([_length_of(r) for r in splits[s]], dtype=np.float64) for s in names}
    if any(splits[s] for s in names):
        pool_lengths = np.concatenate([lengths_by_split[s] for s in names])
    else:
        pool_lengths = np.array([_length_of(r) for r in pool], dtype=np.float64)
    for r, length in zip(pool, pool_lengths.tolist(), strict=True):
        intent = str(r.get("intent"))
        tok_sum[intent] += length
        tok_n[intent] += 1
    tokens_per_intent = {
        k: {"rows": tok_n[k], "mean": json_float(tok_sum[k] / tok_n[k])} for k in sorted(tok_n)
    }

    # drift: intent distribution and binned length distribution vs train
    pooled = np.concatenate(list(lengths_by_split.values())) if lengths_by_split else np.array([])
    if pooled.size:
        edges = np.unique(np.quantile(pooled, np.linspace(0, 1, LENGTH_BINS + 1)))
        if edges.size < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    else:
        edges = np.array([0.0, 1.0])
    drift: dict[str, Any] = {"threshold": params.drift_alert, "length_measure": measure, "pairs": {}}
    if "train" in splits:
        train_int = Counter(str(r.get("intent")) for r in splits["train"])
        train_len = np.histogram(lengths_by_split["train"], bins=edges)[0]
        for other in names:
            if other == "train":
                continue
            other_int = Counter(str(r.get("intent")) for r in splits[other])
            other_len = np.histogram(lengths_by_split[other], bins=edges)[0]
            d_int = js_distance(train_int, other_int)
            d_len = js_distance(train_len, other_len)
            drift["pairs"][f"train_vs_{other}"] = {
                "intent": {"distance": d_int, "alert": d_int is not None and d_int > params.drift_alert},
                "length": {"distance": d_len, "alert": d_len is not None and d_len > params.drift_alert},
            }
    return {
        "splits": per_split,
        "tokens_per_intent": tokens_per_intent,
        "token_measure": measure,
        "drift": drift,
    }


def dedup(
    raw: Sequence[dict], splits: dict[str, list[dict]], clean_report: dict, split_report: dict
) -> dict[str, Any]:
    """Duplicates removed by the clean stage and near-duplicate groups leaking across splits."""
    by_reason = clean_report.get("by_reason") or {}
    exact = int(by_reason.get("exact_duplicate", 0))
    near = int(by_reason.get("near_duplicate", 0))
    first_split: dict[Any, str] = {}
    spanning: set[Any] = set()
    sizes: Counter[Any] = Counter()
    for s in ordered_splits(splits):
        gids = [g for g in (row_meta(r).get("group_id") for r in splits[s]) if g is not None]
        sizes.update(gids)
        for g in set(gids):
            if first_split.setdefault(g, s) != s:
                spanning.add(g)
    return {
        "exact_duplicates_removed": exact,
        "near_duplicates_removed": near,
        "duplicate_rate_raw": rate(exact + near, len(raw)),
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
        "group_ids_spanning_splits": len(spanning),
    }
