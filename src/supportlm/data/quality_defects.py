"""Defect detection in the data-quality report: the clean stage scored against the synthetic ground truth."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from supportlm.data.quality_metrics import json_float, rate

RECALL_WARN = 0.8  # a defect type detected below this recall is a report warning

NOTE = (
    "Each row ends in one place, and the clean stage's checks run in order: schema/structure "
    "(invalid_record, bad_structure, empty_field), then too_long, then exact and near duplicates, "
    "then the label check. A row quarantined by an earlier check never reaches the later ones: "
    "rows quarantined for structure never get their text repairs (markup, mojibake, PII) recorded, "
    "and rows quarantined as too_long or duplicates never reach the label check, so their other "
    "defects count as missed here (column missed_quarantined_earlier)."
)

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


class DefectDetection:
    """The synthetic ground truth (defects.jsonl) and the clean stage's signals for it, as sets of row ids.

    Only ids are kept: of the defective, quarantined, changed and flagged rows."""

    def __init__(self) -> None:
        self.truth_rows = 0
        self.rows_with_defects = 0
        self.truth: defaultdict[str, set[str]] = defaultdict(set)
        self.true_intent: dict[str, str] = {}
        self.by_reason: defaultdict[str, set[str]] = defaultdict(set)
        self.quarantined_reason: dict[str, str] = {}
        self.by_code: defaultdict[str, set[str]] = defaultdict(set)
        self.flagged: set[str] = set()
        self.predicted: dict[str, str] = {}

    def add_truth(self, d: dict) -> None:
        self.truth_rows += 1
        self.rows_with_defects += bool(d.get("defects"))
        for t in d.get("defects") or []:
            self.truth[str(t)].add(str(d["id"]))
        if d.get("true_intent") is not None:
            self.true_intent[str(d["id"])] = str(d["true_intent"])

    def add_quarantined(self, q: dict) -> None:
        self.by_reason[str(q.get("reason"))].add(str(q.get("id")))
        self.quarantined_reason.setdefault(str(q.get("id")), str(q.get("reason")))

    def add_change(self, ch: dict) -> None:
        for c in ch.get("codes") or []:
            self.by_code[str(c)].add(str(ch.get("id")))

    def add_issue(self, li: dict) -> None:
        self.flagged.add(str(li["id"]))
        self.predicted[str(li["id"])] = str(li.get("predicted_intent"))

    def _signal(self, kind: str, key: str | None) -> set[str]:
        if kind == "quarantine":
            return self.by_reason.get(key or "", set())
        if kind == "change":
            return self.by_code.get(key or "", set())
        return self.flagged

    def section(self) -> dict[str, Any]:
        """Per defect type: support, detected, precision and recall of the clean stage's signal for it."""
        truth, signal, quarantined = self.truth, self._signal, self.quarantined_reason
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
            blocked = sum(1 for i in missed if i in quarantined and quarantined[i] != own_reason)
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
                true_intent, predicted = self.true_intent, self.predicted
                fixed = sum(1 for i in tp_ids if i in true_intent and predicted.get(i) == true_intent[i])
                entry["predicted_is_true_intent"] = fixed
                entry["predicted_is_true_intent_rate"] = rate(fixed, len(tp_ids))
            per_type[t] = entry
        precisions = [
            e["precision"] for e in per_type.values() if e["precision"] is not None and e["support"]
        ]
        recalls = [e["recall"] for e in per_type.values() if e["recall"] is not None]
        return {
            "rows_with_defects": self.rows_with_defects,
            "per_type": per_type,
            "macro": {
                "precision": json_float(np.mean(precisions)) if precisions else None,
                "recall": json_float(np.mean(recalls)) if recalls else None,
                "types": len(recalls),
            },
            "note": NOTE,
        }
