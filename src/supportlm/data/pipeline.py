"""File-level runners for the data stages: read inputs, call the pure function, write outputs.

`stages/*.py`, the CLI and the scaling benchmark all call these, so there is one
code path. Every runner returns the metrics dict it wrote.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from supportlm.config import Params
from supportlm.data.schema import Record, read_jsonl, read_records, write_jsonl
from supportlm.errors import DataError
from supportlm.lineage import dvc_hashes, git_sha, params_hash, peak_rss_mb, write_json
from supportlm.paths import Paths


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing input; run `dvc repro {stage}` first")
    return path


def run_ingest(params: Params, paths: Paths, base_dir: Path | None = None) -> dict[str, Any]:
    from supportlm.data.ingest import ingest

    records, rejected, defects, report = ingest(params.ingest, base_dir or paths.root)
    write_jsonl(paths.raw / "records.jsonl", records)
    write_jsonl(paths.raw / "rejected.jsonl", rejected)
    write_jsonl(paths.raw / "defects.jsonl", defects)
    report |= {"params_hash": params_hash(params.ingest), "peak_rss_mb": peak_rss_mb()}
    write_json(paths.reports / "ingest.json", report)
    return report


def token_counter(paths: Paths, use_tokenizer: bool = True):
    from supportlm.data.clean import hf_token_counter, whitespace_token_counter

    if not use_tokenizer:
        return whitespace_token_counter
    from supportlm.tokenizer import load_tokenizer

    return hf_token_counter(load_tokenizer(_need(paths.base_model, "base_model")))


def run_clean(params: Params, paths: Paths, use_tokenizer: bool = True, progress: bool = True) -> dict[str, Any]:
    from supportlm.data.clean import clean

    t0 = time.perf_counter()
    rows = list(read_jsonl(_need(paths.raw / "records.jsonl", "ingest")))
    res = clean(rows, params.clean, token_counter(paths, use_tokenizer), progress=progress)
    write_jsonl(paths.interim / "clean.jsonl", res.kept)
    write_jsonl(paths.interim / "quarantine.jsonl", res.quarantine)
    write_jsonl(paths.interim / "changes.jsonl", res.changes)
    write_jsonl(paths.interim / "label_issues.jsonl", res.label_issues)
    report = res.report | {
        "params_hash": params_hash(params.clean),
        "stage_seconds": round(time.perf_counter() - t0, 3),
        "rows_per_s": round(len(rows) / max(1e-9, time.perf_counter() - t0), 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "clean.json", report)
    return report


def run_split(params: Params, paths: Paths) -> dict[str, Any]:
    from supportlm.data.split import split

    t0 = time.perf_counter()
    records = read_records(_need(paths.interim / "clean.jsonl", "clean"))
    if not records:
        raise DataError(f"{paths.interim / 'clean.jsonl'}: no rows left after cleaning; see quarantine.jsonl")
    out, report = split(records, params.split, params.clean)
    if report["leaked_groups"]:
        raise DataError(f"split leaks {report['leaked_groups']} near-duplicate groups across splits (bug)")
    for name, rows in out.items():
        write_jsonl(paths.processed / f"{name}.jsonl", rows)
    report |= {
        "params_hash": params_hash(params.split),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "split.json", report)
    return report


def run_format(params: Params, paths: Paths) -> dict[str, Any]:
    from supportlm.data.format import format_split
    from supportlm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(_need(paths.base_model, "base_model"))
    report: dict[str, Any] = {"params_hash": params_hash(params.format), "splits": {}}
    for name in ("train", "val", "test"):
        records = read_records(_need(paths.processed / f"{name}.jsonl", "split"))
        rows, stats = format_split(records, tokenizer, params.format)
        write_jsonl(paths.formatted / f"{name}.jsonl", rows)
        report["splits"][name] = stats
    report["chat_template_source"] = str(paths.base_model / "chat_template.jinja")
    write_json(paths.reports / "format.json", report)
    return report


def data_version(paths: Paths) -> dict[str, Any]:
    return {
        "git_sha": git_sha(paths.root),
        "dvc": dvc_hashes(["ingest", "clean", "split"], paths.root),
    }


def run_quality(params: Params, paths: Paths) -> dict[str, Any]:
    import json

    from supportlm.data.quality import build_quality_report

    def rows(path: Path) -> list[dict[str, Any]]:
        return list(read_jsonl(path)) if path.exists() else []

    splits = {s: rows(_need(paths.processed / f"{s}.jsonl", "split")) for s in ("train", "val", "test")}
    return build_quality_report(
        raw=rows(_need(paths.raw / "records.jsonl", "ingest")),
        rejected=rows(paths.raw / "rejected.jsonl"),
        kept=rows(_need(paths.interim / "clean.jsonl", "clean")),
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


__all__ = ["Record", "run_clean", "run_format", "run_ingest", "run_quality", "run_split"]
