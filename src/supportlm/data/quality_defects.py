"""Defect detection in the data-quality report: the clean stage scored against the synthetic ground truth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from supportlm.data.quality_metrics import json_float, rate

RECALL_WARN = 0.8  # a defect type detected below this recall is a report warning

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


def defect_detection(
    defects: Sequence[dict],
    quarantine: Sequence[dict],
    changes: Sequence[dict],
    label_issues: Sequence[dict],
) -> dict[str, Any]:
    """Per defect type: support, detected, precision and recall of the clean stage's signal for it."""
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
            "precision": json_float(len(tp_ids) / len(detected_ids)) if detected_ids else None,
            "recall": json_float(len(tp_ids) / len(support_ids)) if support_ids else None,
            "missed_quarantined_earlier": blocked,
        }
        if t == "label_flip" and tp_ids:
            fixed = sum(1 for i in tp_ids if i in true_intent and predicted.get(i) == true_intent[i])
            entry["predicted_is_true_intent"] = fixed
            entry["predicted_is_true_intent_rate"] = rate(fixed, len(tp_ids))
        per_type[t] = entry
    precisions = [e["precision"] for e in per_type.values() if e["precision"] is not None and e["support"]]
    recalls = [e["recall"] for e in per_type.values() if e["recall"] is not None]
    return {
        "rows_with_defects": sum(1 for d in defects if d.get("defects")),
        "per_type": per_type,
        "macro": {
            "precision": json_float(np.mean(precisions)) if precisions else None,
            "recall": json_float(np.mean(recalls)) if recalls else None,
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
