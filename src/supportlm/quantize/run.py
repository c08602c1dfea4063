"""The quantize stage: models/merged -> GGUF f16/q8_0/q4_k_m/q4_0 (+ bitsandbytes, torchao INT4), all scored alike.

    dvc repro quantize
    python stages/quantize.py

Writes models/gguf/model-{f16,<each quantize.gguf_types>}.gguf, reports/quantization.json,
reports/quantization.md and reports/plots/quantize/*.png.

Variants (one row each in `variants`, same test slice, same prompts/token ids):
- fp32: the merged HF model as saved (the reference point);
- f16 + `gguf_types`: llama.cpp files, scored through llama-cpp-python;
- `torch_variants`: bitsandbytes int8 / nf4 and torchao int4 when this host can run them; otherwise
  they are listed under `skipped` with the reason (e.g. "torchao_int4 ... CPU host").

Targets (marked met/missed in the JSON and the Markdown):
- size: q4_k_m at least `size_reduction_target` (50%) smaller than f16;
- accuracy: q4_k_m ROUGE-L at most `rouge_drop_target` (2.0) points (0-100 scale) below f16.

Raises:
    DataError: models/merged or data/formatted/test.jsonl missing.
    MissingDependencyError: the llama.cpp converter cannot be fetched (see supportlm.llamacpp).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.config import Params
from supportlm.errors import DataError
from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import stratified_sample
from supportlm.inference.prompts import prompt_ids
from supportlm.inference.threads import resolve_threads
from supportlm.io import read_rows
from supportlm.logs import ensure_logging
from supportlm.paths import Paths
from supportlm.quantize import compare, gguf, torch_quant
from supportlm.render import Code, Document, Strong, Table, fmt, pct, signed
from supportlm.runtime import cpu_info, run_in_child

TARGET_VARIANT, REFERENCE_VARIANT = "q4_k_m", "f16"
log = logging.getLogger("supportlm.quantize")


def _log_variant(v: dict[str, Any]) -> None:
    tps = "—" if v["tokens_per_s"] is None else f"{v['tokens_per_s']:.1f}"
    log.info(
        "%-7s %8.1f MB  ppl %7.2f  BLEU %5.2f  ROUGE-L %.3f  %s tok/s decode  (load %.1f s, eval %.0f s)",
        v["name"],
        v["size_bytes"] / 1e6,
        v["perplexity"],
        v["bleu"],
        v["rougeL"],
        tps,
        v["load_s"],
        v["eval_s"],
    )


def reference_model(merged_dir: Path) -> tuple[Any, str]:
    """(model, short dtype name): HFEngine's choice, fp32 on CPU and bf16 (fp16) on a CUDA GPU."""
    from supportlm.inference.engines import HFEngine

    model = HFEngine.load(merged_dir).model
    return model, {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[
        str(model.dtype).removeprefix("torch.")
    ]


def quantize_and_compare(
    merged_dir: Path,
    test_path: Path,
    gguf_dir: Path,
    reports: Path,
    p: Any,
    base_model_id: str = "",
    params_hash: str = "",
) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from supportlm.io import write_json
    from supportlm.lineage import peak_rss_mb

    t_start = time.perf_counter()
    if not (merged_dir / "config.json").is_file():
        raise DataError(f"{merged_dir}: not an HF model dir; run `dvc repro merge`")
    threads = resolve_threads(p.threads)  # auto: 1 on a busy 2-core box (see resolve_threads)
    torch.set_num_threads(threads)
    log.info("threads: %d (%s)", threads, "quantize.threads" if p.threads else "auto")
    p = p.model_copy(update={"threads": threads})  # llama.cpp gets the same count
    examples = [
        m.to_example(r) for r in stratified_sample(read_rows(test_path, "format"), p.eval_rows, p.seed)
    ]
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    prompts = [prompt_ids(tokenizer, e.prompt, p.n_ctx // 2) for e in examples]

    # 1. files
    t0 = time.perf_counter()
    files = gguf.export(merged_dir, gguf_dir, [t for t in p.gguf_types if t != "f16"], threads=p.threads)
    export_s = time.perf_counter() - t0
    log.info(
        "GGUF export in %.0f s: %s",
        export_s,
        ", ".join(f"{k} {v['size_bytes'] / 1e6:,.1f} MB" for k, v in files.items()),
    )

    variants: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    # 2. the HF reference (the merged dir): fp32 on CPU, bf16 on the GPU (a 7B in fp32 on CPU takes hours)
    t0 = time.perf_counter()
    model, ref_dtype = reference_model(merged_dir)
    load_s = time.perf_counter() - t0
    variants.append(
        compare.evaluate_hf(
            ref_dtype,
            f"hf-safetensors-{ref_dtype}",
            model,
            tokenizer,
            examples,
            prompts,
            p,
            gguf.file_size(merged_dir),
            load_s,
        )
    )
    _log_variant(variants[-1])
    del model
    gc.collect()

    # 3. GGUF
    for qtype, info in files.items():
        # in a child process: a crash in llama.cpp's native code (SIGILL from a build for another CPU,
        # ...) becomes an error naming the variant and the signal, not a dead stage
        variants.append(
            run_in_child(
                f"GGUF {qtype} scoring through llama-cpp-python ({Path(info['path']).name})",
                compare.evaluate_gguf,
                *(qtype, Path(info["path"]), f"gguf-{qtype}", tokenizer, examples, prompts, p),
            )
        )
        variants[-1]["convert_s"] = info["seconds"]
        _log_variant(variants[-1])

    # 4. torch quantizers
    for name in p.torch_variants:
        try:
            model, info = torch_quant.load(name, merged_dir)
        except torch_quant.Skip as why:
            skipped.append({"name": name, "reason": str(why)})
            log.info("%-7s skipped: %s", name, why)
            continue
        variants.append(
            compare.evaluate_hf(
                name,
                info.pop("format"),
                model,
                tokenizer,
                examples,
                prompts,
                p,
                info.pop("size_bytes"),
                info.pop("load_s"),
                extra=info,
            )
        )
        _log_variant(variants[-1])
        del model
        gc.collect()

    result = summarize(variants, p)
    replies = {v["name"]: v.pop("replies") for v in variants}
    result.update(
        {
            "skipped": skipped,
            "slice": {
                "rows": len(examples),
                "seed": p.seed,
                "max_new_tokens": p.max_new_tokens,
                "test_file": str(test_path),
                "ids": [e.id for e in examples],
            },
            "files": {k: v["path"] for k, v in files.items()},
            "params_hash": params_hash,
            "base_model": base_model_id,
            "timing": {
                "export_s": round(export_s, 1),
                "total_s": round(time.perf_counter() - t_start, 1),
                "torch_threads": torch.get_num_threads(),
            },
            "peak_rss_mb": peak_rss_mb(),
            "hardware": {"cpu": cpu_info(), "llama_cpp": llamacpp.build_info()},
        }
    )
    plots = plot(result, reports / "plots" / "quantize")
    result["plots"] = [str(x) for x in plots]
    write_json(reports / "quantization.json", result)
    (reports / "quantization.md").write_text(
        render_markdown(result, examples, replies, reports), encoding="utf-8"
    )
    return result


def summarize(variants: list[dict[str, Any]], p: Any) -> dict[str, Any]:
    """Size reductions vs f16/fp32, the per-variant `overall` dict and the met/missed targets."""
    by = {v["name"]: v for v in variants}
    f16, fp32 = by.get(REFERENCE_VARIANT), by.get("fp32")
    for v in variants:
        v["reduction_vs_f16"] = 1 - v["size_bytes"] / f16["size_bytes"] if f16 else None
        v["reduction_vs_fp32"] = 1 - v["size_bytes"] / fp32["size_bytes"] if fp32 else None
        if f16:
            v["rougeL_delta_vs_f16_points"] = 100 * (v["rougeL"] - f16["rougeL"])
    targets = []
    q = by.get(TARGET_VARIANT)
    if q and f16:
        red = q["reduction_vs_f16"]
        targets.append(
            {
                "name": f"{TARGET_VARIANT} size reduction vs f16",
                "goal": f">= {p.size_reduction_target:.0%}",
                "measured": red,
                "met": red >= p.size_reduction_target,
            }
        )
        drop = -q["rougeL_delta_vs_f16_points"]
        targets.append(
            {
                "name": f"{TARGET_VARIANT} ROUGE-L drop vs f16 (points)",
                "goal": f"<= {p.rouge_drop_target:g}",
                "measured": drop,
                "met": drop <= p.rouge_drop_target,
            }
        )
    keys = ("format", "size_bytes", "perplexity", "bleu", "rougeL", "tokens_per_s")
    return {
        "variants": variants,
        "overall": {v["name"]: {k: v[k] for k in keys} for v in variants},
        "targets": targets,
        "q4_k_m_rougeL_delta_vs_f16_points": q.get("rougeL_delta_vs_f16_points") if q else None,
        "q4_k_m_reduction_vs_f16": q.get("reduction_vs_f16") if q else None,
    }


def run_quantize(params: Params, paths: Paths) -> dict[str, Any]:
    """The quantize stage: reads params.quantize and params.base_model.base (for lineage)."""
    from supportlm.lineage import params_hash

    ensure_logging()
    return quantize_and_compare(
        merged_dir=paths.merged,
        test_path=paths.formatted / "test.jsonl",
        gguf_dir=paths.gguf,
        reports=paths.reports,
        p=params.quantize,
        base_model_id=params.base_model.base,
        params_hash=params_hash(params.quantize),
    )


# ---------------------------------------------------------------- report

NOTES = (
    "Notes: k-quants need rows that are multiples of 256 values; tensors that are not (576-wide in "
    "SmolLM2-135M) fall back to legacy quant types inside llama-quantize, so q4_k_m saves less here than "
    "on 7B models. bitsandbytes sizes are the saved safetensors (quantized weights + fp16/fp32 "
    "norms/embeddings)."
)


def render_markdown(
    result: dict[str, Any], examples: list[m.Example], replies: dict[str, list[str]], reports: Path
) -> str:
    """reports/quantization.md (images relative to `reports`)."""
    return build_document(result, examples, replies).to_md(reports)


def build_document(
    result: dict[str, Any], examples: list[m.Example], replies: dict[str, list[str]]
) -> Document:
    """The variants table, the targets, what was skipped, the plots, one example replied by every variant."""
    s = result["slice"]
    doc = Document()
    doc.h(1, "Quantization: size, accuracy and speed")
    doc.p(
        f"Every variant on the same {s['rows']} test rows (seed {s['seed']}), greedy, max {s['max_new_tokens']} "
        "new tokens; perplexity of the reference replies. tok/s = single-stream decode (after the first token). "
        f"Base model `{result['base_model']}`; params hash `{result['params_hash']}`; stage time "
        f"{result['timing']['total_s']:.0f} s."
    )
    _variants_table(doc, result["variants"])
    if result["targets"]:
        doc.h(2, "Targets")
        doc.add(Table(["target", "goal", "measured", ""], [_target_row(t) for t in result["targets"]], {2},
                      status_col=3))  # fmt: skip
    if result["skipped"]:
        doc.h(2, "Skipped on this host")
        doc.bullets([Code(x["name"]), f": {x['reason']}"] for x in result["skipped"])
    doc.h(2, "Plots")
    for x in result["plots"]:
        doc.image(Path(x).resolve(), Path(x).stem)
    if examples:
        e = examples[0]
        doc.h(2, f"Example (`{e.id}`, {e.intent})")
        rows = [("reference", e.reference), *((name, r[0]) for name, r in replies.items())]
        doc.table(["variant", "reply"], [(name, _clip(text)) for name, text in rows])
    doc.p(NOTES)
    return doc


def _variants_table(doc: Document, variants: list[dict[str, Any]]) -> None:
    """One row per variant; size change vs f16/fp32 as a signed percentage (a 60% reduction is -60%)."""
    head = ["variant", "format", "size (MB)", "vs f16", "vs fp32", "perplexity ↓", "BLEU", "ROUGE-L",
            "Δ ROUGE-L vs f16 (pts)", "tok/s", "TTFT (ms)", "load (s)"]  # fmt: skip
    rows = [
        [v["name"], v["format"], fmt(_scaled(v["size_bytes"], 1e-6), ",.1f"),
         fmt(_scaled(v["reduction_vs_f16"], -1), "+.0%"), fmt(_scaled(v["reduction_vs_fp32"], -1), "+.0%"),
         fmt(v["perplexity"], ".2f"), fmt(v["bleu"], ".2f"), fmt(v["rougeL"], ".3f"),
         signed(v.get("rougeL_delta_vs_f16_points"), 2), fmt(v["tokens_per_s"], ".1f"),
         fmt(v.get("ttft_ms"), ".0f"), fmt(v["load_s"], ".2f")]
        for v in variants
    ]  # fmt: skip
    doc.table(head, rows, align_right=range(2, len(head)))


def _scaled(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _clip(text: str, limit: int = 400) -> str:
    """A reply for a table cell: cut at `limit` characters, "_(empty)_" when empty."""
    return (text if len(text) <= limit else text[: limit - 1] + "…") or "_(empty)_"


def _target_row(t: dict[str, Any]) -> list[Any]:
    measured = pct(t["measured"]) if "reduction" in t["name"] else fmt(t["measured"], ".2f")
    return [t["name"], t["goal"], measured, "met" if t["met"] else Strong("missed")]


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """ROUGE-L and perplexity vs size (marker area ~ decode tok/s), and decode speed bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out_dir.mkdir(parents=True, exist_ok=True)
    vs = result["variants"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    tps = [v["tokens_per_s"] or 0 for v in vs]
    scale = 600 / max(max(tps), 1)
    colors = [
        "#444" if v["format"].startswith("hf") else "#1f77b4" if v["format"].startswith("gguf") else "#d62728"
        for v in vs
    ]
    sizes = [v["size_bytes"] / 1e6 for v in vs]
    for ax, key, label in (
        (axes[0], "rougeL", "ROUGE-L (higher is better)"),
        (axes[1], "perplexity", "perplexity of reference (lower is better)"),
    ):
        ax.scatter(
            [v["size_bytes"] / 1e6 for v in vs],
            [v[key] for v in vs],
            s=[30 + t * scale for t in tps],
            c=colors,
            alpha=0.7,
            edgecolors="k",
        )
        for v in vs:
            ax.annotate(
                v["name"],
                (v["size_bytes"] / 1e6, v[key]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(
            [
                t
                for t in (1, 2, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000, 15000)
                if min(sizes) / 1.3 <= t <= max(sizes) * 1.3
            ]
            or [min(sizes)]
        )
        ax.set_xlabel("size (MB, log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy vs size (area = decode tok/s)")
    axes[1].set_title("perplexity vs size")
    axes[2].barh([v["name"] for v in vs], tps, color=colors)
    for i, t in enumerate(tps):
        axes[2].text(t, i, f" {t:.0f}", va="center", fontsize=8)
    axes[2].set_xlabel("single-stream decode tok/s")
    axes[2].set_title("speed (black: HF fp32, blue: GGUF, red: bnb)")
    fig.tight_layout()
    path = out_dir / "size_accuracy_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


__all__ = ["quantize_and_compare", "run_quantize", "summarize"]
