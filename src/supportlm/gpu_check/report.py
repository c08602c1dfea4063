"""The check's report: gpu_check.json (DESIGN.md's keys + every step's details) and gpu_check.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from supportlm.gpu_check.probe import versions
from supportlm.gpu_check.runner import Run


def write_report(run: Run) -> dict[str, Any]:
    from supportlm.io import write_json

    report = assemble(run)
    out_dir = Path(run.cfg.out_dir)
    write_json(out_dir / "gpu_check.json", report)
    (out_dir / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    return report


def assemble(run: Run) -> dict[str, Any]:
    """gpu_check.json: DESIGN.md's keys (device, model_shape, qlora, generate, bnb) + every step's details."""
    cfg, r, info = run.cfg, run.results, run.info
    build, q, full = r.get("build", {}), r.get("qlora", {}), r.get("full_depth", {})
    failed = [n for n, s in run.steps.items() if not s["ok"]]
    dims = cfg.dims(cfg.layers)
    return {
        "device": info.get("name") or f"cpu ({info.get('cpu')}, {info.get('cpu_cores')} cores)",
        "device_info": info,
        "versions": versions(),
        "mode": "tiny" if cfg.shape == "tiny" else "full",
        "model_shape": {
            "name": cfg.shape,
            "architecture": build.get("architecture"),
            **{k: v for k, v in dims.items() if k != "layers"},
            "layers_timed": cfg.layers,
            "layers_full": cfg.depth,
            "params_timed": build.get("params"),
            "params_full": full.get("params"),
            "weights": "random, seeded, built from the config",
        },
        "qlora": {
            **{
                k: q.get(k)
                for k in (
                    "tokens_per_s",
                    "steady_tokens_per_s",
                    "peak_vram_mb",
                    "peak_rss_mb",
                    "steps",
                    "step_ms_median",
                    "loaded_mem_mb",
                    "precision",
                    "first_loss",
                    "last_loss",
                )
            },
            "resumed": bool(run.steps.get("resume", {}).get("ok")),
            "batch_size": cfg.batch_size,
            "seq_len": cfg.seq_len,
            "layers": cfg.layers,
            "full_depth": full.get("qlora"),
        },
        "generate": [
            {**g, "layers": cfg.layers, "model": "merged (HFEngine.load)"}
            for g in r.get("generate", {}).get("rows", [])
        ]
        + [
            {**g, "layers": cfg.depth, "model": f"full depth, {full.get('weights_dtype')}"}
            for g in full.get("generate", [])
        ],
        "bnb": r.get("bnb", {}).get("rows", []),
        "resume": r.get("resume"),
        "merge": r.get("merge"),
        "details": {k: r.get(k) for k in ("build", "qlora", "generate", "full_depth")},
        "steps": run.steps,
        "failed": failed,
        "ok": not failed,
        "wall_s": round(run.elapsed(), 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }


def markdown(rep: dict[str, Any]) -> str:
    """gpu_check.md: every step's status, then QLoRA, resume, generation and bitsandbytes numbers."""

    def f(v: Any, spec: str = ",.1f") -> str:
        return "n/a" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)

    def row(*cells: Any) -> str:
        return "| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |"

    s, q, v = rep["model_shape"], rep["qlora"], rep["versions"]
    res, full_q = rep.get("resume") or {}, q.get("full_depth") or {}
    lines = [
        "# GPU check",
        "",
        (
            f"{rep['device']}; torch {v['torch']} (CUDA {rep['device_info'].get('torch_cuda')}), transformers "
            f"{v['transformers']}, peft {v['peft']}, bitsandbytes {v['bitsandbytes']}. Model: {s['name']} shape "
            f"({s['architecture']}, hidden {s['hidden']}, vocab {s['vocab']}), random weights: {s['layers_timed']} "
            f"layers for the timed steps, {s['layers_full']} for the full-depth rows. Wall time {f(rep['wall_s'])} s."
        ),
        "",
        row("step", "ok", "seconds", "peak MB", "note"),
        row("---", "---", "---", "---", "---"),
        *[
            row(
                n,
                "yes" if st["ok"] else "NO",
                f(st["seconds"]),
                f(st.get("peak_mem_mb"), ",.0f"),
                (st.get("error") or "")[:160],
            )
            for n, st in rep["steps"].items()
        ],
        "",
        row(
            "QLoRA, bf16 compute on CUDA, grad checkpointing",
            "layers",
            "steps",
            "tokens/s (after step 1)",
            "step ms",
            "peak VRAM MB",
        ),
        row("---", "---", "---", "---", "---", "---"),
        row(
            f"batch {q['batch_size']} x {q['seq_len']}",
            q["layers"],
            f(q["steps"], "d"),
            f(q["steady_tokens_per_s"]),
            f(q["step_ms_median"]),
            f(q["peak_vram_mb"], ",.0f"),
        ),
    ]
    if full_q.get("steps"):
        lines.append(
            row(
                f"batch {q['batch_size']} x {q['seq_len']}",
                s["layers_full"],
                full_q["steps"],
                f(full_q["steady_tokens_per_s"]),
                f(full_q["step_ms_median"]),
                f(full_q["peak_vram_mb"], ",.0f"),
            )
        )
    elif full_q.get("skipped"):
        lines.append(row("full depth", s["layers_full"], "skipped", full_q["skipped"], "", ""))
    if res:
        lines += [
            "",
            (
                f"Kill and resume: the training child was {res.get('victim_exit', 'n/a')} after logging step "
                f"{res.get('killed_after_step')}; the next one resumed from step {res.get('resumed_from')} and ended at "
                f"{res.get('final_step')} of {res.get('total_steps')}. Loss difference to the uninterrupted run after "
                f"the resume: {f(res.get('loss_max_abs_diff_after_resume'), '.3g')} (tolerance "
                f"{f(res.get('loss_tolerance'), '.3g')}); final lora_B relative difference "
                f"{f(res.get('lora_b_rel_diff_final'), '.3g')} (tolerance {f(res.get('lora_b_tolerance'), '.3g')}; "
                f"two uninterrupted runs at the resume step: {f(res.get('lora_b_rel_diff_at_resume_step'), '.3g')})."
            ),
        ]
    lines += [
        "",
        row("generation (greedy, exactly N new tokens)", "layers", "batch", "ms per 100 tokens", "tokens/s"),
        row("---", "---", "---", "---", "---"),
        *[
            row(g["model"], g["layers"], g["batch"], f(g["ms_per_100_tokens"]), f(g["tokens_per_s"]))
            for g in rep["generate"]
        ],
        *[
            row(
                b["name"]
                + ("" if b["ok"] else f" ({b.get('skipped') or b.get('error') or 'wrong count'})"[:160]),
                s["layers_timed"],
                1,
                f(b.get("ms_per_100_tokens")),
                f(b.get("tokens_per_s")),
            )
            for b in rep["bnb"]
        ],
    ]
    return "\n".join(lines) + "\n"
