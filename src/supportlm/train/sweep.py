"""Hyperparameter sweep over the train stage with DVC's experiment queue.

    make sweep                      # = supportlm sweep, then dvc repro report
    supportlm sweep --dry-run       # print the queue commands only

Each trial is one `dvc exp run --queue --name <sweep>-<i> -S key=value ... train` (the search space and
the per-trial overrides come from the `sweep:` block of params.yaml); `dvc exp run --run-all` then runs the
queue in temporary workspaces, so the main workspace, its models and its dvc.lock are never touched and
every trial is an ordinary DVC experiment (`dvc exp show`, `dvc exp apply <name>`). The trials' MLflow
runs go to this project's mlflow.db (MLFLOW_TRACKING_URI is set for the queue workers).

Writes reports/sweep.json (every trial's params, best/base val loss, val curve, status, the best trial),
reports/sweep.md and reports/plots/sweep/val_loss.png.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from supportlm.config import Params, SweepParams, SweepValue, parse_params
from supportlm.errors import ConfigError, SupportLMError
from supportlm.io import write_json
from supportlm.lineage import flatten, git_sha
from supportlm.render import Document, fmt

log = logging.getLogger(__name__)
TRAIN_METRICS = "reports/train.json"


# ---------------------------------------------------------------- planning


def plan_trials(sweep: SweepParams) -> list[dict[str, SweepValue]]:
    """The trials' search-space values: the whole grid, or `trials` distinct seeded draws from it."""
    keys = list(sweep.space)
    grid = [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep.space[k] for k in keys))
    ]
    if sweep.method == "grid" or sweep.trials >= len(grid):
        return grid
    return random.Random(sweep.seed).sample(grid, sweep.trials)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def validate_trials(
    raw_params: dict[str, Any], trials: list[dict[str, SweepValue]], fixed: dict[str, Any]
) -> None:
    """Every trial's params must validate as a whole params.yaml: fail before anything is queued."""
    for i, trial in enumerate(trials):
        raw = copy.deepcopy(raw_params)
        for key, value in {**fixed, **trial}.items():
            set_dotted(raw, key, value)
        try:
            parse_params(raw, source=f"sweep trial {i} ({format_overrides(trial)})")
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}\n(values come from params.yaml `sweep.space` / `sweep.fixed`)"
            ) from None


def format_value(value: SweepValue) -> str:
    """A -S value DVC parses back to the same YAML scalar (null, true, 0.0005, cosine)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def format_overrides(values: dict[str, SweepValue]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items())


def queue_commands(names: list[str], trials: list[dict[str, SweepValue]], fixed: dict[str, SweepValue],
                   dvc: str = "dvc") -> list[list[str]]:  # fmt: skip
    cmds = []
    for name, trial in zip(names, trials, strict=True):
        cmd = [dvc, "exp", "run", "--queue", "--name", name]
        for key, value in {**fixed, **trial}.items():
            cmd += ["-S", f"{key}={format_value(value)}"]
        cmds.append([*cmd, "train"])
    return cmds


# ---------------------------------------------------------------- reading DVC's results


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def experiments_by_name(show_json: Any) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` -> {experiment name: {"params": params.yaml data, "metrics": train.json data}}.

    The JSON nests experiments under their baseline commit; every record with a `name` and a `data`
    block is an experiment (or the baseline) and carries its params and metrics files.
    """
    found: dict[str, dict[str, Any]] = {}
    for rec in _walk(show_json):
        name, data = rec.get("name"), rec.get("data")
        if not isinstance(name, str) or not isinstance(data, dict):
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((data.get("metrics") or {}).get(TRAIN_METRICS) or {}).get("data") or {}
        if params or metrics:
            found[name] = {"params": params, "metrics": metrics, "rev": rec.get("rev")}
    return found


def git_train_json(root: Path) -> Callable[[str], dict[str, Any]]:
    """rev -> that experiment's full reports/train.json (a git-tracked metric: DVC's view drops its lists)."""

    def read(rev: str) -> dict[str, Any]:
        res = subprocess.run(["git", "show", f"{rev}:{TRAIN_METRICS}"], cwd=root, capture_output=True, text=True,
                             check=False)  # fmt: skip
        return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else {}

    return read


