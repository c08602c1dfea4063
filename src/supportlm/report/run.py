"""Report: reports/index.md and one self-contained reports/index.html, from the stages' JSON files only.

    dvc repro report
    python stages/report.py          # same code, outside DVC

Reads (each optional; a missing file makes its section say "not run yet"): reports/ingest.json,
clean.json, split.json, format.json, data_quality.json, data_scaling.json, train.json, sweep.json,
eval.json, human_eval.json (+ human_eval_sheet.csv/.html), quantization.json, bench.json, containers.json; the plots
under reports/plots/<stage>/; params.yaml and dvc.lock for lineage. Computes nothing new: every number
is copied from a JSON file; targets are the stages' own `targets` lists, plus the documented goals
(train speedup >= 1.5x, fine-tuned beats base, no leaked split groups) checked against the value the
stage wrote.

Both files are rendered from one list of sections (paragraphs, tables, images, links), so the
Markdown and the HTML always say the same thing. index.html has inline CSS, plots as data URIs
(report.embed_images) and relative links to the detailed reports next to it (data_quality.html,
eval.md, quantization.md, bench.md, ...); nothing is fetched from the network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from supportlm.config import Params
from supportlm.paths import Paths
from supportlm.render import Document, Para, Section
from supportlm.report.sections import SECTIONS, lineage_section
from supportlm.report.targets import collect_targets, targets_section

log = logging.getLogger("supportlm.report")


def build_sections(
    reports: Path, root: Path, max_rows: int = 20
) -> tuple[list[Section], list[dict[str, Any]]]:
    targets = collect_targets(reports)
    sections = [targets_section(reports, targets)]
    for builder in SECTIONS:
        try:
            sections.append(builder(reports, max_rows))
        except Exception as exc:  # noqa: BLE001 - one odd JSON must not hide the other sections
            log.warning("report section %s failed: %r", builder.key, exc)
            sections.append(
                Section(
                    builder.key,
                    builder.title,
                    [Para(f"Could not render this section from its JSON: {exc!r}")],
                )
            )
    sections.append(lineage_section(reports, root))
    return sections, targets


def run_report(params: Params, paths: Paths) -> dict[str, Any]:
    """The report stage: reports/*.json -> reports/index.{md,html}.

    Returns {index_md, index_html, sections {key: "ok" | "not run yet"}, targets, targets_met, targets_total}."""
    p = params.report
    reports, root = paths.reports, paths.root
    reports.mkdir(parents=True, exist_ok=True)
    sections, targets = build_sections(reports, root, p.max_rows)
    doc = Document()
    doc.h(1, p.title)
    doc.sections(sections)
    doc.write(reports / "index.md", html_title=p.title, embed_images=p.embed_images)
    met = sum(1 for t in targets if t["met"])
    log.info(
        "wrote %s and %s: %d/%d targets met", reports / "index.md", reports / "index.html", met, len(targets)
    )
    return {
        "index_md": str(reports / "index.md"),
        "index_html": str(reports / "index.html"),
        "sections": {s.key: "ok" if s.ran else "not run yet" for s in sections},
        "targets": targets,
        "targets_met": met,
        "targets_total": len(targets),
    }
