"""`supportlm` command line (Typer): one command per stage plus tools.

Every command validates params.yaml first (unknown key or bad value -> exit 2 with
the key path, before any work), prints the resolved block it uses, and turns
user errors into one red line instead of a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from supportlm.errors import SupportLMError

app = typer.Typer(help="supportlm: customer-support data -> fine-tuned, quantized, served LM.", no_args_is_help=True)
params_app = typer.Typer(help="Validate and show params.yaml; apply profiles.", no_args_is_help=True)
app.add_typer(params_app, name="params")
err = Console(stderr=True)
out = Console()

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file to validate and use")]


# stage -> "module:runner"; imported only when that command runs (`--help` stays fast). The same runner
# is the one stages/<stage>.py calls (tests/unit/test_stage_runners.py compares them).
STAGE_RUNNERS = {
    "ingest": "supportlm.data.ingest:run_ingest",
    "base_model": "supportlm.train.base_model:run_base_model",
    "clean": "supportlm.data.clean:run_clean",
    "split": "supportlm.data.split:run_split",
    "format": "supportlm.data.format:run_format",
    "quality": "supportlm.data.quality:run_quality",
    "train": "supportlm.train.run:run_train",
    "merge": "supportlm.train.merge:run_merge",
    "evaluate": "supportlm.evaluate.run:run_evaluate",
    "quantize": "supportlm.quantize.run:run_quantize",
    "bench": "supportlm.bench.run:run_bench",
    "fairness": "supportlm.bench.fairness:run_fairness",
    "report": "supportlm.report.run:run_report",
}


def guarded(fn: Callable[[], Any]) -> Any:
    """Run fn; a SupportLMError becomes a one-line message and its exit code (no traceback)."""
    try:
        return fn()
    except SupportLMError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _stage_command(name: str, target: str) -> None:
    def command(params: ParamsOpt = Path("params.yaml")) -> None:
        import importlib

        from supportlm.stage import StageFailed, run_stage

        module, func = target.split(":")
        try:
            run_stage(name, getattr(importlib.import_module(module), func), params)
        except StageFailed as exc:
            raise typer.Exit(exc.exit_code) from None

    command.__doc__ = f"Run the `{name}` stage's code outside DVC (the same runner its stages/{name}.py calls)."
    app.command(name.replace("_", "-"))(command)


for _name, _target in STAGE_RUNNERS.items():
    _stage_command(_name, _target)


@params_app.command("check")
def params_check(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate params.yaml and print the resolved values (defaults filled in)."""
    from supportlm.config import load_params

    p = guarded(lambda: load_params(params))
    out.print_json(p.model_dump_json())


@params_app.command("apply-profile")
def apply_profile(
    name: Annotated[str, typer.Argument(help="profiles/<name>.yaml to merge into params.yaml: cpu, gpu, smoke")],
    params: ParamsOpt = Path("params.yaml"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="BLOCK.KEY=VALUE on top, e.g. train.num_processes=4")] = None,
) -> None:
    """Merge a profile overlay into params.yaml (comments kept); the result is validated first."""
    from supportlm.profiles import apply_profile as apply

    changed = guarded(lambda: apply(name, params, set_))
    out.print(f"profile [bold]{name}[/]: {len(changed)} value(s) set" + "".join(f"\n  {k}" for k in changed))


@app.command("sweep")
def sweep(
    params: ParamsOpt = Path("params.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the dvc exp commands, queue nothing")] = False,
) -> None:
    """Hyperparameter sweep of the train stage (params.yaml `sweep:`) via `dvc exp run --queue` + `--run-all`."""
    import yaml

    from supportlm.config import load_params
    from supportlm.train.sweep import run_sweep

    def go() -> dict[str, Any]:
        parsed = load_params(params)
        raw = yaml.safe_load(params.read_text(encoding="utf-8"))
        return run_sweep(Path("."), parsed, raw, dry_run=dry_run)

    result = guarded(go)
    if not dry_run:
        best = result["best"]
        verdict = (
            f"best {best['name']} val loss {best['best_val_loss']:.4f} ({result['apply_command']})"
            if best
            else "no trial finished (see `dvc queue logs`)"
        )
        out.print(
            f"{result['n_ok']}/{result['n_trials']} trial(s) ok in {result['wall_seconds'] / 60:.1f} min; "
            f"{verdict}; wrote reports/sweep.{{json,md}}",
            highlight=False,
        )


@app.command("data-bench")
def data_bench(
    rows: Annotated[
        list[int] | None, typer.Option("--rows", help="synthetic row counts to time (repeatable; default 27000, 270000, 1000000)")
    ] = None,
    output: Annotated[Path, typer.Option(help="where the figures go")] = Path("reports/data_scaling.json"),
    params: ParamsOpt = Path("params.yaml"),
    keep_other_sizes: Annotated[
        bool, typer.Option(help="keep the file's runs of sizes not timed now (same CPU model; each names its commit)")
    ] = False,
) -> None:
    """Time ingest, clean, split, quality and format on N synthetic rows (each stage in a fresh process): time, CPU, peak memory."""
    from supportlm.data.scaling import run_scaling

    result = guarded(lambda: run_scaling(rows or [27_000, 270_000, 1_000_000], params, output, keep_other_sizes))
    out.print_json(json.dumps(result))


human_app = typer.Typer(help="Blind A/B human evaluation: export a sheet, score filled sheets.", no_args_is_help=True)
app.add_typer(human_app, name="human-eval")


