"""The train stage runner: `run_train(params, paths)`, what stages/train.py and `supportlm train` call.

Reads data/formatted/{train,val}.jsonl and models/base/; writes
- models/adapter/: the best checkpoint's adapter, the tokenizer and supportlm_train.json;
- models/checkpoints/<run_key>/: checkpoints + log.jsonl (kept across reruns, so a killed run resumes);
- reports/train.json: the metrics contract of DESIGN.md plus curves, speed and memory figures, and
  `targets` (speedup >= 1.5x, val loss below base) for reports/index.md; reports/train.md (those numbers
  in a table, and the loss plot);
- reports/plots/train/loss.png: train and val loss vs step, the base model's val loss dashed;
- mlflow.db + mlruns/ (train.tracking=mlflow).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supportlm.config import Params
from supportlm.io import write_json
from supportlm.lineage import dvc_hashes, flatten, git_sha, params_hash
from supportlm.logs import ensure_logging
from supportlm.paths import Paths
from supportlm.render import Code, Document, fmt, pct
from supportlm.runtime import cpu_info
from supportlm.train.tracking import make_tracker, system_info

if TYPE_CHECKING:  # torch is imported only when the stage runs, so `supportlm --help` stays fast
    from supportlm.train.result import TrainResult
    from supportlm.train.trainer import LoRAFinetuneRecipe

log = logging.getLogger("supportlm.train")
SPEEDUP_GOAL = 1.5  # DESIGN.md: grouped/packed batching vs the naive padded baseline


def checkpoints_dir(paths: Paths) -> Path:
    return paths.root / "models" / "checkpoints"


def run_train(params: Params, paths: Paths, progress: bool = True) -> dict[str, Any]:
    """Fine-tune, export the best adapter, benchmark the padded baseline, track, report.

    With `train.num_processes` > 1 it starts itself that many times under `accelerate launch` and
    returns rank 0's report; inside such a group, ranks other than 0 train and return {}."""
    from supportlm.train.baseline import benchmark_padded
    from supportlm.train.distributed import launch, launched_world_size
    from supportlm.train.trainer import LoRAFinetuneRecipe

    ensure_logging()
    t0 = time.perf_counter()
    p = params.train
    if p.num_processes > 1 and launched_world_size() == 1:
        return launch(p.num_processes, params, paths.root)
    recipe = LoRAFinetuneRecipe(
        p,
        params.lora,
        model_dir=paths.base_model,
        data_dir=paths.formatted,
        checkpoints_root=checkpoints_dir(paths),
        progress=progress,
    )
    recipe.setup()
    if not recipe.dist.is_main:  # the collective work only: rank 0 tracks, exports and reports
        try:
            recipe.train()
            benchmark_padded(recipe, p.baseline_steps)
        finally:
            recipe.cleanup()
        return {}
    tracker = _start_tracker(params, paths, recipe)
    try:
        result = recipe.train()
        tracker.flush()
        adapter = recipe.export_adapter(paths.adapter)  # the MLflow run id (random) stays in train.json
        baseline = benchmark_padded(recipe, p.baseline_steps)
        report = build_report(params, paths, recipe, result, baseline, tracker.run_id)
        report["stage_seconds"] = round(time.perf_counter() - t0, 1)
        plot_losses(result, paths.plots / "train" / "loss.png")
        tracker.log_metrics(
            {k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None}
        )
        tracker.log_adapter(adapter)
        report["registered_model_version"] = getattr(tracker, "model_version", None)
        write_json(paths.reports / "train.json", report)
        write_markdown(report, paths.reports / "train.md")
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    finally:
        recipe.cleanup()
    log.info(
        "train: best val loss %.4f at step %d (base %.4f), %s useful tok/s vs %s padded (x%.2f), %.0f s",
        report["best_val_loss"],
        report["best_step"],
        report["base_val_loss"],
        f"{report['tokens_per_s']:,.0f}",
        f"{report['baseline_tokens_per_s'] or 0:,.0f}",
        report["speedup_vs_baseline"] or 0,
        report["stage_seconds"],
    )
    return report


