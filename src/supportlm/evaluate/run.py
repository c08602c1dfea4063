"""The evaluate stage: base vs fine-tuned (merged) model on a seeded, intent-stratified test sample.

    dvc repro evaluate
    python stages/evaluate.py

Features (each knob in params.yaml `evaluate:`):
- sample: `sample_rows` test rows, round-robin over intents in a seeded order (so every
  intent gets ~rows/27 examples; per-intent numbers need that), seeded by `seed`;
- greedy decoding, `max_new_tokens`, left-padded batches of `batch_size` sorted by prompt
  length (less padding); the same prompts and code for both models;
- metrics: perplexity of the reference reply, BLEU, ROUGE-1/2/L, support checks
  (placeholders, length, empty/degenerate/repetitive, intent addressed), overall, per intent
  and per slice (qa / conversation / ticket);
- human eval: a blind A/B sheet of `human_eval_rows` rows; a scored `reports/human_eval.json`
  (from `supportlm human-eval score`) is folded into the report when present.

Writes reports/eval.json, reports/eval.md, reports/plots/eval/*.png, reports/eval_generations.jsonl
(every prompt, reference and both replies), reports/human_eval_sheet.{csv,html}, reports/human_eval_key.csv.

Raises:
    DataError: models/base, models/merged or data/formatted/{train,test}.jsonl missing.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.config import Params
from supportlm.errors import DataError
from supportlm.evaluate import checks as chk
from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import SYSTEMS, stratified_sample
from supportlm.evaluate.report import plot_eval, render_markdown
from supportlm.inference.threads import resolve_threads
from supportlm.io import read_rows
from supportlm.logs import ensure_logging
from supportlm.paths import Paths

log = logging.getLogger("supportlm.evaluate")


# ---------------------------------------------------------------- scoring


def score_system(
    replies: Sequence[str],
    examples: Sequence[m.Example],
    nll: Sequence[tuple[float, int]] | None,
    classifier: chk.IntentClassifier | None,
    ngram: int = 3,
    degenerate_at: float = 0.5,
) -> dict[str, Any]:
    """Every metric for one system's replies on `examples` (overall, per intent, per slice)."""
    refs = [e.reference for e in examples]
    row_checks = [
        chk.row_checks(r, e.reference, chk.conversation_prompt(e.prompt), ngram, degenerate_at)
        for r, e in zip(replies, examples, strict=True)
    ]
    predicted = classifier.predict(replies) if classifier else None

    def block(idx: list[int]) -> dict[str, Any]:
        hyp = [replies[i] for i in idx]
        ref = [refs[i] for i in idx]
        out: dict[str, Any] = {"num_samples": len(idx)}
        if nll is not None:
            out["perplexity"] = m.perplexity(sum(nll[i][0] for i in idx), sum(nll[i][1] for i in idx))
        out.update(m.text_metrics(hyp, ref))
        out["checks"] = chk.aggregate([row_checks[i] for i in idx])
        if predicted is not None:
            out["intent_accuracy"] = sum(predicted[i] == examples[i].intent for i in idx) / len(idx)
        return out

    overall = block(list(range(len(examples))))
    groups: dict[str, dict[str, list[int]]] = {"intent": defaultdict(list), "kind": defaultdict(list)}
    for i, e in enumerate(examples):
        groups["intent"][e.intent].append(i)
        groups["kind"][e.kind or "unknown"].append(i)
    overall["per_intent"] = {k: _compact(block(v)) for k, v in sorted(groups["intent"].items())}
    overall["per_slice"] = {k: _compact(block(v)) for k, v in sorted(groups["kind"].items())}
    overall["rows"] = [
        {
            "bleu": m.sentence_bleu(r, e.reference),
            "rougeL": rl["rougeL"],
            "intent_pred": predicted[i] if predicted else None,
            **{k: c[k] for k in ("length_ratio", "repeated_ngram_rate", "degenerate")},
            "placeholder_recall": c["placeholders"]["recall"],
        }
        for i, (r, e, c, rl) in enumerate(
            zip(replies, examples, row_checks, m.rouge_rows(replies, refs), strict=True)
        )
    ]
    return overall


def _compact(b: dict[str, Any]) -> dict[str, Any]:
    """Per-group block: headline numbers + the two checks that matter most, not the whole checks dict."""
    c = b.pop("checks")
    b["placeholder_recall"] = c.get("placeholder_recall")
    b["degenerate_rate"] = c.get("degenerate_rate")
    return b


