"""The data-quality report: what the raw data looked like, what cleaning did, what the splits hold.

`build_quality_report()` reads the outputs of ingest, clean and split (all in memory)
and writes `data_quality.json` (the contract: eight top-level keys), a readable
`data_quality.md` and a self-contained `data_quality.html` (plots embedded as base64,
no external resources), plus PNG plots under `plots/quality/`.

Both the Markdown and the HTML are rendered from one list of blocks, so they always
say the same thing. Everything is plain loops / numpy over the rows: 270k raw rows
take a few seconds.
"""

from __future__ import annotations

import base64
import gc
import html
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
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
RECALL_WARN = 0.8
IMBALANCE_WARN = 10.0
EXAMPLES_PER_REASON = 2
EXAMPLE_CHARS = 120

# defect type -> ("quarantine", reason) | ("change", code) | ("label_issue", None)
DEFECT_SIGNALS: dict[str, tuple[str, str | None]] = {
    "exact_duplicate": ("quarantine", "exact_duplicate"),
    "near_duplicate": ("quarantine", "near_duplicate"),
    "pii_email": ("change", "pii_masked:email"),
    "pii_phone": ("change", "pii_masked:phone"),
    "pii_card": ("change", "pii_masked:card"),
    "markup": ("change", "markup_stripped"),
    "mojibake": ("change", "unicode_repaired"),
    "empty_field": ("quarantine", "empty_field"),
    "too_long": ("quarantine", "too_long"),
    "label_flip": ("label_issue", None),
}

PLOTS_SUBDIR = "plots/quality"  # one dir per stage: a DVC out of its own
PLOT_FILES = {
    "intents": "quality_intents_per_split.png",
    "lengths": "quality_lengths.png",
    "reasons": "quality_quarantine_reasons.png",
    "label_quality": "quality_label_quality.png",
    "defects": "quality_defect_detection.png",
}


# ================================================================ small helpers


