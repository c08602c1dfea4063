"""reports/eval.md and reports/plots/eval/*.png from the evaluate stage's result (no scoring here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import SYSTEMS


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