@human_app.command("export")
def human_export(
    generations: Annotated[Path, typer.Option(help="evaluate stage generations")] = Path(
        "reports/eval_generations.jsonl"
    ),
    sheet: Annotated[Path, typer.Option(help="blind CSV sheet for raters")] = Path("reports/human_eval_sheet.csv"),
    key: Annotated[Path, typer.Option(help="A/B -> system key (keep away from raters)")] = Path(
        "reports/human_eval_key.csv"
    ),
    rows: Annotated[int | None, typer.Option(help="rows in the sheet (default all)")] = None,
    seed: Annotated[int, typer.Option(help="shuffle seed")] = 42,
) -> None:
    """Write a blind, shuffled base-vs-fine-tuned A/B sheet (CSV + self-contained HTML form)."""
    from supportlm.evaluate import human

    result = guarded(lambda: human.export_from_generations(generations, sheet, key, rows=rows, seed=seed))
    out.print(result)


@human_app.command("score")
def human_score(
    files: Annotated[list[Path], typer.Argument(help="filled sheets (CSV)")],
    key: Annotated[Path, typer.Option(help="the key written by export")] = Path("reports/human_eval_key.csv"),
    output: Annotated[Path, typer.Option(help="aggregated result")] = Path("reports/human_eval.json"),
) -> None:
    """Aggregate filled sheets into the fine-tuned win rate with a 95% Wilson interval."""
    from supportlm.evaluate import human

    result = guarded(lambda: human.score(files, key, out_json=output))
    out.print_json(json.dumps(result, default=str))


@app.command("batch")
def batch_cmd(
    input: Annotated[Path, typer.Argument(help="JSONL rows with `messages` or `prompt`")],
    output: Annotated[Path, typer.Argument(help="JSONL out; a rerun skips ids already there")],
    model: Annotated[str, typer.Option(help="HF model dir or .gguf file")] = "models/gguf/model-served.gguf",
    max_new_tokens: Annotated[int, typer.Option(help="tokens per reply")] = 128,
    batch_size: Annotated[int, typer.Option(help="rows per generation batch")] = 8,
    errors: Annotated[Path | None, typer.Option(help="bad input rows (line + reason)")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="system prompt for `prompt` rows")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: idle cores)")] = None,
) -> None:
    """Offline batch inference with a progress bar; resumable; bad rows reported by line number."""
    from supportlm.serve.batch import batch

    summary = guarded(
        lambda: batch(
            input, output, model, max_new_tokens=max_new_tokens, batch_size=batch_size,
            errors_path=errors, system_prompt=system_prompt, threads=threads,
        )
    )  # fmt: skip
    out.print_json(json.dumps(summary, default=str))


@app.command("docker-plan")
def docker_plan_cmd(
    root: Annotated[Path, typer.Option(help="the checkout as the host sees it (mounted at /workspace)")],
    uid: Annotated[int, typer.Option(help="the caller's uid: stages run as it")],
    gid: Annotated[int, typer.Option(help="the caller's gid")],
    hf_home: Annotated[Path, typer.Option(help="the host's HF cache folder (mounted at /cache/huggingface)")],
    profile: Annotated[str | None, typer.Option(help="profile applied first (smoke|cpu|gpu; none: params.yaml as is)")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="the host has a GPU: stages get --gpus all")] = False,
    image: Annotated[str | None, typer.Option(help="training image (default supportlm-train:<version>)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="BLOCK.KEY=VALUE on top of the profile")] = None,
) -> None:
    """Print the container plan (`label<TAB>shell line` per step) that scripts/docker_all.sh runs on the host."""
    from supportlm.docker_plan import IMAGE, Host, plan, render

    host = Host(root=root, uid=uid, gid=gid, hf_home=hf_home, gpu=gpu)
    sys.stdout.write(guarded(lambda: render(plan(profile, host, image or IMAGE, sets=set_ or []))))


@app.command("wait-url")
def wait_url_cmd(
    url: str,
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 600.0,
) -> None:
    """Wait until `url` answers 2xx (an engine loading its weights); exit 1 naming the URL on timeout."""
    from supportlm.runtime import wait_http

    guarded(lambda: wait_http(url, timeout))


@app.command("containers-report")
def containers_report_cmd(
    cold: Annotated[bool, typer.Option("--cold", help="prune BuildKit's cache first to time cold builds (~20 min)")] = False,
    smoke: Annotated[bool, typer.Option(help="time make all DOCKER=1 PROFILE=smoke against the host")] = True,
    compose: Annotated[bool, typer.Option(help="time the compose stack to ready")] = True,
    report: Annotated[Path, typer.Option(help="where to write")] = Path("reports/containers.json"),
) -> None:
    """Image sizes, build times, the smoke pipeline in containers vs the host, compose time to ready."""
    import tempfile

    from supportlm.bench.containers import measure, write_report

    def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="supportlm-containers-") as tmp:
            record = measure(Path.cwd(), Path(sys.executable).parent, Path(tmp), cold=cold, smoke=smoke, compose=compose)
        write_report(report, record)
        return record

    result = guarded(go)
    out.print_json(json.dumps({k: v for k, v in result.items() if k != "comparison"}, default=str))


@app.command("serve")
def serve_cmd(
    params: ParamsOpt = Path("params.yaml"),
    host: Annotated[str | None, typer.Option(help="bind address (default serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default serve.port)")] = None,
) -> None:
    """Start llama-server (or use SUPPORTLM_ENGINE_URL) and the gateway; SIGTERM drains in-flight requests."""
    from supportlm.config import load_params
    from supportlm.serve.server import serve
    from supportlm.serve.settings import load_settings

    def go() -> None:
        p = load_params(params)
        out.print(f"[bold]serve[/] params: {p.serve.model_dump_json()}", highlight=False)
        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        serve(load_settings(p.serve, **overrides))  # SUPPORTLM_* env over params; --host/--port over both

    guarded(go)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