def _r(x: Any, nd: int = 4) -> float | None:
    """Round to plain float; None/NaN/inf -> None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return None
    return round(x, nd)


def _rate(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def _texts(row: Any) -> tuple[str | None, str | None]:
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


def _meta(row: Any) -> dict[str, Any]:
    meta = row.get("meta") if isinstance(row, dict) else None
    return meta if isinstance(meta, dict) else {}


def _stats(values: Sequence[int] | np.ndarray) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(arr, [50, 95])
    return {"mean": _r(arr.mean()), "p50": _r(p50), "p95": _r(p95), "max": int(arr.max())}


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


def _ordered_splits(splits: dict[str, list[dict]]) -> list[str]:
    return [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)


# ================================================================ sections


def _completeness_of(rows: Sequence[Any], texts: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
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
            "missing_rate": _rate(missing[k], n),
            "empty_rate": _rate(empty[k], n),
            "incomplete_rate": _rate(missing[k] + empty[k], n),
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


def _text_profile(texts: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
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
        "mojibake_rate": _rate(moj, n),
        "control_char_rows": ctrl,
        "control_char_rate": _rate(ctrl, n),
        "markup_rows": markup,
        "markup_rate": _rate(markup, n),
        "placeholder_rows": placeholder,
        "placeholder_rate": _rate(placeholder, n),
        "pii_hits": {k: int(pii_hits.get(k, 0)) for k in PII_TYPES},
        "pii_rows": {k: int(pii_rows_by_type.get(k, 0)) for k in PII_TYPES},
        "pii_row_rate": _rate(pii_rows, n),
        "_words": (lengths["user_words"], lengths["asst_words"]),  # for the plot; popped before JSON
    }


def _label_consistency(
    kept: Sequence[dict],
    quarantine: Sequence[dict],
    label_issues: Sequence[dict],
    clean_report: dict,
    params: QualityParams,
) -> dict[str, Any]:
    labels = clean_report.get("labels") or {}
    summary = {
        "enabled": bool(labels.get("enabled", bool(label_issues))),
        "action": labels.get("action"),
        "issues": int(labels.get("issues", len(label_issues))),
        "oof_accuracy": _r(labels.get("oof_accuracy")),
        "mean_label_quality": _r(labels.get("mean_label_quality")),
    }
    issue_ids = {li["id"] for li in label_issues}
    # rows the label check examined, by the intent they were given
    examined: Counter[str] = Counter()
    ok_quality: list[float] = []
    for row in kept:
        meta = _meta(row)
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
            "rate": _rate(issues_by_intent.get(intent, 0), examined[intent]),
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
            "bin_edges": [_r(e) for e in edges],
            "not_flagged": [int(x) for x in hist_ok],
            "flagged": [int(x) for x in hist_issue],
            "rows": len(all_q),
            "mean": _r(np.mean(all_q)) if all_q else None,
            "p05": _r(np.percentile(all_q, 5)) if all_q else None,
        },
        "_quality": (ok_quality, issue_quality),
    }


def _length_of(row: dict) -> int:
    n = _meta(row).get("n_tokens")
    if isinstance(n, int | float):
        return int(n)
    u, a = _texts(row)
    return len(f"{u or ''}\n{a or ''}".split())


def _distribution(
    kept: Sequence[dict], splits: dict[str, list[dict]], params: QualityParams
) -> dict[str, Any]:
    names = _ordered_splits(splits)
    all_intents = sorted({str(r.get("intent")) for s in names for r in splits[s]})
    per_split: dict[str, Any] = {}
    for s in names:
        rows = splits[s]
        n = len(rows)
        ic = Counter(str(r.get("intent")) for r in rows)
        cc = Counter(str(r.get("category")) for r in rows)
        per_split[s] = {
            "rows": n,
            "intents": {k: {"count": v, "share": _rate(v, n)} for k, v in sorted(ic.items())},
            "categories": {k: {"count": v, "share": _rate(v, n)} for k, v in sorted(cc.items())},
            "n_intents": len(ic),
            "missing_intents": [i for i in all_intents if i not in ic],
            "imbalance_ratio": _r(max(ic.values()) / min(ic.values())) if ic else None,
        }
    # mean tokens per intent over the data the model sees (split rows; kept if there are no splits)
    pool = [r for s in names for r in splits[s]] or list(kept)
    tok_sum: defaultdict[str, float] = defaultdict(float)
    tok_n: Counter[str] = Counter()
    measure = "n_tokens" if pool and all("n_tokens" in _meta(r) for r in pool) else "words"
    lengths_by_split = {s: np.array([_length_of(r) for r in splits[s]], dtype=np.float64) for s in names}
    if any(splits[s] for s in names):
        pool_lengths = np.concatenate([lengths_by_split[s] for s in names])
    else:
        pool_lengths = np.array([_length_of(r) for r in pool], dtype=np.float64)
    for r, length in zip(pool, pool_lengths.tolist(), strict=True):
        intent = str(r.get("intent"))
        tok_sum[intent] += length
        tok_n[intent] += 1
    tokens_per_intent = {k: {"rows": tok_n[k], "mean": _r(tok_sum[k] / tok_n[k])} for k in sorted(tok_n)}

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


def _dedup(
    raw: Sequence[dict], splits: dict[str, list[dict]], clean_report: dict, split_report: dict
) -> dict[str, Any]:
    by_reason = clean_report.get("by_reason") or {}
    exact = int(by_reason.get("exact_duplicate", 0))
    near = int(by_reason.get("near_duplicate", 0))
    first_split: dict[Any, str] = {}
    spanning: set[Any] = set()
    sizes: Counter[Any] = Counter()
    for s in _ordered_splits(splits):
        gids = [g for g in (_meta(r).get("group_id") for r in splits[s]) if g is not None]
        sizes.update(gids)
        for g in set(gids):
            if first_split.setdefault(g, s) != s:
                spanning.add(g)
    return {
        "exact_duplicates_removed": exact,
        "near_duplicates_removed": near,
        "duplicate_rate_raw": _rate(exact + near, len(raw)),
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


def _defect_detection(
    defects: Sequence[dict],
    quarantine: Sequence[dict],
    changes: Sequence[dict],
    label_issues: Sequence[dict],
) -> dict[str, Any]:
    truth: defaultdict[str, set[str]] = defaultdict(set)
    true_intent: dict[str, str] = {}
    for d in defects:
        for t in d.get("defects") or []:
            truth[str(t)].add(str(d["id"]))
        if d.get("true_intent") is not None:
            true_intent[str(d["id"])] = str(d["true_intent"])
    by_reason: defaultdict[str, set[str]] = defaultdict(set)
    quarantined_reason: dict[str, str] = {}
    for q in quarantine:
        by_reason[str(q.get("reason"))].add(str(q.get("id")))
        quarantined_reason.setdefault(str(q.get("id")), str(q.get("reason")))
    by_code: defaultdict[str, set[str]] = defaultdict(set)
    for ch in changes:
        for c in ch.get("codes") or []:
            by_code[str(c)].add(str(ch.get("id")))
    flagged = {str(li["id"]) for li in label_issues}
    predicted = {str(li["id"]): str(li.get("predicted_intent")) for li in label_issues}

    def signal(kind: str, key: str | None) -> set[str]:
        if kind == "quarantine":
            return by_reason.get(key or "", set())
        if kind == "change":
            return by_code.get(key or "", set())
        return flagged

    types = sorted(set(truth) | {t for t, (k, key) in DEFECT_SIGNALS.items() if signal(k, key)})
    per_type: dict[str, Any] = {}
    for t in types:
        support_ids = truth.get(t, set())
        if t in DEFECT_SIGNALS:
            kind, key = DEFECT_SIGNALS[t]
            detected_ids = signal(kind, key)
            sig_name = f"{kind}:{key}" if key else "label_issues"
        else:
            detected_ids, sig_name = set(), None
        tp_ids = support_ids & detected_ids
        missed = support_ids - detected_ids
        # false negatives that never reached this check: quarantined for another reason first
        kind_key = DEFECT_SIGNALS.get(t)
        own_reason = kind_key[1] if kind_key and kind_key[0] == "quarantine" else None
        blocked = sum(1 for i in missed if i in quarantined_reason and quarantined_reason[i] != own_reason)
        entry = {
            "signal": sig_name,
            "support": len(support_ids),
            "detected": len(detected_ids),
            "true_positives": len(tp_ids),
            "precision": _r(len(tp_ids) / len(detected_ids)) if detected_ids else None,
            "recall": _r(len(tp_ids) / len(support_ids)) if support_ids else None,
            "missed_quarantined_earlier": blocked,
        }
        if t == "label_flip" and tp_ids:
            fixed = sum(1 for i in tp_ids if i in true_intent and predicted.get(i) == true_intent[i])
            entry["predicted_is_true_intent"] = fixed
            entry["predicted_is_true_intent_rate"] = _rate(fixed, len(tp_ids))
        per_type[t] = entry
    precisions = [e["precision"] for e in per_type.values() if e["precision"] is not None and e["support"]]
    recalls = [e["recall"] for e in per_type.values() if e["recall"] is not None]
    return {
        "rows_with_defects": sum(1 for d in defects if d.get("defects")),
        "per_type": per_type,
        "macro": {
            "precision": _r(np.mean(precisions)) if precisions else None,
            "recall": _r(np.mean(recalls)) if recalls else None,
            "types": len(recalls),
        },
        "note": (
            "Each row ends in one place, and the clean stage's checks run in order: schema/structure "
            "(invalid_record, bad_structure, empty_field), then too_long, then exact and near duplicates, "
            "then the label check. A row quarantined by an earlier check never reaches the later ones: "
            "rows quarantined for structure never get their text repairs (markup, mojibake, PII) recorded, "
            "and rows quarantined as too_long or duplicates never reach the label check, so their other "
            "defects count as missed here (column missed_quarantined_earlier)."
        ),
    }


def _examples(quarantine: Sequence[dict]) -> list[dict[str, str]]:
    seen: Counter[str] = Counter()
    out = []
    for q in sorted(quarantine, key=lambda q: str(q.get("reason"))):
        reason = str(q.get("reason"))
        if seen[reason] >= EXAMPLES_PER_REASON:
            continue
        seen[reason] += 1
        rec = q.get("record")
        u, _ = _texts(rec)
        text = (
            u
            if u is not None
            else (json.dumps(rec, ensure_ascii=False, default=str) if rec is not None else "")
        )
        out.append(
            {
                "id": str(q.get("id")),
                "reason": reason,
                "detail": _truncate(str(q.get("detail", ""))),
                "text": _truncate(text),
            }
        )
    return out


def _truncate(s: str, n: int = EXAMPLE_CHARS) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ================================================================ plots


def _plots(report: dict, private: dict, plots_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(fig: Any, key: str) -> None:
        fig.tight_layout()
        path = plots_dir / PLOT_FILES[key]
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[key] = path

    def empty(ax: Any, msg: str) -> None:
        ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#666")
        ax.set_xticks([])
        ax.set_yticks([])

    # 1) intent share per split ---------------------------------------------------
    dist = report["distribution"]["splits"]
    names = list(dist)
    intents = sorted({i for s in names for i in dist[s]["intents"]})
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.12 * len(intents) * max(1, len(names)) + 1.5)))
    if intents:
        y = np.arange(len(intents))
        h = 0.8 / max(1, len(names))
        for k, s in enumerate(names):
            shares = [100 * dist[s]["intents"].get(i, {}).get("share", 0.0) for i in intents]
            ax.barh(
                y + (k - (len(names) - 1) / 2) * h, shares, height=h, label=f"{s} (n={dist[s]['rows']:,})"
            )
        ax.set_yticks(y)
        ax.set_yticklabels(intents, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("share of split rows (%)")
        ax.legend(loc="lower right", fontsize=8)
    else:
        empty(ax, "no split rows")
    ax.set_title("Intent distribution per split")
    save(fig, "intents")

    # 2) word lengths raw vs kept ---------------------------------------------------
    (raw_u, raw_a), (kept_u, kept_a) = private["raw_words"], private["kept_words"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, title, r, k in ((axes[0], "User", raw_u, kept_u), (axes[1], "Assistant", raw_a, kept_a)):
        if len(r) == 0 and len(k) == 0:
            empty(ax, "no rows")
        else:
            both = np.concatenate([r, k]).astype(np.float64)
            hi = max(1.0, float(np.percentile(both, 99)))
            step = max(1, math.ceil(hi / 40))  # integer-aligned bins: word counts are integers
            bins = np.arange(0, hi + step + 1, step) - 0.5
            ax.hist(np.clip(r, 0, hi), bins=bins, histtype="step", linewidth=1.6, label=f"raw (n={len(r):,})")
            ax.hist(
                np.clip(k, 0, hi), bins=bins, histtype="step", linewidth=1.6, label=f"kept (n={len(k):,})"
            )
            ax.set_xlabel("words per row (clipped at p99)")
            ax.set_ylabel("rows")
            ax.legend(fontsize=8)
        ax.set_title(f"{title} text length: raw vs kept")
    save(fig, "lengths")

    # 3) quarantine reasons + change codes ------------------------------------------
    reasons = dict(report["summary"]["quarantined_by_reason"])
    reasons |= {f"ingest:{k}": v for k, v in report["completeness"]["ingest_rejections_by_reason"].items()}
    codes = report["text_quality"]["changes_by_code"]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.5, 0.35 * max(len(reasons), len(codes), 1) + 1.5)))
    for ax, data, title, color in (
        (axes[0], reasons, "Quarantined rows by reason", "#c0504d"),
        (axes[1], codes, "Changed rows by change code", "#4f81bd"),
    ):
        if data:
            items = sorted(data.items(), key=lambda kv: -kv[1])
            ax.barh([k for k, _ in items], [v for _, v in items], color=color)
            ax.invert_yaxis()
            ax.set_xlabel("rows")
            for i, (_, v) in enumerate(items):
                ax.text(v, i, f" {v:,}", va="center", fontsize=8)
            ax.margins(x=0.15)
        else:
            empty(ax, "none")
        ax.set_title(title)
    save(fig, "reasons")

    # 4) label quality ---------------------------------------------------------------
    ok_q, issue_q = private["label_quality"]
    fig, ax = plt.subplots(figsize=(8, 4))
    if ok_q or issue_q:
        bins = np.linspace(0, 1, 41)
        ax.hist(
            [ok_q, issue_q],
            bins=bins,
            stacked=True,
            label=["not flagged", "flagged as label issue"],
            color=["#4f81bd", "#c0504d"],
        )
        ax.set_yscale("log")
        ax.set_xlabel("cleanlab label quality (low = suspicious)")
        ax.set_ylabel("rows (log)")
        ax.legend(fontsize=8)
    else:
        empty(ax, "label check disabled or no scores")
    ax.set_title("Label quality of examined rows")
    save(fig, "label_quality")

    # 5) defect detection (synthetic ground truth only) ------------------------------
    det = report.get("defect_detection") or {}
    per_type = det.get("per_type") or {}
    if per_type:
        types = list(per_type)
        x = np.arange(len(types))
        prec = [per_type[t]["precision"] or 0.0 for t in types]
        rec = [per_type[t]["recall"] or 0.0 for t in types]
        fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(types) + 2), 4.5))
        ax.bar(x - 0.2, prec, width=0.4, label="precision", color="#4f81bd")
        ax.bar(x + 0.2, rec, width=0.4, label="recall", color="#9bbb59")
        for k, t in enumerate(types):
            for dx, key in ((-0.2, "precision"), (0.2, "recall")):
                v = per_type[t][key]
                ax.text(
                    k + dx,
                    (v or 0.0) + 0.01,
                    "n/a" if v is None else f"{v:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.axhline(RECALL_WARN, ls="--", color="#c0504d", lw=1, label=f"recall warning ({RECALL_WARN})")
        ax.set_xticks(x)
        ax.set_xticklabels(types, rotation=30, ha="right", fontsize=9)
        ax.set_ylim(0, 1.25)
        ax.set_ylabel("score")
        ax.legend(fontsize=8, loc="upper center", ncol=3)
        ax.set_title("Defect detection vs synthetic ground truth")
        save(fig, "defects")
    return written


# ================================================================ rendering (md + html from one block list)


class _Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        rows = [list(r) for r in rows]
        if rows:
            self.blocks.append(("table", (list(headers), rows)))
        else:
            self.p("_(none)_")

    def img(self, alt: str, rel: str) -> None:
        self.blocks.append(("img", (alt, rel)))

    def warn(self, items: Sequence[str]) -> None:
        self.blocks.append(("warn", list(items)))

    # ---- markdown
    def to_md(self) -> str:
        out: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                out.append(f"{'#' * data[0]} {data[1]}\n")
            elif kind == "p":
                out.append(f"{data}\n")
            elif kind == "table":
                headers, rows = data
                out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows)
                out.append("")
            elif kind == "img":
                out.append(f"![{data[0]}]({data[1]})\n")
            elif kind == "warn":
                if data:
                    out.append(f"> ⚠️ **{len(data)} warning{'s' if len(data) > 1 else ''}:**")
                    out.append(">")
                    out.extend(f"> - ⚠️ {w}" for w in data)
                    out.append("")
                else:
                    out.append("✅ No warnings.\n")
        return "\n".join(out).rstrip() + "\n"

    # ---- html
    def to_html(self, title: str, base: Path) -> str:
        body: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                body.append(f"<h{data[0]}>{_esc(data[1])}</h{data[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(data)}</p>")
            elif kind == "table":
                headers, rows = data
                head = "".join(f"<th>{_inline(_fmt(h))}</th>" for h in headers)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{_inline(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                path = base / data[1]
                if path.is_file():
                    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
                    body.append(
                        f'<figure><img alt="{_esc(data[0])}" src="data:image/png;base64,{b64}"></figure>'
                    )
            elif kind == "warn":
                if data:
                    body.append(
                        '<div class="warn"><ul>'
                        + "".join(f"<li><strong>Warning:</strong> {_esc(w)}</li>" for w in data)
                        + "</ul></div>"
                    )
                else:
                    body.append('<p class="ok">No warnings.</p>')
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "h1{border-bottom:2px solid #4f81bd;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f0f3f8}tr:nth-child(even) td{background:#fafafa}"
    "img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}"
    ".warn{background:#fff4e5;border-left:5px solid #e69500;padding:.4em 1em;margin:1em 0}"
    ".ok{background:#eef8ee;border-left:5px solid #4caf50;padding:.4em 1em}"
    "code{background:#f3f3f3;padding:0 .2em}"
)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        text = f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.4f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _esc(s: str) -> str:
    # defang '://' so report text quoting a URL is never mistaken for an external resource
    return html.escape(str(s)).replace("://", ":&#47;&#47;")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITAL = re.compile(r"(?<![\w*])_([^_]+)_(?![\w*])")


def _inline(s: str) -> str:
    """The few Markdown inline forms the paragraphs use: `code`, **bold**, _italic_."""
    out = _esc(s)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITAL.sub(r"<em>\1</em>", out)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _render(report: dict, examples: list[dict], plots: dict[str, Path]) -> _Doc:
    d = _Doc()
    s = report["summary"]
    dv = report["data_version"] or {}

    def image(key: str, alt: str) -> None:
        if key in plots:
            d.img(alt, f"{PLOTS_SUBDIR}/{PLOT_FILES[key]}")

    d.h(1, "Data quality report")
    d.p(f"Data version: git `{dv.get('git_sha') or 'unknown'}`.")
    dvc = dv.get("dvc") or {}
    if dvc:
        d.table(["DVC-tracked path", "md5"], sorted(dvc.items()))

    d.h(2, "Summary")
    d.table(
        ["metric", "value"],
        [
            ["raw rows", s["rows_raw"]],
            ["rejected at ingest", s["rows_rejected_at_ingest"]],
            ["kept rows", s["rows_kept"]],
            ["quarantined rows", s["rows_quarantined"]],
            ["changed rows (kept or not)", s["rows_changed"]],
            *[[f"{k} rows", v] for k, v in s["split_counts"].items()],
        ],
    )
    d.warn(s["warnings"])

    # ---- completeness
    c = report["completeness"]
    d.h(2, "Completeness")
    d.p(
        "Missing = key or turn absent; empty = present but blank. Raw = ingest output, kept = after cleaning."
    )
    d.table(
        [
            "field",
            "raw missing",
            "raw empty",
            "raw incomplete rate",
            "kept missing",
            "kept empty",
            "kept incomplete rate",
        ],
        [
            [
                f,
                c["raw"]["fields"][f]["missing"],
                c["raw"]["fields"][f]["empty"],
                _pct(c["raw"]["fields"][f]["incomplete_rate"]),
                c["kept"]["fields"][f]["missing"],
                c["kept"]["fields"][f]["empty"],
                _pct(c["kept"]["fields"][f]["incomplete_rate"]),
            ]
            for f in FIELDS
        ],
    )
    kinds = sorted(set(c["raw"]["rows_by_kind"]) | set(c["kept"]["rows_by_kind"]))
    d.h(3, "Rows by kind")
    d.table(
        ["kind", "raw", "kept"],
        [[k, c["raw"]["rows_by_kind"].get(k, 0), c["kept"]["rows_by_kind"].get(k, 0)] for k in kinds],
    )
    d.h(3, "Ingest rejections")
    d.table(["reason", "rows"], sorted(c["ingest_rejections_by_reason"].items()))

    # ---- text quality
    t = report["text_quality"]
    d.h(2, "Text quality")
    d.table(
        [
            "text",
            "unit",
            "raw mean",
            "raw p50",
            "raw p95",
            "raw max",
            "kept mean",
            "kept p50",
            "kept p95",
            "kept max",
        ],
        [
            [
                who,
                unit,
                *[t["raw"][who][unit][m] for m in ("mean", "p50", "p95", "max")],
                *[t["kept"][who][unit][m] for m in ("mean", "p50", "p95", "max")],
            ]
            for who in ("user", "assistant")
            for unit in ("chars", "words")
        ],
    )
    rows = [
        ["mojibake (ftfy)", _pct(t["raw"]["mojibake_rate"]), _pct(t["kept"]["mojibake_rate"])],
        [
            "control / non-printable chars",
            _pct(t["raw"]["control_char_rate"]),
            _pct(t["kept"]["control_char_rate"]),
        ],
        ["HTML markup / entities", _pct(t["raw"]["markup_rate"]), _pct(t["kept"]["markup_rate"])],
        ["`{{placeholder}}` used", _pct(t["raw"]["placeholder_rate"]), _pct(t["kept"]["placeholder_rate"])],
        ["any PII", _pct(t["raw"]["pii_row_rate"]), _pct(t["kept"]["pii_row_rate"])],
    ]
    rows += [[f"PII hits: {k}", t["raw"]["pii_hits"][k], t["kept"]["pii_hits"][k]] for k in PII_TYPES]
    d.table(["row-level signal", "raw", "kept"], rows)
    image("lengths", "Text lengths raw vs kept")
    d.h(3, "Changes by code")
    d.table(["change code", "rows"], sorted(t["changes_by_code"].items(), key=lambda kv: -kv[1]))
    image("reasons", "Quarantine reasons and change codes")
    d.h(3, "Quarantined examples")
    d.table(
        ["id", "reason", "detail", "text (truncated)"],
        [[e["id"], e["reason"], e["detail"], e["text"]] for e in examples],
    )

    # ---- labels
    lc = report["label_consistency"]
    d.h(2, "Label consistency")
    ls = lc["summary"]
    d.table(
        ["metric", "value"],
        [
            ["enabled", ls["enabled"]],
            ["action", ls["action"]],
            ["issues flagged", ls["issues"]],
            ["out-of-fold accuracy", ls["oof_accuracy"]],
            ["mean label quality", ls["mean_label_quality"]],
        ],
    )
    d.h(3, "Most confused intent pairs (given → predicted)")
    d.table(
        ["given", "predicted", "count"],
        [[x["given"], x["predicted"], x["count"]] for x in lc["top_confusions"]],
    )
    d.h(3, "Issues per intent")
    top = sorted(lc["issues_per_intent"].items(), key=lambda kv: (-kv[1]["rate"], kv[0]))
    d.table(
        ["intent", "rows examined", "issues", "rate"],
        [[k, v["rows"], v["issues"], _pct(v["rate"])] for k, v in top],
    )
    image("label_quality", "Label quality histogram")

    # ---- distribution
    ds = report["distribution"]
    d.h(2, "Distribution")
    names = list(ds["splits"])
    d.table(
        ["split", "rows", "intents", "missing intents", "imbalance (max/min)"],
        [
            [
                n,
                ds["splits"][n]["rows"],
                ds["splits"][n]["n_intents"],
                ", ".join(ds["splits"][n]["missing_intents"]) or "–",
                ds["splits"][n]["imbalance_ratio"],
            ]
            for n in names
        ],
    )
    intents = sorted({i for n in names for i in ds["splits"][n]["intents"]})
    d.h(3, "Intents per split")
    d.table(
        ["intent", *[f"{n} count" for n in names], *[f"{n} share" for n in names], "mean length"],
        [
            [
                i,
                *[ds["splits"][n]["intents"].get(i, {}).get("count", 0) for n in names],
                *[_pct(ds["splits"][n]["intents"].get(i, {}).get("share", 0.0)) for n in names],
                ds["tokens_per_intent"].get(i, {}).get("mean"),
            ]
            for i in intents
        ],
    )
    d.p(f"Mean length is in `{ds['token_measure']}`.")
    cats = sorted({i for n in names for i in ds["splits"][n]["categories"]})
    d.h(3, "Categories per split")
    d.table(
        ["category", *names],
        [[k, *[ds["splits"][n]["categories"].get(k, {}).get("count", 0) for n in names]] for k in cats],
    )
    image("intents", "Intent distribution per split")
    dr = ds["drift"]
    d.h(3, "Drift between splits")
    d.p(
        f"Jensen-Shannon distance (base 2, 0 = identical, 1 = disjoint); alert above {dr['threshold']}. "
        f"Length measure: `{dr['length_measure']}` in {LENGTH_BINS} shared quantile bins."
    )
    d.table(
        ["pair", "intent distance", "intent alert", "length distance", "length alert"],
        [
            [k, v["intent"]["distance"], v["intent"]["alert"], v["length"]["distance"], v["length"]["alert"]]
            for k, v in dr["pairs"].items()
        ],
    )

    # ---- dedup
    dd = report["dedup"]
    d.h(2, "Deduplication and leakage")
    d.table(["metric", "value"], [[k, v] for k, v in dd.items()])

    # ---- defects
    dt = report["defect_detection"]
    d.h(2, "Defect detection (synthetic ground truth)")
    if not dt:
        d.p("No ground truth for this data (real data): skipped.")
    else:
        d.p(dt["note"])
        d.table(
            [
                "defect",
                "signal",
                "support",
                "detected",
                "true positives",
                "precision",
                "recall",
                "missed: quarantined earlier",
            ],
            [
                [
                    k,
                    f"`{v['signal']}`" if v["signal"] else "none",
                    v["support"],
                    v["detected"],
                    v["true_positives"],
                    v["precision"],
                    v["recall"],
                    v["missed_quarantined_earlier"],
                ]
                for k, v in dt["per_type"].items()
            ],
        )
        d.p(
            f"Macro average over {dt['macro']['types']} types: precision {_fmt(dt['macro']['precision'])}, "
            f"recall {_fmt(dt['macro']['recall'])}."
        )
        image("defects", "Defect detection precision and recall")
    return d


# ================================================================ entry point


def _build(
    raw: list[dict],
    rejected: list[dict],
    kept: list[dict],
    quarantine: list[dict],
    changes: list[dict],
    label_issues: list[dict],
    splits: dict[str, list[dict]],
    defects: list[dict],
    clean_report: dict,
    split_report: dict,
    data_version: dict,
    params: QualityParams,
    reports_dir: Path,
) -> dict:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    clean_report = clean_report or {}
    split_report = split_report or {}

    raw_texts = [_texts(r) for r in raw]
    kept_texts = [_texts(r) for r in kept]

    completeness = {
        "raw": _completeness_of(raw, raw_texts),
        "kept": _completeness_of(kept, kept_texts),
        "ingest_rejections": len(rejected),
        "ingest_rejections_by_reason": dict(sorted(Counter(str(r.get("reason")) for r in rejected).items())),
    }

    raw_prof = _text_profile(raw_texts)
    kept_prof = _text_profile(kept_texts)
    private = {"raw_words": raw_prof.pop("_words"), "kept_words": kept_prof.pop("_words")}
    code_counts = Counter(str(c) for ch in changes for c in ch.get("codes") or [])
    text_quality = {
        "raw": raw_prof,
        "kept": kept_prof,
        "changes_by_code": dict(sorted(code_counts.items())),
        "rows_changed": len({ch.get("id") for ch in changes}),
    }

    label_consistency = _label_consistency(kept, quarantine, label_issues, clean_report, params)
    private["label_quality"] = label_consistency.pop("_quality")

    distribution = _distribution(kept, splits, params)
    dedup_section = _dedup(raw, splits, clean_report, split_report)
    defect_detection = _defect_detection(defects, quarantine, changes, label_issues) if defects else {}

    # ---- summary and warnings
    warnings: list[str] = []
    for pair, v in distribution["drift"]["pairs"].items():
        for what in ("intent", "length"):
            if v[what]["alert"]:
                warnings.append(
                    f"{what} drift {pair.replace('_', ' ')}: Jensen-Shannon distance "
                    f"{v[what]['distance']} > {params.drift_alert}"
                )
    if dedup_section["leaked_groups"] > 0:
        warnings.append(
            f"{dedup_section['leaked_groups']} near-duplicate/conversation groups leak across splits"
        )
    if dedup_section["group_ids_spanning_splits"] > 0:
        warnings.append(
            f"{dedup_section['group_ids_spanning_splits']} meta.group_id values appear in two splits"
        )
    for t, v in (defect_detection.get("per_type") or {}).items():
        if v["recall"] is not None and v["recall"] < RECALL_WARN:
            warnings.append(
                f"defect `{t}`: recall {v['recall']} < {RECALL_WARN} ({v['true_positives']}/{v['support']})"
            )
    for s, v in distribution["splits"].items():
        if v["imbalance_ratio"] is not None and v["imbalance_ratio"] > IMBALANCE_WARN:
            warnings.append(f"split {s}: intent imbalance ratio {v['imbalance_ratio']} > {IMBALANCE_WARN:g}")
    kept_pii = sum(kept_prof["pii_hits"].values())
    if kept_pii:
        hits = ", ".join(f"{k}: {v}" for k, v in kept_prof["pii_hits"].items() if v)
        warnings.append(f"kept data still holds {kept_pii} PII-looking hits ({hits})")

    summary = {
        "rows_raw": len(raw),
        "rows_rejected_at_ingest": len(rejected),
        "rows_kept": len(kept),
        "rows_quarantined": len(quarantine),
        "rows_changed": text_quality["rows_changed"],
        "quarantined_by_reason": dict(sorted(Counter(str(q.get("reason")) for q in quarantine).items())),
        "split_counts": {s: len(splits[s]) for s in _ordered_splits(splits)},
        "warnings": warnings,
        "n_warnings": len(warnings),
    }

    report = {
        "completeness": completeness,
        "text_quality": text_quality,
        "label_consistency": label_consistency,
        "distribution": distribution,
        "dedup": dedup_section,
        "defect_detection": defect_detection,
        "data_version": data_version,
        "summary": summary,
    }

    plots = _plots(report, private, reports_dir / PLOTS_SUBDIR)
    doc = _render(report, _examples(quarantine), plots)
    (reports_dir / "data_quality.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (reports_dir / "data_quality.md").write_text(doc.to_md(), encoding="utf-8")
    (reports_dir / "data_quality.html").write_text(
        doc.to_html("Data quality report", reports_dir), encoding="utf-8"
    )
    return report


def build_quality_report(
    raw: list[dict],
    rejected: list[dict],
    kept: list[dict],
    quarantine: list[dict],
    changes: list[dict],
    label_issues: list[dict],
    splits: dict[str, list[dict]],
    defects: list[dict],
    clean_report: dict,
    split_report: dict,
    data_version: dict,
    params: QualityParams,
    reports_dir: Path,
) -> dict:
    """Compute the quality report, write data_quality.{json,md,html} and plots; return the JSON dict.

    `defects` is the synthetic ground truth ([] for real data: no defect_detection section).
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the inputs are millions of small dicts: generational GC passes would dominate the run
    try:
        return _build(
            raw,
            rejected,
            kept,
            quarantine,
            changes,
            label_issues,
            splits,
            defects,
            clean_report,
            split_report,
            data_version,
            params,
            reports_dir,
        )
    finally:
        if gc_was_enabled:
            gc.enable()
