"""The data-quality report: what the raw data looked like, what cleaning did, what the splits hold.

`build_quality_report()` reads the outputs of ingest, clean and split and writes
`data_quality.json` (the contract: eight top-level keys), a readable `data_quality.md` and a
self-contained `data_quality.html` (plots embedded as base64, no external resources), plus PNG
plots under `plots/quality/`. Each input file is read in one streaming pass that keeps counters
and a few numbers per row, never the rows, so memory stays bounded as the data grows.

This module feeds the rows to the accumulators, assembles the sections, the warnings and the
summary, and writes the files; the parts live next to it, one concern each: quality_metrics
(the measured sections), quality_defects (scores against the synthetic ground truth),
quality_plots (PNGs), quality_document (the readable layout, rendered to Markdown and HTML by
supportlm.render, the one document model every report uses).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from supportlm.config import Params, QualityParams
from supportlm.data.quality_defects import RECALL_WARN, DefectDetection
from supportlm.data.quality_document import QuarantineExamples, build_document
from supportlm.data.quality_metrics import (
    ChangeCodes,
    Distribution,
    LabelCheck,
    ReasonCounts,
    RowsProfile,
    SplitGroups,
    dedup,
    ordered_splits,
)
from supportlm.data.quality_plots import PLOTS_SUBDIR, write_plots
from supportlm.io import read_jsonl
from supportlm.lineage import dvc_hashes, git_sha
from supportlm.paths import Paths

IMBALANCE_WARN = 10.0

Rows = Iterable[dict[str, Any]]


@dataclass
class Measures:
    """What the report needs from the stage outputs: counters and a few numbers per row, never the rows."""

    distribution: Distribution  # built with the split names
    raw: RowsProfile = field(default_factory=RowsProfile)
    kept: RowsProfile = field(default_factory=RowsProfile)
    rejected: ReasonCounts = field(default_factory=ReasonCounts)
    quarantined: ReasonCounts = field(default_factory=ReasonCounts)
    changes: ChangeCodes = field(default_factory=ChangeCodes)
    labels: LabelCheck = field(default_factory=LabelCheck)
    groups: SplitGroups = field(default_factory=SplitGroups)
    defects: DefectDetection = field(default_factory=DefectDetection)
    examples: QuarantineExamples = field(default_factory=QuarantineExamples)


def _feed(rows: Rows, *sinks: Callable[[dict[str, Any]], None]) -> None:
    """One pass over a stream: each row goes to every sink and is then dropped."""
    for row in rows:
        for sink in sinks:
            sink(row)


def measure(
    raw: Rows,
    rejected: Rows,
    kept: Rows,
    quarantine: Rows,
    changes: Rows,
    label_issues: Rows,
    splits: Mapping[str, Rows],
    defects: Rows,
) -> Measures:
    """Read every input once. The label issues and the splits go before the kept rows, which need them."""
    m = Measures(Distribution(ordered_splits(splits)))
    _feed(label_issues, m.labels.add_issue, m.defects.add_issue)
    for s in m.distribution.names:
        _feed(splits[s], partial(m.distribution.add, s), partial(m.groups.add, s))
    _feed(raw, m.raw.add)
    _feed(rejected, m.rejected.add)
    _feed(kept, m.kept.add, m.labels.add_kept, m.distribution.add_kept)
    _feed(quarantine, m.quarantined.add, m.labels.add_quarantined, m.defects.add_quarantined, m.examples.add)
    _feed(changes, m.changes.add, m.defects.add_change)
    _feed(defects, m.defects.add_truth)
    return m


def _sections(m: Measures, clean_report: dict, split_report: dict, params: QualityParams) -> dict[str, Any]:
    """The measured sections of data_quality.json, in the file's order."""
    return {
        "completeness": {
            "raw": m.raw.completeness.section(),
            "kept": m.kept.completeness.section(),
            "ingest_rejections": m.rejected.rows,
            "ingest_rejections_by_reason": m.rejected.by_reason(),
        },
        "text_quality": {
            "raw": m.raw.text.section(),
            "kept": m.kept.text.section(),
            "changes_by_code": m.changes.by_code(),
            "rows_changed": len(m.changes.ids),
        },
        "label_consistency": m.labels.section(clean_report, params),
        "distribution": m.distribution.section(params),
        "dedup": dedup(m.raw.completeness.rows, m.groups, clean_report, split_report),
        # no ground truth (real data): no section
        "defect_detection": m.defects.section() if m.defects.truth_rows else {},
    }