def _start_tracker(params: Params, paths: Paths, recipe: LoRAFinetuneRecipe) -> Any:
    """Open (or, after a kill, reopen) the tracking run and log params + lineage."""
    state_file = recipe.run_dir / "tracking.json"
    previous = json.loads(state_file.read_text()) if state_file.exists() else {}
    resume_id = previous.get("run_id") if previous.get("kind") == params.train.tracking else None
    tracker = make_tracker(
        params.train.tracking,
        paths.root,
        run_name=f"train-{recipe.run_key[:8]}",
        tags={"stage": "train", "method": params.train.method},
        resume_run_id=resume_id,
    )
    if tracker.run_id:
        state_file.write_text(json.dumps({"kind": params.train.tracking, "run_id": tracker.run_id}))
    cfg = recipe.model_config
    tracker.log_params(
        {
            **flatten(params.train.model_dump(mode="json"), "train."),
            **flatten(params.lora.model_dump(mode="json"), "lora."),
            "model.base": params.base_model.base,
            "model.type": cfg.model_type,
            "model.hidden_size": getattr(cfg, "hidden_size", None),
            "model.layers": getattr(cfg, "num_hidden_layers", None),
            "model.vocab_size": getattr(cfg, "vocab_size", None),
            "model.trainable_params": recipe.trainable_params,
            "model.target_modules": ",".join(recipe.target_modules),
            "data.train_md5": recipe.data_info["train_md5"],
            "data.val_md5": recipe.data_info["val_md5"],
            "data.train_examples": recipe.data_info["train"]["examples"],
            "data.val_examples": recipe.data_info["val"]["examples"],
            **{f"data.dvc.{k}": v for k, v in dvc_hashes(["format"], paths.root).items()},
            "git_sha": git_sha(paths.root),
            "run_key": recipe.run_key,
            "precision": recipe.precision,
            **flatten(system_info(), "system."),
        }
    )

    def on_log(rec: dict[str, Any]) -> None:
        kind = rec.get("type")
        if kind == "train":
            keys = ("loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb")
            tracker.log_metrics({f"train/{k}": rec[k] for k in keys}, step=rec["step"])
        elif kind == "eval":
            tracker.log_metrics({"val/loss": rec["val_loss"]}, step=rec["step"])
            tracker.flush()  # one sqlite batch per eval keeps MLflow off the step time
        elif kind == "base":
            tracker.log_metrics({"val/base_loss": rec["val_loss"]}, step=0)

    recipe.on_log = on_log
    return tracker


def build_report(
    params: Params,
    paths: Paths,
    recipe: LoRAFinetuneRecipe,
    result: TrainResult,
    baseline: dict[str, Any],
    run_id: str | None,
) -> dict[str, Any]:
    base_tps = baseline.get("baseline_tokens_per_s")
    speedup = round(result.tokens_per_s / base_tps, 2) if base_tps else None
    return {
        "base_val_loss": round(result.base_val_loss, 6),
        "best_val_loss": round(result.best_val_loss, 6),
        "best_step": result.best_step,
        "val_loss_reduction": round(result.base_val_loss - result.best_val_loss, 6),
        "tokens_per_s": result.tokens_per_s,
        "baseline_tokens_per_s": base_tps,
        "speedup_vs_baseline": speedup,
        "padding_waste": result.padding_waste,
        "baseline_padding_waste": baseline.get("baseline_padding_waste"),
        "peak_mem_mb": result.peak_mem_mb,
        "baseline_peak_mem_mb": baseline.get("baseline_peak_mem_mb"),
        "mlflow_run_id": run_id,
        "tracking": params.train.tracking,
        "device": result.device,
        "hardware": {"cpu": cpu_info()},
        "precision": result.precision,
        "method": result.method,
        "batching": params.train.batching,
        "num_processes": params.train.num_processes,
        "strategy": params.train.strategy if params.train.num_processes > 1 else "one process",
        "steps": result.steps,
        "total_steps": result.total_steps,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "train_seconds": result.train_seconds,
        "trainable_params": recipe.trainable_params,
        "target_modules": recipe.target_modules,
        "run_key": recipe.run_key,
        "params_hash": params_hash(
            {"train": params.train.model_dump(mode="json"), "lora": params.lora.model_dump(mode="json")}
        ),
        "base_model": params.base_model.base,
        "data": {
            "train_examples": result.data["train"]["examples"],
            "val_examples": result.data["val"]["examples"],
            "train_tokens": result.data["train_tokens"],
            "train_supervised_tokens": result.data["train_supervised_tokens"],
            "truncated_train_rows": result.data["train"]["truncated"],
            "tokens_from": result.data["train"]["source"],
            "train_md5": result.data["train_md5"],
            "val_md5": result.data["val_md5"],
            "git_sha": git_sha(paths.root),
        },
        "baseline": baseline,
        "targets": [
            {
                "name": "useful tokens/s vs naive padded batching",
                "goal": f">= {SPEEDUP_GOAL:g}x",
                "measured": speedup,
                "display": f"{speedup:.2f}x" if speedup is not None else "n/a",
                "met": speedup is not None and speedup >= SPEEDUP_GOAL,
            },
            {
                "name": "best val loss below the base model's",
                "goal": f"< {result.base_val_loss:.4f}",
                "measured": round(result.best_val_loss, 4),
                "met": result.best_val_loss < result.base_val_loss,
            },
        ],
        "val_curve": result.val_curve,
        "train_curve": [{"step": r["step"], "loss": round(r["loss"], 6)} for r in result.train_curve],
    }


