"""The check's report: gpu_check.json (DESIGN.md's keys + every step's details) and gpu_check.md
(a render.Document; render.py is stdlib only, so this still runs with just torch/transformers/peft)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from supportlm.gpu_check.probe import versions
from supportlm.gpu_check.runner import Run
from supportlm.render import Document, fmt


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
    s, v = rep["model_shape"], rep["versions"]
    doc = Document()
    doc.h(1, "GPU check")
    doc.p(
        f"{rep['device']}; torch {v['torch']} (CUDA {rep['device_info'].get('torch_cuda')}), transformers "
        f"{v['transformers']}, peft {v['peft']}, bitsandbytes {v['bitsandbytes']}. Model: {s['name']} shape "
        f"({s['architecture']}, hidden {s['hidden']}, vocab {s['vocab']}), random weights: "
        f"{s['layers_timed']} layers for the timed steps, {s['layers_full']} for the full-depth rows. "
        f"Wall time {fmt(rep['wall_s'], ',.1f')} s."
    )
    steps = [[n, "yes" if st["ok"] else "NO", fmt(st["seconds"], ",.1f"), fmt(st.get("peak_mem_mb"), ",.0f"),
              (st.get("error") or "")[:160]] for n, st in rep["steps"].items()]  # fmt: skip
    doc.table(["step", "ok", "seconds", "peak MB", "note"], steps, align_right=[2, 3])
    doc.table(_QLORA_HEADER, _qlora_rows(rep), align_right=range(1, 6))
    if rep.get("resume"):
        doc.p(_resume_text(rep["resume"]))
    doc.table(_GENERATION_HEADER, _generation_rows(rep), align_right=range(1, 5))
    return doc.to_md()


_QLORA_HEADER = ["QLoRA, bf16 compute on CUDA, grad checkpointing", "layers", "steps",
                 "tokens/s (after step 1)", "step ms", "peak VRAM MB"]  # fmt: skip
_GENERATION_HEADER = ["generation (greedy, exactly N new tokens)", "layers", "batch", "ms per 100 tokens",
                      "tokens/s"]  # fmt: skip


def _qlora_rows(rep: dict[str, Any]) -> list[list[Any]]:
    """The timed-layers row, then the full-depth one (or why it was skipped)."""
    q, layers_full = rep["qlora"], rep["model_shape"]["layers_full"]
    full, batch = q.get("full_depth") or {}, f"batch {q['batch_size']} x {q['seq_len']}"

    def numbers(x: dict[str, Any]) -> list[str]:
        return [
            fmt(x["steady_tokens_per_s"], ",.1f"),
            fmt(x["step_ms_median"], ",.1f"),
            fmt(x["peak_vram_mb"], ",.0f"),
        ]

    rows = [[batch, q["layers"], fmt(q["steps"], "d"), *numbers(q)]]
    if full.get("steps"):
        rows.append([batch, layers_full, full["steps"], *numbers(full)])
    elif full.get("skipped"):
        rows.append(["full depth", layers_full, "skipped", full["skipped"], "", ""])
    return rows


def _resume_text(res: dict[str, Any]) -> str:
    def g(key: str) -> str:
        return fmt(res.get(key), ".3g")

    return (
        f"Kill and resume: the training child was {res.get('victim_exit', 'n/a')} after logging step "
        f"{res.get('killed_after_step')}; the next one resumed from step {res.get('resumed_from')} and ended "
        f"at {res.get('final_step')} of {res.get('total_steps')}. Loss difference to the uninterrupted run "
        f"after the resume: {g('loss_max_abs_diff_after_resume')} (tolerance {g('loss_tolerance')}); final "
        f"lora_B relative difference {g('lora_b_rel_diff_final')} (tolerance {g('lora_b_tolerance')}; two "
        f"uninterrupted runs at the resume step: {g('lora_b_rel_diff_at_resume_step')})."
    )


def _generation_rows(rep: dict[str, Any]) -> list[list[Any]]:
    """The merged and full-depth generation rows, then one per bitsandbytes load at the timed depth."""

    def speed(x: dict[str, Any]) -> list[str]:
        return [fmt(x.get("ms_per_100_tokens"), ",.1f"), fmt(x.get("tokens_per_s"), ",.1f")]

    rows = [[x["model"], x["layers"], x["batch"], *speed(x)] for x in rep["generate"]]
    for b in rep["bnb"]:
        why = "" if b["ok"] else f" ({b.get('skipped') or b.get('error') or 'wrong count'})"[:160]
        rows.append([b["name"] + why, rep["model_shape"]["layers_timed"], 1, *speed(b)])
    return rows
