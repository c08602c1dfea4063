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

from supportlm.errors import DataError
from supportlm.evaluate import checks as chk
from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import base_model_id, read_jsonl, stratified_sample
from supportlm.inference.threads import resolve_threads
from supportlm.logs import ensure_logging
from supportlm.paths import stage_dir

SYSTEMS = ("base", "finetuned")
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

    from supportlm.lineage import peak_rss_mb, write_json

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
    sample = stratified_sample(read_jsonl(test_path), p.sample_rows, p.seed)
    examples = [m.to_example(r) for r in sample]

    t0 = time.perf_counter()
    classifier = chk.train_intent_classifier(read_jsonl(train_path), p.seed, p.classifier_rows)
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


def run_evaluate(params: Any, paths: Any) -> dict[str, Any]:
    """Stage runner: `params` is the root Params (with `.evaluate`) or an EvaluateParams."""
    from supportlm.config import EvaluateParams, stage_block
    from supportlm.lineage import params_hash

    ensure_logging()
    p = stage_block(params, "evaluate", EvaluateParams)
    base_model = getattr(getattr(params, "base_model", None), "base", "") or base_model_id(paths)
    formatted = stage_dir(paths, "formatted", "data", "formatted")
    return evaluate(
        base_dir=stage_dir(paths, "base_model", "models", "base"),
        finetuned_dir=stage_dir(paths, "merged", "models", "merged"),
        test_path=formatted / "test.jsonl",
        train_path=formatted / "train.jsonl",
        p=p,
        reports=stage_dir(paths, "reports", "reports"),
        base_model_id=base_model,
        params_hash=params_hash(p),
    )