def collect(names: list[str], trials: list[dict[str, SweepValue]], show_json: Any,
            read_train_json: Callable[[str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per trial in queue order; a trial with no train metrics is `failed` (see `dvc queue logs`).

    `dvc exp show --json` keeps only a metrics file's scalars, so the val curve comes from the trial's own
    commit (`read_train_json(rev)`) when given.
    """
    exps = experiments_by_name(show_json)
    rows = []
    for name, trial in zip(names, trials, strict=True):
        exp = exps.get(name)
        m = (exp or {}).get("metrics") or {}
        if exp and exp.get("rev") and read_train_json:
            m = {**m, **read_train_json(exp["rev"])}
        ok = m.get("best_val_loss") is not None
        rows.append(
            {
                "name": name,
                "params": trial,
                "status": "ok" if ok else "failed",
                "rev": (exp or {}).get("rev"),
                "best_val_loss": m.get("best_val_loss"),
                "base_val_loss": m.get("base_val_loss"),
                "best_step": m.get("best_step"),
                "steps": m.get("steps"),
                "stopped_early": m.get("stopped_early"),
                "train_seconds": m.get("train_seconds"),
                "tokens_per_s": m.get("tokens_per_s"),
                "mlflow_run_id": m.get("mlflow_run_id"),
                "val_curve": m.get("val_curve") or [],
                # what DVC actually ran with (proves the -S overrides landed)
                "applied": {k: flatten(exp["params"]).get(k) for k in trial} if exp else {},
            }
        )
    return rows


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["status"] == "ok"]
    return min(ok, key=lambda r: r["best_val_loss"]) if ok else None


# ---------------------------------------------------------------- running


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None,
         stream: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    res = subprocess.run(cmd, check=False, cwd=cwd, env=env, timeout=timeout, text=True,
                         capture_output=not stream)  # fmt: skip
    if res.returncode != 0 and not stream:
        raise SupportLMError(
            f"`{' '.join(cmd)}` failed ({res.returncode}):\n{(res.stderr or res.stdout)[-2000:]}"
        )
    return res


def run_sweep(root: Path, params: Params, raw_params: dict[str, Any], dry_run: bool = False,
              dvc: str = "dvc") -> dict[str, Any]:  # fmt: skip
    """Plan + validate, queue every trial, run the queue, collect, write reports/sweep.{json,md} + plot."""
    sweep = params.sweep
    trials = plan_trials(sweep)
    validate_trials(raw_params, trials, sweep.fixed)
    stamp = time.strftime("%m%d-%H%M%S")
    names = [f"sweep-{stamp}-{i:02d}" for i in range(len(trials))]
    cmds = queue_commands(names, trials, sweep.fixed, dvc=dvc)
    if dry_run:
        for cmd in cmds:
            print(" ".join(cmd))
        print(f"{dvc} exp run --run-all --jobs {sweep.jobs}")
        return {"trials": len(trials), "dry_run": True}

    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{(root / 'mlflow.db').resolve()}"}
    t0 = time.perf_counter()
    for i, cmd in enumerate(cmds):
        log.info("queue %d/%d: %s", i + 1, len(cmds), format_overrides(trials[i]))
        _run(cmd, root, env=env)
    log.info("running %d trial(s) with %d worker(s) (dvc exp run --run-all)", len(cmds), sweep.jobs)
    timed_out = False
    try:
        # streamed, so DVC's own progress (stage output per trial) shows on the terminal
        _run([dvc, "exp", "run", "--run-all", "--jobs", str(sweep.jobs)], root, env=env, timeout=sweep.timeout_s,
             stream=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        timed_out = True
        log.warning("sweep.timeout_s=%s reached: killing the queue; unfinished trials are marked failed",
                    sweep.timeout_s)  # fmt: skip
        subprocess.run([dvc, "queue", "kill", *names], check=False, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    show = json.loads(_run([dvc, "exp", "show", "--json", "--no-fetch"], root).stdout or "[]")
    rows = collect(names, trials, show, git_train_json(root))
    result = summarize(sweep, rows, wall, timed_out)
    write_reports(root / "reports", result)
    return result


def summarize(
    sweep: SweepParams, rows: list[dict[str, Any]], wall_s: float, timed_out: bool
) -> dict[str, Any]:
    best = best_trial(rows)
    return {
        "method": sweep.method,
        "space": sweep.space,
        "fixed": sweep.fixed,
        "seed": sweep.seed,
        "jobs": sweep.jobs,
        "n_trials": len(rows),
        "n_ok": sum(r["status"] == "ok" for r in rows),
        "timed_out": timed_out,
        "wall_seconds": round(wall_s, 1),
        "best": None
        if best is None
        else {k: best[k] for k in ("name", "params", "best_val_loss", "best_step")},
        "apply_command": None if best is None else f"dvc exp apply {best['name']}",
        "trials": rows,
        "git_sha": git_sha(),
    }


# ---------------------------------------------------------------- reports


def build_document(result: dict[str, Any]) -> Document:
    """reports/sweep.md: the setup, the best trial and how to apply it, every trial ranked, the plot."""
    doc = Document()
    doc.h(1, "Hyperparameter sweep")
    doc.p(
        f"{result['method']} search, {result['n_ok']}/{result['n_trials']} trial(s) finished in "
        f"{result['wall_seconds'] / 60:.1f} min ({result['jobs']} worker(s)); every trial is a DVC "
        "experiment of the train stage (`dvc exp show`). Fixed for every trial: "
        f"{_overrides(result['fixed']) or 'nothing'}."
    )
    if best := result["best"]:
        doc.p(
            f"**Best: `{best['name']}`** — val loss {best['best_val_loss']:.4f} at step {best['best_step']} "
            f"with {_overrides(best['params'])}. Make it the workspace's: `{result['apply_command']}`, "
            "then `dvc repro`."
        )
    if result["timed_out"]:
        doc.p("**The sweep hit `sweep.timeout_s`; unfinished trials are marked failed.**")
    _trials_table(doc, result)
    doc.image("plots/sweep/val_loss.png", "val loss per trial")
    if failed := [r["name"] for r in result["trials"] if r["status"] != "ok"]:
        doc.p(f"Failed trials: {', '.join(failed)} — see `dvc queue logs <name>`.")
    return doc


def _overrides(values: dict[str, SweepValue]) -> str:
    return ", ".join(f"`{k}={format_value(v)}`" for k, v in values.items())


def _trials_table(doc: Document, result: dict[str, Any]) -> None:
    """Every trial ranked by best val loss (failed ones last); numeric columns right-aligned."""
    keys, best = list(result["space"]), (result["best"] or {}).get("name")
    metrics = ["best val loss", "base val loss", "best step", "train s", "tok/s"]
    numeric = [
        all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in result["space"][k]) for k in keys
    ]
    rows = [
        [
            f"`{r['name']}`" + (" **(best)**" if r["name"] == best else ""),
            *(format_value(r["params"][k]) for k in keys),
            fmt(r["best_val_loss"], ".4f"),
            fmt(r["base_val_loss"], ".4f"),
            r["best_step"],
            fmt(r["train_seconds"], ".0f"),
            fmt(r["tokens_per_s"], ".1f"),
            r["status"],
        ]
        for r in sorted(result["trials"], key=lambda r: (r["best_val_loss"] is None, r["best_val_loss"] or 0))
    ]
    right = [1 + i for i, num in enumerate(numeric) if num] + [1 + len(keys) + i for i in range(len(metrics))]
    doc.table(["trial", *keys, *metrics, "status"], rows, align_right=right)


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown of `build_document` (its one image is already relative to reports/)."""
    return build_document(result).to_md()


def plot(result: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in result["trials"] if r["status"] == "ok"]
    best = (result["best"] or {}).get("name")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for r in rows:
        curve = r["val_curve"]
        is_best = r["name"] == best
        ax1.plot([c["step"] for c in curve], [c["val_loss"] for c in curve], marker="o", ms=3,
                 lw=2.5 if is_best else 1.2, alpha=1 if is_best else 0.7,
                 label=r["name"].rsplit("-", 1)[-1] + (" (best)" if is_best else ""))  # fmt: skip
    ax1.set(xlabel="optimizer step", ylabel="val loss", title="val loss per trial")
    ax1.grid(alpha=0.3)
    if rows:
        ax1.legend(fontsize=8, ncol=2)
    ranked = sorted(rows, key=lambda r: r["best_val_loss"])
    labels = [r["name"].rsplit("-", 1)[-1] for r in ranked]
    ax2.barh(labels, [r["best_val_loss"] for r in ranked],
             color=["#1f77b4" if r["name"] == best else "#9aa5b1" for r in ranked])  # fmt: skip
    ax2.invert_yaxis()
    if ranked and ranked[0].get("base_val_loss"):
        ax2.axvline(ranked[0]["base_val_loss"], color="#d62728", ls="--", lw=1, label="base model")
        ax2.legend(fontsize=8)
    if ranked:  # zoom on the spread between trials (a bar axis from 0 hides it)
        values = [r["best_val_loss"] for r in ranked] + [ranked[0].get("base_val_loss") or 0]
        ax2.set_xlim(min(values) - 0.1, max(values) + 0.05)
    ax2.set(xlabel="best val loss (lower is better)", title="trials ranked")
    fig.tight_layout()
    path = out_dir / "val_loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(reports: Path, result: dict[str, Any]) -> None:
    result["plots"] = [str(plot(result, reports / "plots" / "sweep"))]
    write_json(reports / "sweep.json", result)
    build_document(result).write(reports / "sweep.md")
