"""The data-quality report's readable layout: which tables, plots and warnings each section shows."""

from __future__ import annotations

import json
from pathlib import Path

from supportlm.data.quality_metrics import FIELDS, LENGTH_BINS, PII_TYPES, row_texts
from supportlm.data.quality_plots import PLOT_FILES, PLOTS_SUBDIR
from supportlm.render import Document, format_value

EXAMPLES_PER_REASON = 2
EXAMPLE_CHARS = 120


class QuarantineExamples:
    """Up to EXAMPLES_PER_REASON quarantined rows per reason (the first ones in file order); the rest pass."""

    def __init__(self) -> None:
        self.picked: dict[str, list[dict]] = {}

    def add(self, q: dict) -> None:
        picked = self.picked.setdefault(str(q.get("reason")), [])
        if len(picked) < EXAMPLES_PER_REASON:
            picked.append(q)

    def rows(self) -> list[dict[str, str]]:
        """The examples by reason, user text and detail truncated."""
        return [_example(reason, q) for reason in sorted(self.picked) for q in self.picked[reason]]


def _example(reason: str, q: dict) -> dict[str, str]:
    rec = q.get("record")
    text, _ = row_texts(rec)
    if text is None:  # no user turn: show the record as it is
        text = json.dumps(rec, ensure_ascii=False, default=str) if rec is not None else ""
    return {
        "id": str(q.get("id")),
        "reason": reason,
        "detail": _truncate(str(q.get("detail", ""))),
        "text": _truncate(text),
    }


def _truncate(s: str, n: int = EXAMPLE_CHARS) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def build_document(report: dict, examples: list[dict], plots: dict[str, Path]) -> Document:
    """The report dict (data_quality.json) laid out for reading; only plots in `plots` are shown."""
    d = Document()
    s = report["summary"]
    dv = report["data_version"] or {}

    def image(key: str, alt: str) -> None:
        if key in plots:
            d.image(f"{PLOTS_SUBDIR}/{PLOT_FILES[key]}", alt)

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
        macro = dt["macro"]
        d.p(
            f"Macro average over {macro['types']} types: precision {format_value(macro['precision'])}, "
            f"recall {format_value(macro['recall'])}."
        )
        image("defects", "Defect detection precision and recall")
    return d
