"""Scaling benchmark of the data stages: ingest, clean, split, quality and format at N synthetic rows.

Each stage of each size runs in a fresh subprocess, so its peak memory is its own: wall time,
CPU time (the stage and its worker processes) and peak resident memory go to
reports/data_scaling.json, rewritten after every size so a long run shows its progress. The goals
(the Arrow/streaming issue): 270K rows under 1.5 GB peak, 1M rows completing under 24 GB at a time
per row within 1.3x of the 270K run's. The file replaced is kept in short under `previous`, so a
change's before and after sit side by side. Figures go to their own file, not reports/clean.json:
that is the clean stage's DVC output.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from supportlm.config import load_params, parse_params
from supportlm.io import write_json
from supportlm.lineage import git_sha
from supportlm.paths import Paths

STAGES = ("ingest", "clean", "split", "quality", "format")  # format only where models/base has a tokenizer
PEAK_GOAL_MB = {270_000: 1_500, 1_000_000: 24_000}
TIME_PER_ROW_GOAL = 1.3  # the largest run's seconds per row against the 270K run's


def _run_stage(stage: str, rows: int, params_path: Path, workdir: Path) -> dict[str, Any]:
    """Run one data stage in this (fresh) process; return its own clock, CPU and memory figures."""
    raw = load_params(params_path).model_dump(mode="json")
    raw["ingest"]["sources"] = [{"name": "synthetic", "type": "synthetic", "rows": rows}]
    params = parse_params(raw)
    paths = Paths(root=workdir)
    t0 = time.perf_counter()
    if stage == "ingest":
        from supportlm.data.ingest import run_ingest

        run_ingest(params, paths)
    elif stage == "clean":
        from supportlm.data.clean import run_clean

        run_clean(params, paths, use_tokenizer=paths.base_model.exists(), progress=False)
    elif stage == "split":
        from supportlm.data.split import run_split

        run_split(params, paths)
    elif stage == "quality":
        from supportlm.data.quality import run_quality

        run_quality(params, paths)
    else:
        from supportlm.data.format import run_format

        run_format(params, paths)
    wall = time.perf_counter() - t0
    if "joblib" in sys.modules:  # join the label model's worker processes so their CPU time is counted
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 2),
        "peak_rss_mb": round(me.ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(kids.ru_maxrss / 1024, 1),
    }


def _one_size(rows: int, params_path: Path, started: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"supportlm-bench-{rows}-") as tmp:
        work = Path(tmp)
        base = Path("models/base")
        use_tok = (base / "tokenizer.json").exists()
        if use_tok:
            (work / "models").mkdir()
            (work / "models" / "base").symlink_to(base.resolve())
        stages: dict[str, Any] = {}
        for stage in STAGES if use_tok else STAGES[:-1]:
            res_file = work / f"{stage}.result.json"
            cmd = [
                sys.executable,
                "-m",
                "supportlm.data.scaling",
                stage,
                str(rows),
                str(params_path),
                tmp,
                str(res_file),
            ]
            # clean counts tokens before its label model forks workers: serial, as it was measured before;
            # format encodes batches with the fast tokenizer's threads, as `dvc repro` runs it
            env = os.environ | {"TOKENIZERS_PARALLELISM": "true" if stage == "format" else "false"}
            subprocess.run(cmd, check=True, env=env)
            stages[stage] = json.loads(res_file.read_text())
            print(f"data-bench: {rows:,} rows, {stage}: {stages[stage]}", file=sys.stderr, flush=True)
        clean = json.loads((work / "reports" / "clean.json").read_text())
    total = sum(s["seconds"] for s in stages.values())
    return {
        "rows": rows,
        "git_sha": git_sha(),
        "invocation": started,  # runs of one invocation ran back to back: only their times compare
        "stages": stages,
        "seconds": {k: v["seconds"] for k, v in stages.items()},
        "total_seconds": round(total, 2),
        "cpu_seconds": round(sum(s["cpu_seconds"] for s in stages.values()), 2),
        "ms_per_row": round(1000 * total / rows, 3),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
        "peak_stage": max(stages, key=lambda k: stages[k]["peak_rss_mb"]),
        "worker_peak_rss_mb": max(s["worker_peak_rss_mb"] for s in stages.values()),
        "rows_kept": clean["rows_kept"],
        "clean_seconds_by_step": clean["seconds"],
        "tokenizer": "base model" if use_tok else "whitespace estimate",
    }


def _ms_per_row(run: dict[str, Any], stages: set[str]) -> float:
    return 1000 * sum(run["seconds"][k] for k in stages) / run["rows"]


def _targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_rows = {r["rows"]: r for r in runs}
    out: list[dict[str, Any]] = []
    if 27_000 in by_rows:
        run = by_rows[27_000]
        s = round(sum(run["seconds"][k] for k in STAGES[:4]), 2)
        out.append({"name": "27,000 rows ingest+clean+split+quality", "goal": "<= 120 s", "measured": s, "met": s <= 120})
    for rows, goal in PEAK_GOAL_MB.items():
        if rows in by_rows:
            peak = by_rows[rows]["peak_rss_mb"]
            out.append({"name": f"{rows:,} rows: peak RSS of any data stage (MB)", "goal": f"< {goal:,}",
                        "measured": peak, "met": peak < goal})  # fmt: skip
    big, mid = by_rows.get(max(by_rows, default=0)), by_rows.get(270_000)
    if mid and big and big["rows"] > mid["rows"] and big.get("invocation") and big.get("invocation") == mid.get("invocation"):
        common = set(big["seconds"]) & set(mid["seconds"])  # a size kept from an earlier run may lack a stage
        ratio = round(_ms_per_row(big, common) / _ms_per_row(mid, common), 2)
        out.append({"name": f"{big['rows']:,} rows: time per row vs 270,000 rows ({'+'.join(s for s in STAGES if s in common)})",
                    "goal": f"<= {TIME_PER_ROW_GOAL}x", "measured": ratio, "met": ratio <= TIME_PER_ROW_GOAL})  # fmt: skip
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_scaling(sizes: list[int], params_path: Path, output: Path, keep_other_sizes: bool = False) -> dict[str, Any]:
    """Time every data stage at each size (fresh processes); write `output` after each size.

    keep_other_sizes: runs of sizes not measured now stay in the file (each names the commit it ran
    at; only when they ran on the same CPU model), so a 1M-row run need not be repeated for a change
    that a smaller one shows. Times are compared (the time-per-row target) only between runs of one
    invocation: another session's seconds come from another machine's load."""
    old = json.loads(output.read_text()) if output.exists() else {}
    previous = old.get("previous")
    if old.get("runs") and old.get("git_sha") != git_sha():
        previous = {"git_sha": old.get("git_sha"), "cpu_model": old.get("cpu_model"),
                    "runs": [{k: r.get(k) for k in ("rows", "total_seconds", "peak_rss_mb")} for r in old["runs"]]}  # fmt: skip
    kept = []
    if keep_other_sizes and old.get("cpu_model") == _cpu_model():
        kept = [r | {"git_sha": r.get("git_sha", old.get("git_sha"))} for r in old.get("runs", []) if r["rows"] not in sizes]
    result: dict[str, Any] = {
        "runs": [],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_sha": git_sha(),
        "note": "each stage in a fresh process; peak_rss_mb is the stage process, worker_peak_rss_mb the "
        "largest of its child processes (the label model's cross-validation workers in clean; git and dvc in "
        "quality), which run beside it; each run names the commit it was measured at",
        "previous": previous,
    }
    measured: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for n in sizes:
        measured.append(_one_size(n, params_path, started))
        result["runs"] = sorted(measured + kept, key=lambda r: r["rows"])
        result["targets"] = _targets(result["runs"])
        write_json(output, result)
    return result


if __name__ == "__main__":  # one stage at one size, in its own process
    stage, n, params_file, work, result_file = sys.argv[1:6]
    figures = _run_stage(stage, int(n), Path(params_file), Path(work))
    Path(result_file).write_text(json.dumps(figures))