def decode_and_score_nll(model_dir: Path, examples: Sequence[m.Example], p: Any) -> dict[str, Any]:
    """Load one HF model, greedy-decode every prompt, score reference NLL; free the model."""
    from supportlm.inference.engines import HFEngine

    t0 = time.perf_counter()
    engine = HFEngine.load(model_dir)
    load_s = time.perf_counter() - t0
    prompts = [engine.prompt_ids(e.prompt, p.max_prompt_tokens) for e in examples]
    t1 = time.perf_counter()
    gens = engine.generate_ids(prompts, p.max_new_tokens, p.batch_size)
    gen_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    nll = m.reply_nll_hf(engine.model, engine.tokenizer, examples, min(p.batch_size, 8), p.max_prompt_tokens)
    ppl_s = time.perf_counter() - t2
    new_tokens = sum(g.completion_tokens for g in gens)
    log.info(
        "%s: load %.1f s; generate %d rows x <= %d tokens: %s tokens in %.0f s (%.1f tok/s batched); "
        "perplexity %.0f s",
        model_dir,
        load_s,
        len(prompts),
        p.max_new_tokens,
        f"{new_tokens:,}",
        gen_s,
        new_tokens / max(gen_s, 1e-9),
        ppl_s,
    )
    del engine
    gc.collect()
    return {
        "replies": [g.text for g in gens],
        "finish": [g.finish_reason for g in gens],
        "nll": nll,
        "timing": {
            "load_s": round(load_s, 2),
            "generate_s": round(gen_s, 2),
            "perplexity_s": round(ppl_s, 2),
            "new_tokens": new_tokens,
            "batched_tokens_per_s": round(new_tokens / gen_s, 1) if gen_s else None,
            "hit_max_new_tokens_rate": sum(f == "length" for f in (g.finish_reason for g in gens))
            / len(gens),
        },
    }


# ---------------------------------------------------------------- stage


def evaluate(
    base_dir: Path,
    finetuned_dir: Path,
    test_path: Path,
    train_path: Path,
    p: Any,
    reports: Path,
    base_model_id: str = "",
    params_hash: str = "",
) -> dict[str, Any]:
    """Run the whole evaluation and write every report file; returns the eval.json dict."""
    import torch

    from supportlm.io import write_json
    from supportlm.lineage import peak_rss_mb

    t_start = time.perf_counter()
    for d in (base_dir, finetuned_dir):
        if not (Path(d) / "config.json").is_file():
            raise DataError(f"{d}: not an HF model dir; run `dvc repro base_model` / `dvc repro merge`")
    torch.manual_seed(p.seed)
    threads = resolve_threads(p.threads)
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%s; %d cores)", threads, "evaluate.threads" if p.threads else "auto: idle cores",
             os.cpu_count() or 1)  # fmt: skip
    reports.mkdir(parents=True, exist_ok=True)
    sample = stratified_sample(read_rows(test_path, "format"), p.sample_rows, p.seed)
    examples = [m.to_example(r) for r in sample]

    t0 = time.perf_counter()
    classifier = chk.train_intent_classifier(read_rows(train_path, "format"), p.seed, p.classifier_rows)
    clf_s = time.perf_counter() - t0
    ref_acc = classifier.accuracy([e.reference for e in examples], [e.intent for e in examples])
    log.info(
        "sample: %d test rows, %d intents; intent classifier on %s train replies in %.1f s "
        "(accuracy on the sampled references %.3f)",
        len(examples),
        len({e.intent for e in examples}),
        f"{classifier.n_train:,}",
        clf_s,
        ref_acc,
    )

    runs = {"base": decode_and_score_nll(Path(base_dir), examples, p)}
    runs["finetuned"] = decode_and_score_nll(Path(finetuned_dir), examples, p)
    result: dict[str, Any] = {}
    rows_scores: dict[str, list[dict[str, Any]]] = {}
    for name in SYSTEMS:
        scored = score_system(
            runs[name]["replies"],
            examples,
            runs[name]["nll"],
            classifier,
            p.repetition_ngram,
            p.degenerate_repetition,
        )
        rows_scores[name] = scored.pop("rows")
        result[name] = scored
    headline = ("perplexity", "bleu", "rouge1", "rouge2", "rougeL", "intent_accuracy")
    result["delta"] = {k: result["finetuned"][k] - result["base"][k] for k in headline}
    result["delta_ci"] = paired_intervals(rows_scores, runs, p.seed)
    result["overall"] = {name: {k: result[name][k] for k in headline} for name in SYSTEMS}
    result["per_slice"] = {
        k: {name: result[name]["per_slice"][k] for name in SYSTEMS} for k in result["base"]["per_slice"]
    }
    result["intent_accuracy_reference"] = ref_acc  # classifier ceiling: accuracy on the reference replies
    result["sample"] = {
        "rows": len(examples),
        "intents": len({e.intent for e in examples}),
        "seed": p.seed,
        "max_new_tokens": p.max_new_tokens,
        "test_file": str(test_path),
        "turn": "first assistant turn, prompt = system + first user message",
    }
    result["params_hash"] = params_hash
    result["base_model"] = base_model_id
    result["models"] = {"base": str(base_dir), "finetuned": str(finetuned_dir)}
    result["timing"] = {
        "classifier_s": round(clf_s, 2),
        **{f"{name}_{k}": v for name in SYSTEMS for k, v in runs[name]["timing"].items()},
        "torch_threads": torch.get_num_threads(),
    }

    # every generation, for the human-eval re-export and for reading replies without rerunning models
    gen_rows = [
        {
            "id": e.id,
            "intent": e.intent,
            "kind": e.kind,
            "messages": e.prompt,
            "reference": e.reference,
            **{name: runs[name]["replies"][i] for name in SYSTEMS},
            **{f"{name}_finish": runs[name]["finish"][i] for name in SYSTEMS},
        }
        for i, e in enumerate(examples)
    ]
    (reports / "eval_generations.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in gen_rows), encoding="utf-8"
    )

    # human eval: sheet for raters now; a scored result (if any) folded in
    if p.human_eval_rows:
        from supportlm.evaluate import human

        n = min(p.human_eval_rows, len(examples))
        items = [
            {
                "id": e.id,
                "intent": e.intent,
                "messages": e.prompt,
                "base": runs["base"]["replies"][i],
                "finetuned": runs["finetuned"]["replies"][i],
            }
            for i, e in enumerate(examples[:n])
        ]
        result["human_eval_sheet"] = human.export(
            items,
            reports / "human_eval_sheet.csv",
            reports / "human_eval_key.csv",
            reports / "human_eval_sheet.html",
            seed=p.seed,
        )
    # a scored sheet (reports/human_eval.json, from `supportlm human-eval score`) is not read here:
    # it is not a stage dep, so folding it in would make this stage's output depend on an undeclared file.
    # The report stage shows it.

    plots = plot_eval(result, rows_scores, reports / "plots" / "eval")
    result["plots"] = [str(x) for x in plots]
    result["timing"]["total_s"] = round(time.perf_counter() - t_start, 1)
    result["peak_rss_mb"] = peak_rss_mb()
    write_json(reports / "eval.json", result)
    log.info(
        "ROUGE-L base %.3f -> finetuned %.3f; perplexity %.2f -> %.2f; wrote %s (%.0f s)",
        result["base"]["rougeL"],
        result["finetuned"]["rougeL"],
        result["base"]["perplexity"],
        result["finetuned"]["perplexity"],
        reports / "eval.json",
        result["timing"]["total_s"],
    )
    md = render_markdown(result, examples, runs, rows_scores, p.examples, reports)
    (reports / "eval.md").write_text(md, encoding="utf-8")
    return result


