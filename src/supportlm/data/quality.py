"""The data-quality report: what the raw data looked like, what cleaning did, what the splits hold.

`build_quality_report()` reads the outputs of ingest, clean and split (all in memory)
and writes `data_quality.json` (the contract: eight top-level keys), a readable
`data_quality.md` and a self-contained `data_quality.html` (plots embedded as base64,
no external resources), plus PNG plots under `plots/quality/`.

This module assembles the sections, the warnings and the summary, and writes the files;
the parts live next to it, one concern each: quality_metrics (the measured sections),
quality_defects (scores against the synthetic ground truth), quality_plots (PNGs),
quality_document (the readable layout, rendered to Markdown and HTML by supportlm.render,
the one document model every report uses).
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path
from typing import Any

from supportlm.config import Params, QualityParams
from supportlm.data import quality_defects, quality_metrics
from supportlm.data.quality_defects import RECALL_WARN
from supportlm.data.quality_document import build_document, quarantine_examples
from supportlm.data.quality_plots import PLOTS_SUBDIR, write_plots
from supportlm.io import read_rows
from supportlm.lineage import dvc_hashes, git_sha
from supportlm.paths import Paths

IMBALANCE_WARN = 10.0


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

    raw_texts = [quality_metrics.row_texts(r) for r in raw]
    kept_texts = [quality_metrics.row_texts(r) for r in kept]

    completeness = {
        "raw": quality_metrics.completeness(raw, raw_texts),
        "kept": quality_metrics.completeness(kept, kept_texts),
        "ingest_rejections": len(rejected),
        "ingest_rejections_by_reason": dict(sorted(Counter(str(r.get("reason")) for r in rejected).items())),
    }

    raw_prof = quality_metrics.text_profile(raw_texts)
    kept_prof = quality_metrics.text_profile(kept_texts)
    private = {"raw_words": raw_prof.pop("_words"), "kept_words": kept_prof.pop("_words")}
    code_counts = Counter(str(c) for ch in changes for c in ch.get("codes") or [])
    text_quality = {
        "raw": raw_prof,
        "kept": kept_prof,
        "changes_by_code": dict(sorted(code_counts.items())),
        "rows_changed": len({ch.get("id") for ch in changes}),
    }

    label_consistency = quality_metrics.label_consistency(
        kept, quarantine, label_issues, clean_report, params
    )
    private["label_quality"] = label_consistency.pop("_quality")

    distribution = quality_metrics.distribution(kept, splits, params)
    dedup_section = quality_metrics.dedup(raw, splits, clean_report, split_report)
    defect_detection = (
        quality_defects.defect_detection(defects, quarantine, changes, label_issues) if defects else {}
    )

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
        "split_counts": {s: len(splits[s]) for s in quality_metrics.ordered_splits(splits)},
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

    plots = write_plots(report, private, reports_dir / PLOTS_SUBDIR)
    doc = build_document(report, quarantine_examples(quarantine), plots)
    (reports_dir / "data_quality.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    doc.write(reports_dir / "data_quality.md", html_title="Data quality report")
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


def data_version(paths: Paths) -> dict[str, Any]:
    """The git commit and the DVC hashes of the data the report describes."""
    return {
        "git_sha": git_sha(paths.root),
        "dvc": dvc_hashes(["ingest", "clean", "split"], paths.root),
    }


def run_quality(params: Params, paths: Paths) -> dict[str, Any]:
    """The quality stage: every data stage's outputs -> reports/data_quality.{md,html,json} + plots."""

    def rows(path: Path, produced_by: str | None = None) -> list[dict[str, Any]]:
        return read_rows(path, produced_by) if produced_by or path.exists() else []

    splits = {s: rows(paths.processed / f"{s}.jsonl", "split") for s in ("train", "val", "test")}
    return build_quality_report(
        raw=rows(paths.raw / "records.jsonl", "ingest"),
        rejected=rows(paths.raw / "rejected.jsonl"),
        kept=rows(paths.interim / "clean.jsonl", "clean"),
        quarantine=rows(paths.interim / "quarantine.jsonl"),
        changes=rows(paths.interim / "changes.jsonl"),
        label_issues=rows(paths.interim / "label_issues.jsonl"),
        splits=splits,
        defects=rows(paths.raw / "defects.jsonl"),
        clean_report=json.loads((paths.reports / "clean.json").read_text()),
        split_report=json.loads((paths.reports / "split.json").read_text()),
        data_version=data_version(paths),
        params=params.quality,
        reports_dir=paths.reports,
    )