def _warnings(sections: dict[str, Any], params: QualityParams) -> list[str]:
    """What a reader must not miss: drift, leakage, poorly detected defects, imbalance, leftover PII."""
    distribution, dedup_section = sections["distribution"], sections["dedup"]
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
    for t, v in (sections["defect_detection"].get("per_type") or {}).items():
        if v["recall"] is not None and v["recall"] < RECALL_WARN:
            warnings.append(
                f"defect `{t}`: recall {v['recall']} < {RECALL_WARN} ({v['true_positives']}/{v['support']})"
            )
    for s, v in distribution["splits"].items():
        if v["imbalance_ratio"] is not None and v["imbalance_ratio"] > IMBALANCE_WARN:
            warnings.append(f"split {s}: intent imbalance ratio {v['imbalance_ratio']} > {IMBALANCE_WARN:g}")
    kept_pii_hits = sections["text_quality"]["kept"]["pii_hits"]
    kept_pii = sum(kept_pii_hits.values())
    if kept_pii:
        hits = ", ".join(f"{k}: {v}" for k, v in kept_pii_hits.items() if v)
        warnings.append(f"kept data still holds {kept_pii} PII-looking hits ({hits})")
    return warnings


def _summary(m: Measures, warnings: list[str]) -> dict[str, Any]:
    return {
        "rows_raw": m.raw.completeness.rows,
        "rows_rejected_at_ingest": m.rejected.rows,
        "rows_kept": m.kept.completeness.rows,
        "rows_quarantined": m.quarantined.rows,
        "rows_changed": len(m.changes.ids),
        "quarantined_by_reason": m.quarantined.by_reason(),
        "split_counts": {s: m.distribution.rows(s) for s in m.distribution.names},
        "warnings": warnings,
        "n_warnings": len(warnings),
    }


def write_report(
    m: Measures,
    clean_report: dict,
    split_report: dict,
    data_version: dict,
    params: QualityParams,
    reports_dir: Path,
) -> dict:
    """Assemble data_quality.json from the measures, write it with the .md/.html and plots; return it."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(m, clean_report or {}, split_report or {}, params)
    warnings = _warnings(sections, params)
    report = sections | {"data_version": data_version, "summary": _summary(m, warnings)}

    private = {
        "raw_words": m.raw.text.words(),
        "kept_words": m.kept.text.words(),
        "label_quality": m.labels.scores(),
    }
    plots = write_plots(report, private, reports_dir / PLOTS_SUBDIR)
    doc = build_document(report, m.examples.rows(), plots)
    (reports_dir / "data_quality.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    doc.write(reports_dir / "data_quality.md", html_title="Data quality report")
    return report


def build_quality_report(
    raw: Rows,
    rejected: Rows,
    kept: Rows,
    quarantine: Rows,
    changes: Rows,
    label_issues: Rows,
    splits: Mapping[str, Rows],
    defects: Rows,
    clean_report: dict,
    split_report: dict,
    data_version: dict,
    params: QualityParams,
    reports_dir: Path,
) -> dict:
    """Compute the quality report, write data_quality.{json,md,html} and plots; return the JSON dict.

    Each input is an iterable of row dicts (a list or a read_jsonl stream), read once and not kept.
    `defects` is the synthetic ground truth (empty for real data: no defect_detection section).
    """
    m = measure(raw, rejected, kept, quarantine, changes, label_issues, splits, defects)
    return write_report(m, clean_report, split_report, data_version, params, reports_dir)


def data_version(paths: Paths) -> dict[str, Any]:
    """The git commit and the DVC hashes of the data the report describes."""
    return {
        "git_sha": git_sha(paths.root),
        "dvc": dvc_hashes(["ingest", "clean", "split"], paths.root),
    }


def run_quality(params: Params, paths: Paths) -> dict[str, Any]:
    """The quality stage: every data stage's outputs -> reports/data_quality.{md,html,json} + plots."""

    def rows(path: Path, produced_by: str | None = None) -> Rows:
        """A stream of the file's rows; a missing optional file (no produced_by) is an empty one."""
        return read_jsonl(path, produced_by) if produced_by or path.exists() else ()

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
