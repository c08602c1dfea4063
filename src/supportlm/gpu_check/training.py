"""QLoRA runs for the check: in process, in child processes, and a SIGKILLed child resumed and compared."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supportlm.gpu_check.config import CheckConfig
from supportlm.gpu_check.probe import allocated_mb, free_memory
from supportlm.gpu_check.runner import Run

log = logging.getLogger("supportlm.gpu_check")


def train_params(cfg: CheckConfig, steps: int) -> tuple[Any, Any]:
    """TrainParams / LoraParams of the check: QLoRA, precision auto, grad checkpointing, 1 epoch = `steps`."""
    from supportlm.config import EarlyStopping, LoraParams, TrainParams

    train = TrainParams(
        seed=cfg.seed,
        method="qlora",
        train_rows=None,
        val_rows=None,
        max_length=cfg.seq_len,
        batching="grouped",
        epochs=1.0,
        max_steps=steps,
        batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.learning_rate,
        lr_scheduler="cosine",
        warmup_ratio=0.0,
        gradient_checkpointing=True,
        precision="auto",
        eval_steps=cfg.eval_steps,
        save_steps=cfg.save_steps,
        save_total_limit=100,
        early_stopping=EarlyStopping(patience=10_000),
        tracking="none",
        baseline_steps=0,
    )
    return train, LoraParams(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.05)


def run_recipe(
    train: Any,
    lora: Any,
    model_dir: Path,
    data_dir: Path,
    ckpt_root: Path,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """setup -> train -> result, with load time and the memory held once the 4-bit model is loaded."""
    import torch

    from supportlm.train.trainer import LoRAFinetuneRecipe

    t = time.perf_counter()
    recipe = LoRAFinetuneRecipe(
        train,
        lora,
        model_dir=model_dir,
        data_dir=data_dir,
        checkpoints_root=ckpt_root,
        progress=False,
        on_log=on_log,
    )
    recipe.setup()
    setup_s = time.perf_counter() - t
    loaded_mb = allocated_mb()
    result = dataclasses.asdict(recipe.train())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_log = [r for r in recipe.read_log() if r.get("type") == "train"]
    result |= {
        "setup_s": round(setup_s, 2),
        "loaded_mem_mb": loaded_mb,
        "trainable_params": recipe.trainable_params,
        "steady_tokens_per_s": median([r["tokens_per_s"] for r in train_log[1:]]),  # step 1 warms kernels up
        "step_ms_median": median([r["step_ms"] for r in train_log[1:]] or [r["step_ms"] for r in train_log]),
        "tokens_per_step": train_log[-1]["useful_tokens"] + train_log[-1]["pad_tokens"]
        if train_log
        else None,
    }
    recipe.cleanup()
    del recipe
    free_memory()
    return result


def child_main(spec_path: Path) -> int:
    """A training child: run the recipe from a spec file; optionally block (to be killed) at a step."""
    import torch

    from supportlm.config import LoraParams, TrainParams

    spec = json.loads(Path(spec_path).read_text())
    block_at, marker = spec.get("block_at"), spec.get("marker")
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])

    def on_log(rec: dict[str, Any]) -> None:
        if block_at and rec.get("type") == "train" and rec.get("step") == block_at:
            Path(marker).write_text(str(block_at))
            log.info("child: step %d logged; waiting for SIGKILL", block_at)
            time.sleep(3600)

    result = run_recipe(
        TrainParams.model_validate(spec["train"]),
        LoraParams.model_validate(spec["lora"]),
        Path(spec["model_dir"]),
        Path(spec["data_dir"]),
        Path(spec["ckpt_root"]),
        on_log=on_log,
    )
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


def median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def spawn_child(run: Run, spec: dict[str, Any], name: str) -> tuple[subprocess.Popen, Path]:
    """`python -m supportlm.gpu_check --child SPEC`, its output in <out_dir>/logs/<name>.log."""
    spec_path = run.work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, default=str))
    log_dir = run.log_dir
    env = dict(os.environ) | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if run.cfg.threads:
        env["OMP_NUM_THREADS"] = str(run.cfg.threads)
    src = str(Path(__file__).resolve().parents[2])  # the dir holding the supportlm package
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportlm.gpu_check", "--child", str(spec_path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proc, log_path


def tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def complete_checkpoints(root: Path) -> list[int]:
    from supportlm.train.checkpoints import CHECKPOINT_PREFIX, COMPLETE, checkpoint_step

    return sorted(checkpoint_step(p.parent) for p in root.glob(f"*/{CHECKPOINT_PREFIX}*/{COMPLETE}"))


def lora_b_rel_diff(a_dir: Path, b_dir: Path) -> float:
    """||B_a - B_b|| / ||B_b|| over every lora_B matrix (zero at init, so all of it was learned)."""
    from safetensors.torch import load_file

    a, b = (
        load_file(str(a_dir / "adapter_model.safetensors")),
        load_file(str(b_dir / "adapter_model.safetensors")),
    )
    keys = sorted(k for k in b if "lora_B" in k)
    if not keys or set(keys) - set(a):
        raise RuntimeError(f"{a_dir} and {b_dir}: adapters hold different lora_B tensors")
    num = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in keys)
    den = sum(float(b[k].float().pow(2).sum()) for k in keys)
    return (num / den) ** 0.5 if den else float(num > 0)


def kill_child(run: Run, spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """Start the victim, wait until it logs step kill_at (past a complete checkpoint), SIGKILL it."""
    from supportlm.runtime import describe_exit

    cfg = run.cfg
    marker = run.work / "victim.blocked"
    marker.unlink(missing_ok=True)
    t = time.perf_counter()
    victim, victim_log = spawn_child(
        run, spec | {"block_at": cfg.kill_at, "marker": str(marker)}, "resume_victim"
    )
    deadline = time.monotonic() + cfg.child_timeout_s
    try:
        while not marker.exists():
            if victim.poll() is not None:
                raise RuntimeError(
                    f"the victim {describe_exit(victim.returncode)} before step {cfg.kill_at}:\n{tail(victim_log)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the victim did not reach step {cfg.kill_at} in {cfg.child_timeout_s:.0f} s"
                )
            time.sleep(0.05)
        at_kill = complete_checkpoints(root)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    logged = sum(
        ln.count('"type": "train"') for p in root.glob("*/log.jsonl") for ln in p.read_text().splitlines()
    )
    log.info(
        "victim %s after logging step %d; complete checkpoints %s",
        describe_exit(victim.returncode),
        cfg.kill_at,
        at_kill,
    )
    if not at_kill:
        raise RuntimeError(f"no complete checkpoint before step {cfg.kill_at}: lower --save-steps")
    killed = victim.returncode == -signal.SIGKILL
    return {
        "victim_exit": "killed by SIGKILL (sent by the check)"
        if killed
        else describe_exit(victim.returncode),
        "victim_rc": victim.returncode,
        "killed_after_step": cfg.kill_at,
        "checkpoints_at_kill": at_kill,
        "train_lines_logged_at_kill": logged,
        "victim_s": round(time.perf_counter() - t, 2),
    }


def compare_runs(res: dict[str, Any], ref: dict[str, Any], steps: int, cuda: bool) -> dict[str, Any]:
    """Resumed vs uninterrupted: losses step by step and the final lora_B weights.

    Tolerances: CPU kernels are deterministic, so the runs must agree exactly (1e-5 leaves room for
    nothing but printing). On CUDA, bf16 autocast and non-deterministic backward kernels (atomics in
    the attention backward) make two uninterrupted runs differ slightly: 2e-2 on a loss of ~10 and 5%
    relative on lora_B, or 3x the difference measured between the two uninterrupted runs up to the
    resume step (the noise floor, recorded) where that is larger. A resume that restored the wrong
    data position or optimizer state moves lora_B by O(1) relative.
    """
    from supportlm.train.checkpoints import checkpoint_dir

    tol_loss, tol_b = (2e-2, 5e-2) if cuda else (1e-5, 1e-5)
    k = res["resumed_from"] or 0
    ref_loss = {r["step"]: r["loss"] for r in ref["train_curve"]}
    got = {r["step"]: r["loss"] for r in res["train_curve"]}
    before = [abs(got[s] - ref_loss[s]) for s in got if s <= k and s in ref_loss]
    after = [abs(got[s] - ref_loss[s]) for s in got if s > k and s in ref_loss]
    ref_run, new_run = Path(ref["run_dir"]), Path(res["run_dir"])
    at_k = checkpoint_dir(ref_run, k)
    floor = lora_b_rel_diff(checkpoint_dir(new_run, k), at_k) if at_k.exists() else None
    final = lora_b_rel_diff(checkpoint_dir(new_run, steps), checkpoint_dir(ref_run, steps))
    if cuda:
        tol_loss = max(tol_loss, 3 * max(before, default=0.0))
        tol_b = max(tol_b, 3 * (floor or 0.0))
    problems = []
    if not after or max(after) > tol_loss:
        problems.append(
            f"loss after resume differs by {max(after, default=math.nan):.3g} (tolerance {tol_loss})"
        )
    if final > tol_b:
        problems.append(f"final lora_B differs by {final:.3g} relative (tolerance {tol_b})")
    return {
        "loss_max_abs_diff_before_kill": max(before, default=None),
        "loss_max_abs_diff_after_resume": max(after, default=None),
        "loss_tolerance": tol_loss,
        "lora_b_rel_diff_at_resume_step": floor,
        "lora_b_rel_diff_final": final,
        "lora_b_tolerance": tol_b,
        "bitwise_equal": bool(after) and max(after) == 0.0 and final == 0.0,
        "problems": problems,
    }


def train_numbers(res: dict[str, Any], cuda: bool) -> dict[str, Any]:
    return {
        "steps": res["steps"],
        "tokens_per_step": res["tokens_per_step"],
        "tokens_per_s": res["tokens_per_s"],
        "steady_tokens_per_s": res["steady_tokens_per_s"],
        "step_ms_median": res["step_ms_median"],
        "peak_vram_mb": res["peak_mem_mb"] if cuda else None,
        "peak_rss_mb": None if cuda else res["peak_mem_mb"],
        "loaded_mem_mb": res["loaded_mem_mb"],
        "setup_s": res["setup_s"],
        "train_s": res["train_seconds"],
        "trainable_params": res["trainable_params"],
        "losses": [round(r["loss"], 5) for r in res["train_curve"]],
    }