def paired_intervals(
    rows_scores: dict[str, list[dict[str, Any]]], runs: dict[str, dict[str, Any]], seed: int
) -> dict[str, Any]:
    """Fine-tuned minus base on the same rows, with paired bootstrap 95% intervals: ROUGE-L and BLEU in
    points (BLEU per sentence: corpus BLEU is not a mean over rows), perplexity as a ratio."""
    import math

    from supportlm.evaluate import intervals

    ft, base = rows_scores["finetuned"], rows_scores["base"]
    out: dict[str, Any] = {
        "rougeL_points": intervals.paired_difference([r["rougeL"] for r in ft], [r["rougeL"] for r in base],
                                                     scale=100, seed=seed),
        "sentence_bleu": intervals.paired_difference([r["bleu"] for r in ft], [r["bleu"] for r in base], seed=seed),
    }  # fmt: skip
    nll_ft, nll_base = runs["finetuned"]["nll"], runs["base"]["nll"]
    if nll_ft is not None and nll_base is not None:
        d = intervals.paired_ratio_difference([a for a, _ in nll_ft], [a for a, _ in nll_base], [n for _, n in nll_ft],
                                              seed=seed)  # fmt: skip
        out["perplexity_ratio"] = {"ratio": math.exp(d["delta"]), "low": math.exp(d["low"]),
                                   "high": math.exp(d["high"]), "n": d["n"]}  # fmt: skip
    return out


def run_evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    """The evaluate stage: reads params.evaluate and params.base_model.base (for lineage)."""
    from supportlm.lineage import params_hash

    ensure_logging()
    return evaluate(
        base_dir=paths.base_model,
        finetuned_dir=paths.merged,
        test_path=paths.formatted / "test.jsonl",
        train_path=paths.formatted / "train.jsonl",
        p=params.evaluate,
        reports=paths.reports,
        base_model_id=params.base_model.base,
        params_hash=params_hash(params.evaluate),
    )
