"""The check's seven steps, each `fn(run) -> its numbers`, and the order they run in (STEPS)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supportlm.gpu_check.config import CheckConfig
from supportlm.gpu_check.probe import allocated_mb, free_memory
from supportlm.gpu_check.runner import Run
from supportlm.gpu_check.synthetic import (
    ROLES,
    SPECIALS,
    build_model,
    build_tokenizer,
    model_config,
    save_model_dir,
    write_rows,
)
from supportlm.gpu_check.training import (
    compare_runs,
    kill_child,
    run_recipe,
    spawn_child,
    tail,
    train_numbers,
    train_params,
)

log = logging.getLogger("supportlm.gpu_check")


def step_build(run: Run) -> dict[str, Any]:
    """Tokenizer, random-weight model dir (`--layers` layers), train/val rows."""
    cfg, dims = run.cfg, run.cfg.dims(run.cfg.layers)
    t = time.perf_counter()
    run.tokenizer = tok = build_tokenizer(dims["vocab"])
    config = model_config(dims, tok)
    model = build_model(config, run.dev, run.save_dtype, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    save_model_dir(model, tok, run.model_dir)
    save_s = time.perf_counter() - t
    del model
    t = time.perf_counter()
    data = write_rows(run.data_dir, tok, cfg, dims["vocab"] - len(SPECIALS) - len(ROLES))
    return {
        "architecture": config.architectures[0] if config.architectures else type(config).__name__,
        "params": n_params,
        "dtype": str(run.save_dtype).replace("torch.", ""),
        "init_s": round(init_s, 2),
        "save_s": round(save_s, 2),
        "size_bytes": sum(f.stat().st_size for f in run.model_dir.glob("*.safetensors")),
        "data_s": round(time.perf_counter() - t, 2),
        "data": {
            k: {"rows": v["rows"], "tokens_mean": v["tokens_mean"], "truncated_rows": v["truncated_rows"]}
            for k, v in data.items()
        },
    }


def step_qlora(run: Run) -> dict[str, Any]:
    """The uninterrupted QLoRA run; its last adapter is what merge folds in and resume is compared with."""
    from supportlm.train.checkpoints import checkpoint_dir

    cfg = run.cfg
    train, lora = train_params(cfg, cfg.steps)
    res = run.ref_result = run_recipe(train, lora, run.model_dir, run.data_dir, run.work / "ckpt-ref")
    last = checkpoint_dir(Path(res["run_dir"]), res["steps"])
    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(last / name, run.adapter_dir / name)
    run.tokenizer.save_pretrained(run.adapter_dir)
    losses = [r["loss"] for r in res["train_curve"]]
    ok = res["steps"] == cfg.steps and all(math.isfinite(x) for x in losses)
    return {
        **train_numbers(res, run.cuda),
        "total_steps": res["total_steps"],
        "precision": res["precision"],
        "method": res["method"],
        "gradient_checkpointing": True,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "base_val_loss": res["base_val_loss"],
        "final_val_loss": res["val_curve"][-1]["val_loss"] if res["val_curve"] else None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "failed": None if ok else f"ran {res['steps']} of {cfg.steps} steps, losses {losses}",
    }


def step_resume(run: Run) -> dict[str, Any]:
    """Kill a training child with SIGKILL past a complete checkpoint, resume in a new child, compare."""
    from supportlm.runtime import describe_exit

    cfg = run.cfg
    train, lora = train_params(cfg, cfg.steps)
    root = run.work / "ckpt-resume"
    shutil.rmtree(root, ignore_errors=True)
    spec = {
        "train": train.model_dump(mode="json"),
        "lora": lora.model_dump(mode="json"),
        "model_dir": str(run.model_dir),
        "data_dir": str(run.data_dir),
        "ckpt_root": str(root),
        "result": str(run.work / "resume.result.json"),
        "threads": cfg.threads,
    }
    out = kill_child(run, spec, root)
    t = time.perf_counter()
    child, child_log = spawn_child(run, spec, "resume_resumed")
    try:
        rc = child.wait(timeout=cfg.child_timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise TimeoutError(f"the resumed run did not finish in {cfg.child_timeout_s:.0f} s") from None
    if rc != 0:
        raise RuntimeError(f"the resumed run {describe_exit(rc)}:\n{tail(child_log)}")
    res = json.loads(Path(spec["result"]).read_text())
    out |= {
        "resumed_from": res["resumed_from"],
        "final_step": res["steps"],
        "total_steps": res["total_steps"],
        "resumed_s": round(time.perf_counter() - t, 2),
        "resumed_setup_s": res["setup_s"],
    }
    problems = []
    if out["victim_rc"] != -signal.SIGKILL:
        problems.append(f"victim {out['victim_exit']}, not SIGKILL")
    if not res["resumed_from"]:
        problems.append("the second run did not resume from a checkpoint")
    if res["steps"] != cfg.steps:
        problems.append(f"resumed run ended at step {res['steps']}, expected {cfg.steps}")
    if run.ref_result is None:
        out["comparison"] = "none: the qlora step (the reference) failed"
    else:
        out |= compare_runs(res, run.ref_result, cfg.steps, run.cuda)
        problems += out.pop("problems")
    out["failed"] = "; ".join(problems) or None
    return out


def step_merge(run: Run) -> dict[str, Any]:
    """supportlm.train.merge (bf16 on the GPU, fp32 on CPU), then one weight checked by hand."""
    from supportlm.train.merge import merge

    dtype = "bfloat16" if run.cuda else "float32"
    info = merge(run.model_dir, run.adapter_dir, run.merged_dir, dtype=dtype)
    return {**info, **check_merged_weight(run.model_dir, run.adapter_dir, run.merged_dir, dtype)}


def step_generate(run: Run) -> dict[str, Any]:
    """HFEngine.load on the merged dir (bf16 on CUDA), exactly gen_tokens new tokens at each batch size."""
    from supportlm.inference.engines import HFEngine

    t = time.perf_counter()
    engine = HFEngine.load(run.merged_dir)
    load_s = time.perf_counter() - t
    run.prompts = val_prompts(engine, run.data_dir, run.cfg)
    rows = time_generation(engine, run.prompts, run.cfg)
    param = next(engine.model.parameters())
    return {
        "rows": rows,
        "load_s": round(load_s, 2),
        "dtype": str(param.dtype).replace("torch.", ""),
        "device": str(param.device),
        "failed": None
        if all(r["exact_tokens"] for r in rows)
        else "a generation did not give exactly N tokens",
    }


def step_bnb(run: Run) -> dict[str, Any]:
    """torch_quant.load bnb_int8 / bnb_nf4 / torchao_int4 (merged model, else the base), a few tokens via HFEngine."""
    from supportlm.inference.engines import HFEngine
    from supportlm.quantize import torch_quant

    src = run.merged_dir if (run.merged_dir / "config.json").exists() else run.model_dir
    n = run.cfg.bnb_tokens
    rows = []
    for name in ("bnb_int8", "bnb_nf4", "torchao_int4"):
        row: dict[str, Any] = {"name": name, "ok": False, "ms_per_100_tokens": None}
        try:
            model, qinfo = torch_quant.load(name, src)
            engine = HFEngine(model, run.tokenizer, name=name)
            prompt = (run.prompts or val_prompts(engine, run.data_dir, run.cfg))[:1]
            engine.generate_ids(prompt, 2, 1, min_new_tokens=2)  # warm-up
            gen = engine.generate_ids(prompt, n, 1, min_new_tokens=n)[0]
            row |= {
                "ok": gen.completion_tokens == n,
                "new_tokens": gen.completion_tokens,
                "ms_per_100_tokens": round(gen.seconds * 1000 * 100 / max(gen.completion_tokens, 1), 1),
                "tokens_per_s": round(gen.completion_tokens / gen.seconds, 1),
                **{
                    k: qinfo[k]
                    for k in ("format", "device", "load_s", "size_bytes", "memory_footprint_bytes")
                },
            }
            del model, engine
        except torch_quant.Skip as why:
            row["skipped"] = str(why)
        except Exception as exc:  # noqa: BLE001 - the other variant still runs
            row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            log.error("%s failed:\n%s", name, traceback.format_exc())
        free_memory()
        log.info("%s: %s", name, {k: v for k, v in row.items() if k != "name"})
        rows.append(row)
    # on CPU a variant bitsandbytes cannot run is a recorded skip; on CUDA every variant must work
    bad = [r for r in rows if not r["ok"] and (run.cuda or not r.get("skipped"))]
    return {
        "rows": rows,
        "model": src.name,
        "failed": "; ".join(
            f"{r['name']}: {r.get('error') or r.get('skipped') or 'wrong token count'}" for r in bad
        )
        or None,
    }


def step_full_depth(run: Run) -> dict[str, Any]:
    """The full-depth model: bf16 weight memory and generation, then (time allowing) QLoRA steps."""
    from supportlm.inference.engines import HFEngine

    cfg = run.cfg
    config = model_config(cfg.dims(cfg.depth), run.tokenizer)
    t = time.perf_counter()
    model = build_model(config, run.dev, run.save_dtype, cfg.seed)
    out: dict[str, Any] = {
        "layers": cfg.depth,
        "params": sum(p.numel() for p in model.parameters()),
        "init_s": round(time.perf_counter() - t, 2),
        "weights_mem_mb": allocated_mb(),
        "weights_dtype": str(run.save_dtype).replace("torch.", ""),
    }
    engine = HFEngine(model, run.tokenizer, name=f"{cfg.shape}-full")
    out["generate"] = time_generation(engine, run.prompts or val_prompts(engine, run.data_dir, cfg), cfg)
    if cfg.full_steps <= 0 or run.elapsed() > cfg.budget_s:
        why = (
            "full_steps=0"
            if cfg.full_steps <= 0
            else f"time budget: {run.elapsed():.0f} s > {cfg.budget_s:.0f} s"
        )
        out["qlora"] = {"skipped": why}
        log.warning("full-depth QLoRA skipped: %s", why)
        out["failed"] = None if cfg.full_steps <= 0 else f"full-depth QLoRA not run: {why}"
        return out
    full_dir = run.work / "full"
    t = time.perf_counter()
    save_model_dir(model, run.tokenizer, full_dir)
    out["save_s"] = round(time.perf_counter() - t, 2)
    out["size_bytes"] = sum(f.stat().st_size for f in full_dir.glob("*.safetensors"))
    del engine, model
    free_memory()
    train, lora = train_params(cfg, cfg.full_steps)
    train = train.model_copy(
        update={"eval_steps": 10_000, "save_steps": 10_000}
    )  # one eval + save, at the end
    res = run_recipe(train, lora, full_dir, run.data_dir, run.work / "ckpt-full")
    out["qlora"] = train_numbers(res, run.cuda)
    if not cfg.keep_work:
        shutil.rmtree(full_dir, ignore_errors=True)
    out["failed"] = (
        None if res["steps"] == cfg.full_steps else f"ran {res['steps']} of {cfg.full_steps} steps"
    )
    return out


def check_merged_weight(base_dir: Path, adapter_dir: Path, merged_dir: Path, dtype: str) -> dict[str, Any]:
    """One merged projection against W + (alpha/r) * B @ A computed here in fp32 (then cast)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    ad = load_file(str(adapter_dir / "adapter_model.safetensors"))
    key_a = min(k for k in ad if k.endswith("q_proj.lora_A.weight"))
    name = key_a.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")

    def tensor(d: Path, key: str) -> torch.Tensor:
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), "pt") as fh:
                if key in fh.keys():  # noqa: SIM118 - safe_open has no __contains__
                    return fh.get_tensor(key).float()
        raise KeyError(f"{key} not in {d}")

    w = tensor(base_dir, name)
    delta = scale * ad[key_a.replace("lora_A", "lora_B")].float() @ ad[key_a].float()
    expected = (w + delta).to(getattr(torch, dtype)).float()
    got = tensor(merged_dir, name)
    err = float((got - expected).abs().max())
    # bf16: W and W + delta are each rounded once (8-bit mantissa) -> allow 2 ulps of the largest value
    tol = 1e-5 if dtype == "float32" else 2 * 2.0**-7 * float(expected.abs().max())
    changed = float((got - w).abs().max())
    return {
        "checked_weight": name,
        "delta_max": float(delta.abs().max()),
        "changed_max": changed,
        "max_abs_err": err,
        "tolerance": tol,
        "failed": None
        if err <= tol and changed > 0
        else f"merged {name}: off by {err:.3g} (tolerance {tol:.3g}), changed by {changed:.3g}",
    }


