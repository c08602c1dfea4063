"""Scaling benchmark of the data stages: ingest+clean+split+quality at N synthetic rows.

Each size runs in a fresh subprocess so its peak memory is its own. The goal from
the data issue: 27,000 rows in <= 2 minutes on 2 cores and 270,000 rows in <= 12x
that (near-linear: nothing compares all pairs). Figures go to
reports/data_scaling.json (not reports/clean.json: that file is the clean stage's
DVC output, and writing benchmark figures into it would make `dvc status` dirty).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from supportlm.config import load_params, parse_params
from supportlm.io import write_json
from supportlm.lineage import git_sha, peak_rss_mb
from supportlm.paths import Paths


def _one(rows: int, params_path: Path, workdir: Path) -> dict[str, Any]:
    """Run the four data stages in this process; return per-stage seconds and peak memory."""
    from supportlm.data.clean import run_clean
    from supportlm.data.ingest import run_ingest
    from supportlm.data.quality import run_quality
    from supportlm.data.split import run_split

    raw = load_params(params_path).model_dump(mode="json")
    raw["ingest"]["sources"] = [{"name": "synthetic", "type": "synthetic", "rows": rows}]
    params = parse_params(raw)
    paths = Paths(root=workdir)
    base = Path("models/base")
    use_tok = (base / "tokenizer.json").exists()
    if use_tok:
        paths.base_model.parent.mkdir(parents=True, exist_ok=True)
        paths.base_model.symlink_to(base.resolve())
    seconds: dict[str, float] = {}
    for name, fn in (
        ("ingest", lambda: run_ingest(params, paths)),
        ("clean", lambda: run_clean(params, paths, use_tokenizer=use_tok, progress=False)),
        ("split", lambda: run_split(params, paths)),
        ("quality", lambda: run_quality(params, paths)),
    ):
        t = time.perf_counter()
        fn()
        seconds[name] = round(time.perf_counter() - t, 2)
    clean = json.loads((paths.reports / "clean.json").read_text())
    return {
        "rows": rows,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "peak_rss_mb": peak_rss_mb(),
        "rows_kept": clean["rows_kept"],
        "clean_seconds_by_step": clean["seconds"],
        "tokenizer": "base model" if use_tok else "whitespace estimate",
    }


def run_scaling(sizes: list[int], params_path: Path, output: Path) -> dict[str, Any]:
    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"supportlm-bench-{n}-") as tmp:
            res_file = Path(tmp) / "result.json"
            cmd = [sys.executable, "-m", "supportlm.data.scaling", str(n), str(params_path), tmp, str(res_file)]
            subprocess.run(cmd, check=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
            runs.append(json.loads(res_file.read_text()))
    small = runs[0]
    result: dict[str, Any] = {
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "git_sha": git_sha(),
        "targets": [
            {
                "name": f"{small['rows']:,} rows ingest+clean+split+quality",
                "goal": "<= 120 s",
                "measured": small["total_seconds"],
                "met": small["total_seconds"] <= 120 if small["rows"] == 27_000 else None,
            }
        ],
    }
    if len(runs) > 1:
        big = runs[-1]
        ratio = big["total_seconds"] / max(1e-9, small["total_seconds"])
        size_ratio = big["rows"] / small["rows"]
        result["time_ratio"] = round(ratio, 2)
        result["size_ratio"] = round(size_ratio, 2)
        result["targets"].append(
            {
                "name": f"{big['rows']:,} rows vs {small['rows']:,} rows time ratio",
                "goal": f"<= {1.2 * size_ratio:g}x (12x for 10x rows)",
                "measured": round(ratio, 2),
                "met": ratio <= 1.2 * size_ratio,
            }
        )
    write_json(output, result)
    return result


if __name__ == "__main__":  # the per-size subprocess
    n, params_file, work, result_file = sys.argv[1:5]
    out = _one(int(n), Path(params_file), Path(work))
    Path(result_file).write_text(json.dumps(out))
    print(yaml.safe_dump(out, sort_keys=False))
