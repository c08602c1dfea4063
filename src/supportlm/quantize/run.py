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
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.config import Params
from supportlm.errors import DataError
from supportlm.evaluate import intervals
from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import stratified_sample
from supportlm.inference.prompts import prompt_ids
from supportlm.inference.threads import resolve_threads
from supportlm.io import read_rows
from supportlm.logs import ensure_logging
from supportlm.paths import LOOKUP_CACHE, SERVED_GGUF, SERVED_INFO, Paths
from supportlm.quantize import compare, gguf, llama_tools, select, torch_quant
from supportlm.quantize.report import plot, render_markdown
from supportlm.runtime import cpu_info, run_in_child

REFERENCE_VARIANT = "f16"
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
    train_path: Path | None = None,
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
    # the reference rows are the sample's first rows (round-robin over intents, so stratified too)
    ref_examples = examples[: p.reference_rows]
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    prompts = [prompt_ids(tokenizer, e.prompt, p.n_ctx // 2) for e in examples]
    ref_prompts = prompts[: len(ref_examples)]
    timing: dict[str, float] = {}

    # 1. files: f16 + the plain types, then the calibrated ones
    t0 = time.perf_counter()
    files = gguf.export(merged_dir, gguf_dir, [t for t in p.gguf_types if t != "f16"], threads=p.threads)
    timing["export_s"] = round(time.perf_counter() - t0, 1)
    calibration = None
    if p.imatrix.types:
        calibration, calibrated = calibrate(files["f16"]["path"], gguf_dir, train_path, p)
        files.update(calibrated)
        timing["imatrix_s"] = calibration["seconds"]
    log.info("GGUF files: %s", ", ".join(f"{k} {v['size_bytes'] / 1e6:,.1f} MB" for k, v in files.items()))
    lookup = None
    if p.lookup_cache:
        t0 = time.perf_counter()
        lookup = build_lookup(Path(files["f16"]["path"]), gguf_dir, train_path, test_path, {e.id for e in examples})
        timing["lookup_s"] = round(time.perf_counter() - t0, 1)
        log.info("n-gram cache %s: %.1f MB; held-out draft acceptance %s", lookup["path"], lookup["size_bytes"] / 1e6,
                 f"{lookup['stats']['acceptance']:.1%}" if lookup["stats"]["acceptance"] is not None else "n/a")  # fmt: skip

    variants: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    # 2. the HF reference (the merged dir): fp32 on CPU, bf16 on the GPU (a 7B in fp32 on CPU takes hours)
    t0 = time.perf_counter()
    model, ref_dtype = reference_model(merged_dir)
    load_s = time.perf_counter() - t0
    variants.append(compare.evaluate_hf(ref_dtype, f"hf-safetensors-{ref_dtype}", model, tokenizer, ref_examples,
                                        ref_prompts, p, gguf.file_size(merged_dir), load_s))  # fmt: skip
    _log_variant(variants[-1])
    del model
    gc.collect()

    # 3. GGUF, every variant on every eval row
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
        variants[-1]["imatrix"] = bool(info.get("imatrix"))
        _log_variant(variants[-1])

    # 4. torch quantizers, on the reference rows
    for name in p.torch_variants:
        try:
            model, info = torch_quant.load(name, merged_dir)
        except torch_quant.Skip as why:
            skipped.append({"name": name, "reason": str(why)})
            log.info("%-7s skipped: %s", name, why)
            continue
        variants.append(compare.evaluate_hf(name, info.pop("format"), model, tokenizer, ref_examples, ref_prompts, p,
                                            info.pop("size_bytes"), info.pop("load_s"), extra=info))  # fmt: skip
        _log_variant(variants[-1])
        del model
        gc.collect()

    # 5. KL-divergence of every GGUF variant vs f16 on held-out test replies (not the eval rows)
    t0 = time.perf_counter()
    kld = kl_divergence(files, gguf_dir, test_path, {e.id for e in examples}, p)
    timing["kld_s"] = round(time.perf_counter() - t0, 1)
    for v in variants:
        if v["name"] in kld["variants"]:
            v["kld"] = kld["variants"][v["name"]]
            v["kl_divergence"] = v["kld"]["mean_kld"]

    result = summarize(variants, p)
    replies = {v["name"]: v.pop("replies") for v in variants}
    for v in variants:
        v.pop("row_rougeL")
        v.pop("row_nll")

    # 6. the serving rule -> models/gguf/model-served.gguf + served.json
    choice = select.choose(variants, p.rouge_drop_target, p.speed_tie)
    served = select.publish(gguf_dir, choice, Path(files[choice["variant"]]["path"]))
    log.info("served: %s (%s)", served["variant"], served["rule"])
    keep = {Path(v["path"]).name for v in files.values()} | {SERVED_GGUF, SERVED_INFO}
    keep |= {IMATRIX_FILE} if calibration else set()
    keep |= {LOOKUP_CACHE} if lookup else set()
    gguf.prune(gguf_dir, keep)
    result["served"] = {"name": served["variant"], "rule": served["rule"], "file": served["file"],
                        "rouge_drop_target": p.rouge_drop_target, "speed_tie": p.speed_tie,
                        "served_file": str(gguf_dir / SERVED_GGUF), "candidates": served["candidates"]}  # fmt: skip
    result["targets"] = targets(variants, served["variant"], p)

    result.update(
        {
            "skipped": skipped,
            "slice": {
                "rows": len(examples),
                "reference_rows": len(ref_examples),
                "seed": p.seed,
                "max_new_tokens": p.max_new_tokens,
                "test_file": str(test_path),
                "ids": [e.id for e in examples],
            },
            "files": {k: v["path"] for k, v in files.items()},
            "imatrix": calibration,
            "lookup_cache": lookup,
            "kld": {k: v for k, v in kld.items() if k != "variants"},
            "params_hash": params_hash,
            "base_model": base_model_id,
            "timing": {**timing, "total_s": round(time.perf_counter() - t_start, 1),
                       "torch_threads": torch.get_num_threads()},
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


IMATRIX_FILE = "imatrix.gguf"  # kept in models/gguf: the calibration the -imat variants were made with


def calibrate(f16: str, gguf_dir: Path, train_path: Path | None, p: Any) -> tuple[dict[str, Any], dict[str, dict]]:
    """llama-imatrix on the training replies, then each `imatrix.types` as variant `<type>-imat`."""
    if train_path is None:
        raise DataError("quantize.imatrix.types needs the training split (data/formatted/train.jsonl)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="supportlm-imatrix-") as tmp:
        corpus = Path(tmp) / "train_replies.txt"
        # enough text for the chunks asked for (~4 characters per token, twice over), not the whole split
        replies = llama_tools.write_replies(train_path, corpus, max_chars=8 * p.imatrix.chunks * p.imatrix.ctx)
        info = llama_tools.imatrix(Path(f16), corpus, gguf_dir / IMATRIX_FILE, chunks=p.imatrix.chunks,
                                   ctx=p.imatrix.ctx, threads=p.threads)  # fmt: skip
    files = {f"{t}-imat": gguf.quantize(f16, gguf_dir / f"model-{t}-imat.gguf", t, p.threads,
                                        imatrix=gguf_dir / IMATRIX_FILE) for t in p.imatrix.types}  # fmt: skip
    info.update({"corpus": f"{train_path} assistant replies ({replies:,} replies written)",
                 "types": list(p.imatrix.types), "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    return info, files


def build_lookup(f16: Path, gguf_dir: Path, train_path: Path | None, test_path: Path, exclude: set[str]) -> dict:
    """The n-gram cache of every training reply (llama-lookup-create) and its acceptance on held-out replies."""
    if train_path is None:
        raise DataError("quantize.lookup_cache needs the training split (data/formatted/train.jsonl)")
    with tempfile.TemporaryDirectory(prefix="supportlm-lookup-") as tmp:
        corpus, heldout = Path(tmp) / "train_replies.txt", Path(tmp) / "heldout_replies.txt"
        replies = llama_tools.write_replies(train_path, corpus)
        info = llama_tools.lookup_cache(f16, corpus, gguf_dir / LOOKUP_CACHE)
        llama_tools.write_replies(test_path, heldout, exclude_ids=exclude, max_chars=200_000)
        info["stats"] = llama_tools.lookup_stats(f16, heldout, gguf_dir / LOOKUP_CACHE, ctx=512)
    info["corpus"] = f"{train_path} assistant replies ({replies:,})"
    info["stats"]["text"] = f"{test_path} assistant replies outside the eval slice (first 200K characters)"
    return info


def kl_divergence(files: dict[str, dict], gguf_dir: Path, test_path: Path, exclude: set[str], p: Any) -> dict:
    """llama-perplexity KL-divergence of every non-f16 GGUF file vs f16 on test replies outside the eval rows."""
    with tempfile.TemporaryDirectory(prefix="supportlm-kld-text-") as tmp:
        text = Path(tmp) / "heldout_replies.txt"
        llama_tools.write_replies(test_path, text, exclude_ids=exclude, max_chars=8 * p.kld.chunks * p.kld.ctx)
        out = llama_tools.kl_divergence(
            Path(files["f16"]["path"]), {k: Path(v["path"]) for k, v in files.items() if k != "f16"}, text,
            chunks=p.kld.chunks, ctx=p.kld.ctx, threads=p.threads,
        )  # fmt: skip
    out["text"] = f"{test_path} assistant replies outside the eval slice"
    return out


def summarize(variants: list[dict[str, Any]], p: Any) -> dict[str, Any]:
    """Size reductions, paired intervals vs f16 (ROUGE-L points, perplexity ratio) and the `overall` dict.

    Every variant is paired with f16 on the rows both answered: the GGUF variants on every eval row, the HF
    reference and torch variants on the first `reference_rows` (their row lists are shorter).
    """
    by = {v["name"]: v for v in variants}
    f16, fp32 = by.get(REFERENCE_VARIANT), by.get("fp32")
    for v in variants:
        v["rows"] = len(v["row_rougeL"])
        v["reduction_vs_f16"] = 1 - v["size_bytes"] / f16["size_bytes"] if f16 else None
        v["reduction_vs_fp32"] = 1 - v["size_bytes"] / fp32["size_bytes"] if fp32 else None
        if not f16:
            continue
        n = v["rows"]
        rl = intervals.paired_difference(v["row_rougeL"], f16["row_rougeL"][:n], scale=100, seed=p.seed)
        v["rougeL_vs_f16"] = rl
        v["rougeL_delta_vs_f16_points"] = rl["delta"]
        v["rougeL_delta_ci"] = [rl["low"], rl["high"]]
        nll = intervals.paired_ratio_difference([a for a, _ in v["row_nll"]], [a for a, _ in f16["row_nll"][:n]],
                                                [b for _, b in v["row_nll"]], seed=p.seed)  # fmt: skip
        v["perplexity_ratio_vs_f16"] = {"ratio": math.exp(nll["delta"]), "low": math.exp(nll["low"]),
                                        "high": math.exp(nll["high"]), "n": n}  # fmt: skip
    keys = ("format", "size_bytes", "perplexity", "bleu", "rougeL", "tokens_per_s", "rows")
    return {
        "variants": variants,
        "overall": {v["name"]: {k: v[k] for k in keys} for v in variants},
    }


def targets(variants: list[dict[str, Any]], served: str, p: Any) -> list[dict[str, Any]]:
    """The served variant's size reduction and ROUGE-L interval against the quantize targets."""
    v = {x["name"]: x for x in variants}.get(served)
    if v is None or v.get("reduction_vs_f16") is None:
        return []
    low = v["rougeL_delta_ci"][0]
    return [
        {"name": f"served ({served}) size reduction vs f16", "goal": f">= {p.size_reduction_target:.0%}",
         "measured": v["reduction_vs_f16"], "met": v["reduction_vs_f16"] >= p.size_reduction_target},
        {"name": f"served ({served}) ROUGE-L vs f16, 95% interval low end (points)",
         "goal": f">= -{p.rouge_drop_target:g}", "measured": low, "met": low >= -p.rouge_drop_target},
    ]  # fmt: skip


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
        train_path=paths.formatted / "train.jsonl",
    )


__all__ = ["quantize_and_compare", "run_quantize", "summarize"]
