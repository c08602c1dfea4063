"""reports/eval.md and reports/plots/eval/*.png from the evaluate stage's result (no scoring here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import SYSTEMS
from supportlm.render import Document, Strong, fmt, signed

HEADLINE = (  # (key, label, decimals)
    ("perplexity", "perplexity (reference reply) ↓", 2),
    ("bleu", "BLEU", 2),
    ("rouge1", "ROUGE-1", 3),
    ("rouge2", "ROUGE-2", 3),
    ("rougeL", "ROUGE-L", 3),
    ("intent_accuracy", "intent addressed (classifier acc.)", 3),
)
CHECKS = (
    ("placeholder_recall", "placeholders kept (recall)"),
    ("placeholder_all_kept_rate", "rows with every placeholder kept"),
    ("invented_placeholder_rate", "rows with invented placeholders ↓"),
    ("length_ratio_median", "length ratio vs reference (median)"),
    ("too_short_rate", "too short (< 0.5x) ↓"),
    ("too_long_rate", "too long (> 2x) ↓"),
    ("empty_rate", "empty ↓"),
    ("degenerate_rate", "degenerate ↓"),
    ("repeated_ngram_rate", "repeated n-gram rate ↓"),
)


def render_markdown(
    result: dict[str, Any],
    examples: Sequence[m.Example],
    runs: dict[str, Any],
    rows_scores: dict[str, list[dict[str, Any]]],
    n_examples: int,
    reports: Path,
) -> str:
    """reports/eval.md (images relative to `reports`)."""
    return build_document(result, examples, runs, rows_scores, n_examples).to_md(reports)


def build_document(
    result: dict[str, Any],
    examples: Sequence[m.Example],
    runs: dict[str, Any],
    rows_scores: dict[str, list[dict[str, Any]]],
    n_examples: int,
) -> Document:
    """Headline metrics, support checks, per slice/intent, human eval, plots, examples, timing."""
    doc = Document()
    doc.h(1, "Evaluation: base vs fine-tuned")
    _headline(doc, result)
    _checks(doc, result)
    _per_slice(doc, result)
    _per_intent(doc, result)
    if "human_eval_sheet" in result:
        _human_eval(doc, result["human_eval_sheet"])
    doc.h(2, "Plots")
    for pth in result["plots"]:
        doc.image(Path(pth).resolve(), Path(pth).stem)
    doc.h(2, "Examples")
    for i in pick_examples(rows_scores, n_examples):
        _example(doc, examples[i], runs, rows_scores, i)
    _timing(doc, result)
    return doc


def _headline(doc: Document, result: dict[str, Any]) -> None:
    s, b, f = result["sample"], result["base"], result["finetuned"]
    doc.p(
        f"{s['rows']} test rows ({s['intents']} intents, seed {s['seed']}), greedy decoding, max "
        f"{s['max_new_tokens']} new tokens; base model `{result['base_model']}`; params hash "
        f"`{result['params_hash']}`; stage time {result['timing']['total_s']:.0f} s."
    )
    rows = [(lab, fmt(b[k], f".{d}f"), fmt(f[k], f".{d}f"), signed(f[k] - b[k], d)) for k, lab, d in HEADLINE]
    doc.table(["metric", "base", "fine-tuned", "delta"], rows, align_right=(1, 2, 3))
    ci = result.get("delta_ci") or {}
    if ci:
        parts = []
        if (r := ci.get("rougeL_points")) is not None:
            parts.append(f"ROUGE-L {r['delta']:+.2f} points [{r['low']:+.2f}, {r['high']:+.2f}]")
        if (r := ci.get("sentence_bleu")) is not None:
            parts.append(f"sentence BLEU {r['delta']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]")
        if (r := ci.get("perplexity_ratio")) is not None:
            parts.append(f"perplexity × {r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
        doc.p(
            "Fine-tuned minus base on the same rows, paired bootstrap 95% intervals (2,000 resamples): "
            + "; ".join(parts) + "."
        )
    doc.p(
        "Intent classifier accuracy on the reference replies (ceiling): "
        f"{fmt(result['intent_accuracy_reference'], '.3f')}."
    )


def _checks(doc: Document, result: dict[str, Any]) -> None:
    b, f = result["base"]["checks"], result["finetuned"]["checks"]
    doc.h(2, "Support checks")
    rows = [(lab, fmt(b[k], ".3f"), fmt(f[k], ".3f")) for k, lab in CHECKS]
    doc.table(["check", "base", "fine-tuned"], rows, align_right=(1, 2))


def _per_slice(doc: Document, result: dict[str, Any]) -> None:
    doc.h(2, "Per slice")
    rows = [
        (k, v["base"]["num_samples"], fmt(v["base"]["rougeL"], ".3f"), fmt(v["finetuned"]["rougeL"], ".3f"),
         fmt(v["base"]["perplexity"], ".2f"), fmt(v["finetuned"]["perplexity"], ".2f"))
        for k, v in result["per_slice"].items()
    ]  # fmt: skip
    head = ["slice", "n", "ROUGE-L base", "ROUGE-L ft", "ppl base", "ppl ft"]
    doc.table(head, rows, align_right=range(1, 6))


def _per_intent(doc: Document, result: dict[str, Any]) -> None:
    b, f = result["base"]["per_intent"], result["finetuned"]["per_intent"]
    doc.h(2, "Per intent")
    rows = [
        (k, f[k]["num_samples"], fmt(b[k]["rougeL"], ".3f"), fmt(f[k]["rougeL"], ".3f"),
         fmt(b[k].get("intent_accuracy"), ".2f"), fmt(f[k].get("intent_accuracy"), ".2f"))
        for k in sorted(f, key=lambda i: f[i]["rougeL"])
    ]  # fmt: skip
    head = ["intent", "n", "ROUGE-L base", "ROUGE-L ft", "intent acc base", "intent acc ft"]
    doc.table(head, rows, align_right=range(1, 6))


def _human_eval(doc: Document, s: dict[str, Any]) -> None:
    doc.h(2, "Human evaluation")
    doc.p(
        f"Blind A/B sheet with {s['items']} rows: `{s['sheet']}` (spreadsheet) or `{s['html']}` "
        f"(open in a browser). Score filled sheets with `supportlm human-eval score FILES --key {s['key']}` "
        "(writes reports/human_eval.json; `make report` shows the win rate)."
    )


def pick_examples(rows_scores: dict[str, list[dict[str, Any]]], n: int) -> list[int]:
    """Up to `n` row indices: the biggest ROUGE-L gains from fine-tuning, the biggest loss, a middle row."""
    gain = sorted(
        range(len(rows_scores["base"])),
        key=lambda i: rows_scores["finetuned"][i]["rougeL"] - rows_scores["base"][i]["rougeL"],
    )
    picks: list[int] = []
    for i in [*gain[::-1][: max(1, n - 2)], gain[0], len(gain) // 2]:
        if i not in picks and len(picks) < n:
            picks.append(i)
    return picks


def _example(
    doc: Document, e: m.Example, runs: dict[str, Any], rows_scores: dict[str, list[dict[str, Any]]], i: int
) -> None:
    user = next(x["content"] for x in reversed(e.prompt) if x["role"] == "user")
    doc.h(3, f"`{e.id}` ({e.intent}, {e.kind})")
    rows = [
        (Strong("customer"), reply_cell(user), ""),
        (Strong("reference"), reply_cell(e.reference), ""),
        *((Strong(lab), reply_cell(runs[name]["replies"][i]), fmt(rows_scores[name][i]["rougeL"], ".3f"))
          for name, lab in (("base", "base"), ("finetuned", "fine-tuned"))),
    ]  # fmt: skip
    doc.table(["", "reply", "ROUGE-L"], rows, align_right=(2,))


def _timing(doc: Document, result: dict[str, Any]) -> None:
    t = result["timing"]
    doc.h(2, "Timing")
    doc.p(
        f"base: generate {t['base_generate_s']:.0f} s ({t['base_batched_tokens_per_s']} tok/s batched), "
        f"perplexity {t['base_perplexity_s']:.0f} s; fine-tuned: generate {t['finetuned_generate_s']:.0f} s "
        f"({t['finetuned_batched_tokens_per_s']} tok/s), perplexity {t['finetuned_perplexity_s']:.0f} s; "
        f"{t['torch_threads']} torch threads; peak RSS {fmt(result['peak_rss_mb'], ',.0f')} MB."
    )


def reply_cell(text: str, limit: int = 600) -> str:
    """A reply for a table cell: cut at `limit` characters, "_(empty)_" when empty."""
    return (text if len(text) <= limit else text[: limit - 1] + "…") or "_(empty)_"


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