def plot_losses(result: TrainResult, out: Path) -> Path:
    """Train loss per step, val loss per eval, base val loss dashed, best step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if result.train_curve:
        steps = [r["step"] for r in result.train_curve]
        loss = [r["loss"] for r in result.train_curve]
        ax.plot(steps, loss, color="tab:blue", alpha=0.35, lw=1, label="train loss (per step)")
        w = max(1, len(loss) // 10)  # a step is only 8 rows: the per-step loss is noisy
        if w > 1:
            smooth = [
                sum(loss[max(0, i - w + 1) : i + 1]) / len(loss[max(0, i - w + 1) : i + 1])
                for i in range(len(loss))
            ]
            ax.plot(steps, smooth, color="tab:blue", lw=1.6, label=f"train loss ({w}-step mean)")
    if result.val_curve:
        ax.plot(
            [r["step"] for r in result.val_curve],
            [r["val_loss"] for r in result.val_curve],
            color="tab:orange",
            marker="o",
            ms=4,
            lw=1.6,
            label="val loss",
        )
    ax.axhline(
        result.base_val_loss, color="gray", ls="--", lw=1.2, label=f"base val loss {result.base_val_loss:.3f}"
    )
    ax.scatter(
        [result.best_step],
        [result.best_val_loss],
        s=80,
        facecolors="none",
        edgecolors="tab:red",
        zorder=5,
        label=f"best: {result.best_val_loss:.3f} @ step {result.best_step}",
    )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens, nats)")
    ax.set_title(
        f"{result.method} fine-tune, {result.precision} on {result.device}"
        + (" (early stop)" if result.stopped_early else "")
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_markdown(report: dict[str, Any], out: Path) -> Path:
    """reports/train.md: the numbers of train.json in a table, for reports/index.md to link."""
    doc = Document()
    doc.h(1, "Training")
    doc.table(["metric", "value"], _summary_rows(report))
    doc.image("plots/train/loss.png", "loss")
    doc.write(out)
    return out


def _summary_rows(r: dict[str, Any]) -> list[tuple[str, Any]]:
    run_id, speedup = r["mlflow_run_id"], r["speedup_vs_baseline"]
    return [
        ("base val loss", fmt(r["base_val_loss"], ".4f")),
        ("best val loss (step)", f"{fmt(r['best_val_loss'], '.4f')} ({r['best_step']})"),
        ("steps (of planned)", f"{r['steps']} ({r['total_steps']}), early stop: {fmt(r['stopped_early'])}"),
        ("useful tokens/s", fmt(r["tokens_per_s"], ",.1f")),
        ("padded baseline tokens/s", fmt(r["baseline_tokens_per_s"], ",.1f")),
        ("speedup vs baseline", None if speedup is None else f"{speedup:.2f}x"),
        ("padding waste (baseline)", f"{pct(r['padding_waste'])} ({pct(r['baseline_padding_waste'])})"),
        (
            "peak memory MB (baseline)",
            f"{fmt(r['peak_mem_mb'], ',.0f')} ({fmt(r['baseline_peak_mem_mb'], ',.0f')})",
        ),
        (
            "train seconds / stage seconds",
            f"{fmt(r['train_seconds'], ',.0f')} / {fmt(r.get('stage_seconds'), ',.0f')}",
        ),
        ("method / precision / device", f"{r['method']} / {r['precision']} / {r['device']}"),
        ("batching", r["batching"]),
        ("MLflow run", Code(run_id) if run_id else None),
        ("run key / params hash", [Code(r["run_key"]), " / ", Code(r["params_hash"])]),
    ]