def val_prompts(engine: Any, data_dir: Path, cfg: CheckConfig) -> list[list[int]]:
    """max(gen_batches) prompts of exactly prompt_tokens tokens (the last ones of system + user)."""
    rows = [json.loads(ln) for ln in (data_dir / "val.jsonl").read_text().splitlines() if ln.strip()]
    n = max(cfg.gen_batches)
    out = [engine.prompt_ids(r["messages"][:2], cfg.prompt_tokens) for r in (rows * n)[:n]]
    return out


def time_generation(engine: Any, prompts: list[list[int]], cfg: CheckConfig) -> list[dict[str, Any]]:
    """Per batch size: median wall time of exactly gen_tokens new tokens (prefill included)."""
    n = cfg.gen_tokens
    engine.generate_ids(prompts[:1], 4, 1, min_new_tokens=4)  # warm-up: kernels, allocator, caches
    rows = []
    for b in cfg.gen_batches:
        times, counts = [], []
        for _ in range(cfg.gen_repeats):
            gens = engine.generate_ids(prompts[:b], n, b, min_new_tokens=n)
            times.append(gens[0].seconds)
            counts += [g.completion_tokens for g in gens]
        dt = sorted(times)[len(times) // 2]
        rows.append(
            {
                "batch": b,
                "new_tokens": n,
                "prompt_tokens": len(prompts[0]),
                "ms_per_100_tokens": round(dt * 1000 * 100 / n, 1),
                "tokens_per_s": round(b * n / dt, 1),
                "seconds": [round(x, 4) for x in times],
                "exact_tokens": all(c == n for c in counts),
            }
        )
        log.info(
            "generate batch %d: %s ms per 100 tokens, %s tokens/s",
            b,
            rows[-1]["ms_per_100_tokens"],
            rows[-1]["tokens_per_s"],
        )
    return rows


STEPS: list[tuple[str, Callable[[Run], dict[str, Any]], tuple[str, ...]]] = [
    ("build", step_build, ()),
    ("qlora", step_qlora, ("build",)),
    ("resume", step_resume, ("build",)),
    ("merge", step_merge, ("qlora",)),
    ("generate", step_generate, ("merge",)),
    ("bnb", step_bnb, ("build",)),
    ("full_depth", step_full_depth, ("build",)),
]