# ---------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def render_markdown(
    result: dict[str, Any],
    examples: Sequence[m.Example],
    runs: dict[str, Any],
    rows_scores: dict[str, list[dict[str, Any]]],
    n_examples: int,
    reports: Path,
) -> str:
    b, f = result["base"], result["finetuned"]
    lines = [
        "# Evaluation: base vs fine-tuned",
        "",
        (
            f"{result['sample']['rows']} test rows ({result['sample']['intents']} intents, seed "
            f"{result['sample']['seed']}), greedy decoding, max {result['sample']['max_new_tokens']} new tokens; "
            f"base model `{result['base_model']}`; params hash `{result['params_hash']}`; "
            f"stage time {result['timing']['total_s']:.0f} s."
        ),
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---:|---:|---:|",
    ]
    for k, lab, d in (
        ("perplexity", "perplexity (reference reply) ↓", 2),
        ("bleu", "BLEU", 2),
        ("rouge1", "ROUGE-1", 3),
        ("rouge2", "ROUGE-2", 3),
        ("rougeL", "ROUGE-L", 3),
        ("intent_accuracy", "intent addressed (classifier acc.)", 3),
    ):
        lines.append(f"| {lab} | {_fmt(b[k], d)} | {_fmt(f[k], d)} | {_fmt(f[k] - b[k], d)} |")
    lines.append(
        f"\nIntent classifier accuracy on the reference replies (ceiling): "
        f"{result['intent_accuracy_reference']:.3f}.\n"
    )
    lines += ["## Support checks", "", "| check | base | fine-tuned |", "|---|---:|---:|"]
    for k, lab in (
        ("placeholder_recall", "placeholders kept (recall)"),
        ("placeholder_all_kept_rate", "rows with every placeholder kept"),
        ("invented_placeholder_rate", "rows with invented placeholders ↓"),
        ("length_ratio_median", "length ratio vs reference (median)"),
        ("too_short_rate", "too short (< 0.5x) ↓"),
        ("too_long_rate", "too long (> 2x) ↓"),
        ("empty_rate", "empty ↓"),
        ("degenerate_rate", "degenerate ↓"),
        ("repeated_ngram_rate", "repeated n-gram rate ↓"),
    ):
        lines.append(f"| {lab} | {_fmt(b['checks'][k])} | {_fmt(f['checks'][k])} |")
    lines += [
        "",
        "## Per slice",
        "",
        "| slice | n | ROUGE-L base | ROUGE-L ft | ppl base | ppl ft |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, v in result["per_slice"].items():
        lines.append(
            f"| {k} | {v['base']['num_samples']} | {_fmt(v['base']['rougeL'])} | "
            f"{_fmt(v['finetuned']['rougeL'])} | {_fmt(v['base']['perplexity'], 2)} | "
            f"{_fmt(v['finetuned']['perplexity'], 2)} |"
        )
    lines += [
        "",
        "## Per intent",
        "",
        "| intent | n | ROUGE-L base | ROUGE-L ft | intent acc base | intent acc ft |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in sorted(f["per_intent"], key=lambda i: f["per_intent"][i]["rougeL"]):
        bi, fi = b["per_intent"][k], f["per_intent"][k]
        lines.append(
            f"| {k} | {fi['num_samples']} | {_fmt(bi['rougeL'])} | {_fmt(fi['rougeL'])} | "
            f"{_fmt(bi.get('intent_accuracy'), 2)} | {_fmt(fi.get('intent_accuracy'), 2)} |"
        )
    if "human_eval_sheet" in result:
        s = result["human_eval_sheet"]
        lines += [
            "",
            "## Human evaluation",
            "",
            (
                f"Blind A/B sheet with {s['items']} rows: `{s['sheet']}` (spreadsheet) or `{s['html']}` "
                f"(open in a browser). Score filled sheets with `supportlm human-eval score FILES --key {s['key']}` "
                "(writes reports/human_eval.json; `make report` shows the win rate)."
            ),
        ]
    lines += ["", "## Plots", ""] + [
        f"![{Path(pth).stem}]({Path(pth).relative_to(reports)})" for pth in result["plots"]
    ]
    lines += ["", "## Examples", ""]
    # examples: the rows where fine-tuning changed ROUGE-L most (both directions) + a random one
    gain = sorted(
        range(len(examples)),
        key=lambda i: rows_scores["finetuned"][i]["rougeL"] - rows_scores["base"][i]["rougeL"],
    )
    picks: list[int] = []
    for i in [*gain[::-1][: max(1, n_examples - 2)], gain[0], len(examples) // 2]:
        if i not in picks and len(picks) < n_examples:
            picks.append(i)
    for i in picks:
        e = examples[i]
        user = next(x["content"] for x in reversed(e.prompt) if x["role"] == "user")
        lines += [
            f"### `{e.id}` ({e.intent}, {e.kind})",
            "",
            "| | reply | ROUGE-L |",
            "|---|---|---:|",
            f"| **customer** | {_cell(user)} | |",
            f"| **reference** | {_cell(e.reference)} | |",
            f"| **base** | {_cell(runs['base']['replies'][i])} | {rows_scores['base'][i]['rougeL']:.3f} |",
            (
                f"| **fine-tuned** | {_cell(runs['finetuned']['replies'][i])} | "
                f"{rows_scores['finetuned'][i]['rougeL']:.3f} |"
            ),
            "",
        ]
    t = result["timing"]
    lines += [
        "## Timing",
        "",
        (
            f"base: generate {t['base_generate_s']:.0f} s ({t['base_batched_tokens_per_s']} tok/s batched), "
            f"perplexity {t['base_perplexity_s']:.0f} s; fine-tuned: generate {t['finetuned_generate_s']:.0f} s "
            f"({t['finetuned_batched_tokens_per_s']} tok/s), perplexity {t['finetuned_perplexity_s']:.0f} s; "
            f"{t['torch_threads']} torch threads; peak RSS {result['peak_rss_mb']:,.0f} MB."
        ),
        "",
    ]
    return "\n".join(lines)


def _cell(text: str, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def plot_eval(
    result: dict[str, Any], rows_scores: dict[str, list[dict[str, Any]]], out_dir: Path
) -> list[Path]:
    """Headline bars, per-intent ROUGE-L, and the per-row length-ratio / ROUGE-L distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    colors = {"base": "#9aa5b1", "finetuned": "#1f77b4"}
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    keys = ["rouge1", "rouge2", "rougeL", "intent_accuracy"]
    x = np.arange(len(keys))
    for j, name in enumerate(SYSTEMS):
        vals = [result[name][k] for k in keys]
        axes[0].bar(x + (j - 0.5) * 0.38, vals, 0.38, label=name, color=colors[name])
        for xi, v in zip(x, vals, strict=True):
            axes[0].text(xi + (j - 0.5) * 0.38, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    axes[0].set_xticks(x, ["ROUGE-1", "ROUGE-2", "ROUGE-L", "intent acc."])
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(frameon=False)
    axes[0].set_title("overlap with reference & intent (higher is better)")
    top = max(max(result[name]["bleu"] for name in SYSTEMS), 1.0)
    for j, name in enumerate(SYSTEMS):
        axes[1].bar(j, result[name]["bleu"], color=colors[name])
        axes[1].text(
            j, result[name]["bleu"] + 0.02 * top, f"{result[name]['bleu']:.1f}", ha="center", fontsize=8
        )
    axes[1].set_ylim(0, top * 1.15)
    axes[1].set_xticks([0, 1], list(SYSTEMS))
    axes[1].set_title("BLEU")
    fig.tight_layout()
    paths.append(out_dir / "metrics.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    intents = sorted(
        result["finetuned"]["per_intent"], key=lambda k: result["finetuned"]["per_intent"][k]["rougeL"]
    )
    fig, ax = plt.subplots(figsize=(8, 0.26 * len(intents) + 1.2))
    y = np.arange(len(intents))
    for j, name in enumerate(SYSTEMS):
        ax.barh(
            y + (j - 0.5) * 0.4,
            [result[name]["per_intent"][k]["rougeL"] for k in intents],
            0.4,
            label=name,
            color=colors[name],
        )
    ax.set_yticks(y, intents, fontsize=7)
    ax.set_xlabel("ROUGE-L (F)")
    ax.set_title("ROUGE-L per intent")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    paths.append(out_dir / "per_intent_rougeL.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in SYSTEMS:
        lr = np.clip([r["length_ratio"] for r in rows_scores[name]], 0, 4)
        axes[0].hist(lr, bins=np.linspace(0, 4, 25), alpha=0.6, label=name, color=colors[name])
        axes[1].hist(
            [r["rougeL"] for r in rows_scores[name]],
            bins=np.linspace(0, 1, 21),
            alpha=0.6,
            label=name,
            color=colors[name],
        )
    axes[0].axvline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_xlabel("reply / reference length (words, clipped at 4)")
    axes[1].set_xlabel("per-row ROUGE-L")
    for a in axes:
        a.set_ylabel("rows")
        a.legend(frameon=False)
    fig.tight_layout()
    paths.append(out_dir / "distributions.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
