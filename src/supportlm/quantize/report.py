"""reports/quantization.md and reports/plots/quantize/*.png from the quantize stage's result.

Why a module of its own: the stage (run.py) measures; this one only presents, so the presentation can
change without touching how anything is measured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from supportlm.evaluate import metrics as m
from supportlm.render import Code, Document, Strong, Table, fmt, pct, signed

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
    """Variants with their intervals, the serving rule's verdicts, calibration, targets, plots, one example."""
    s = result["slice"]
    doc = Document()
    doc.h(1, "Quantization: size, accuracy and speed")
    doc.p(
        f"GGUF variants answer the same {s['rows']} test rows (seed {s['seed']}, stratified by intent); the HF "
        f"reference and the torch variants, slower on CPU, the first {s['reference_rows']} of them. Greedy, max "
        f"{s['max_new_tokens']} new tokens; perplexity of the reference replies; tok/s = single-stream decode "
        f"(after the first token). Base model `{result['base_model']}`; params hash `{result['params_hash']}`; "
        f"stage time {result['timing']['total_s']:.0f} s."
    )
    doc.p(
        "Every comparison with f16 is paired: both models answered the same rows, and the 95% interval is a "
        "paired bootstrap over rows (2,000 resamples, percentile). KL-divergence: llama-perplexity "
        f"--kl-divergence against f16's token distributions on {result['kld']['tokens']:,} held-out tokens "
        "(test replies outside the eval rows); it measures damage at every position, not only on the tokens "
        "a greedy reply happens to produce."
    )
    _variants_table(doc, result["variants"])
    _resolution(doc, result)
    if result.get("served"):
        _rule(doc, result["served"])
    if result.get("imatrix"):
        _calibration(doc, result)
    if result.get("lookup_cache"):
        _lookup(doc, result["lookup_cache"])
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


def _interval(ci: list[float] | None, digits: int = 2) -> str:
    return "–" if not ci else f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def _variants_table(doc: Document, variants: list[dict[str, Any]]) -> None:
    """One row per variant; size change vs f16 as a signed percentage (a 60% reduction is -60%)."""
    head = ["variant", "rows", "size (MB)", "vs f16", "perplexity ↓", "ppl ratio vs f16 [95%]", "ROUGE-L",
            "Δ ROUGE-L vs f16 (pts)", "95% interval", "mean KLD", "same top token", "tok/s", "TTFT (ms)"]  # fmt: skip
    rows = []
    for v in variants:
        ppl = v.get("perplexity_ratio_vs_f16")
        kld = v.get("kld") or {}
        rows.append([
            v["name"], fmt(v.get("rows"), "d"), fmt(_scaled(v["size_bytes"], 1e-6), ",.1f"),
            fmt(_scaled(v["reduction_vs_f16"], -1), "+.0%"), fmt(v["perplexity"], ".2f"),
            "–" if not ppl else f"{ppl['ratio']:.3f} [{ppl['low']:.3f}, {ppl['high']:.3f}]",
            fmt(v["rougeL"], ".3f"), signed(v.get("rougeL_delta_vs_f16_points"), 2), _interval(v.get("rougeL_delta_ci")),
            fmt(kld.get("mean_kld"), ".4f"), pct(kld.get("same_top_p")), fmt(v["tokens_per_s"], ".1f"),
            fmt(v.get("ttft_ms"), ".0f"),
        ])  # fmt: skip
    doc.table(head, rows, align_right=range(1, len(head)))


def _resolution(doc: Document, result: dict[str, Any]) -> None:
    """How many rows a 2-point difference needs at the per-row spread this run measured."""
    spread = [(v["name"], v["rougeL_vs_f16"]) for v in result["variants"]
              if v.get("rougeL_vs_f16") and v["name"] != "f16" and not math.isnan(v["rougeL_vs_f16"]["sd"])]  # fmt: skip
    if not spread:
        return
    worst = max(spread, key=lambda x: x[1]["sd"])
    doc.h(2, "Can these rows tell a 2-point difference?")
    doc.p(
        f"A 95% interval's half-width is 1.96 × sd / √rows, where sd is the spread of the per-row ROUGE-L "
        f"differences. The widest spread here is {worst[0]}'s, {worst[1]['sd']:.1f} points over {worst[1]['n']} rows: "
        f"a 2-point difference needs {worst[1]['rows_to_resolve_2']} rows for its interval to exclude zero. "
        "Per variant:"
    )
    doc.table(["variant", "rows", "sd of row differences (pts)", "interval half-width (pts)", "rows to resolve 2 pts"],
              [[n, fmt(r["n"], "d"), fmt(r["sd"], ".1f"), fmt(r["half_width"], ".2f"), fmt(r["rows_to_resolve_2"], "d")]
               for n, r in spread], align_right=range(1, 5))  # fmt: skip


def _rule(doc: Document, served: dict[str, Any]) -> None:
    doc.h(2, f"Served: {served['name']}")
    doc.p(
        f"Rule: {served['rule']}. The choice is `{served['served_file']}` (the file `serve.model.path`, compose "
        "and the serve image name) and `served.json` beside it (`bench.primary: served` reads it)."
    )
    doc.table(["variant", "eligible", "ROUGE-L interval low (pts)", "tok/s", "mean KLD", "size (MB)"],
              [[c["variant"] + (" ← served" if c["variant"] == served["name"] else ""),
                "yes" if c["eligible"] else f"no: {c['why_not']}", signed(c["rougeL_low_points"], 2),
                fmt(c["tokens_per_s"], ".1f"), fmt(c["mean_kld"], ".4f"), fmt(c["size_bytes"] / 1e6, ",.1f")]
               for c in served["candidates"]], align_right={2, 3, 4, 5})  # fmt: skip


def _calibration(doc: Document, result: dict[str, Any]) -> None:
    """Each calibrated variant beside its uncalibrated twin (where both ran)."""
    im = result["imatrix"]
    by = {v["name"]: v for v in result["variants"]}
    doc.h(2, "Calibrated quantization (importance matrix)")
    doc.p(f"llama-imatrix on {im['tokens']:,} tokens ({im['chunks']} × {im['ctx']}) of {im['corpus']}, "
          f"{im['seconds']:.0f} s; then llama-quantize --imatrix for {', '.join(im['types'])}.")  # fmt: skip
    rows = []
    for t in im["types"]:
        cal, plain = by.get(f"{t}-imat"), by.get(t)
        if cal is None:
            continue
        rows.append([t, signed(plain and plain.get("rougeL_delta_vs_f16_points"), 2),
                     signed(cal.get("rougeL_delta_vs_f16_points"), 2),
                     fmt(plain and (plain.get("kld") or {}).get("mean_kld"), ".4f"),
                     fmt((cal.get("kld") or {}).get("mean_kld"), ".4f")])  # fmt: skip
    doc.table(["type", "Δ ROUGE-L plain", "Δ ROUGE-L calibrated", "mean KLD plain", "mean KLD calibrated"], rows,
              align_right={1, 2, 3, 4})  # fmt: skip


def _lookup(doc: Document, lookup: dict[str, Any]) -> None:
    st = lookup["stats"]
    doc.h(2, "N-gram cache for lookup decoding")
    acc = "n/a" if st["acceptance"] is None else f"{st['acceptance']:.1%}"
    doc.p(
        f"`{lookup['path']}` ({lookup['size_bytes'] / 1e6:,.1f} MB, {lookup['seconds']:.0f} s): llama-lookup-create on "
        f"{lookup['corpus']}. llama-lookup-stats on {st['text']}: {st['accepted']:,} of {st['drafted']:,} drafted "
        f"tokens match the text that follows ({acc}). That is the acceptance a model writing like the references "
        "would see; what serving with the cache buys (llama-server --spec-type ngram-cache --lookup-cache-static) "
        "is measured by the bench (reports/bench.md, engine tuning)."
    )


def _scaled(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _clip(text: str, limit: int = 400) -> str:
    """A reply for a table cell: cut at `limit` characters, "_(empty)_" when empty."""
    return (text if len(text) <= limit else text[: limit - 1] + "…") or "_(empty)_"


def _target_row(t: dict[str, Any]) -> list[Any]:
    measured = pct(t["measured"]) if "reduction" in t["name"] else fmt(t["measured"], "+.2f")
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
    return [path, plot_intervals(result, out_dir)]


def plot_intervals(result: dict[str, Any], out_dir: Path) -> Path:
    """Δ ROUGE-L vs f16 with its 95% interval per variant (the rule's gate drawn) and mean KL-divergence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vs = [v for v in result["variants"] if v.get("rougeL_delta_ci") and v["name"] != "f16"]
    served = (result.get("served") or {}).get("name")
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(vs) + 1.8))
    ys = range(len(vs))
    for y, v in zip(ys, vs, strict=True):
        lo, hi = v["rougeL_delta_ci"]
        color = ("#2ca02c" if v["name"] == served else "#1f77b4" if v.get("file")
                 else "#444" if v["format"].startswith("hf") else "#d62728")  # fmt: skip
        axes[0].plot([lo, hi], [y, y], color=color, lw=2.5)
        axes[0].plot([v["rougeL_delta_vs_f16_points"]], [y], "o", color=color)
    if (drop := (result.get("served") or {}).get("rouge_drop_target")) is not None:
        gate = -drop
        axes[0].axvline(gate, color="#d62728", ls="--", lw=1, label=f"rule's gate ({gate:g} points)")
        axes[0].legend(loc="upper left", fontsize=8)
    axes[0].axvline(0, color="#444", lw=0.8)
    axes[0].set_yticks(list(ys), [f"{v['name']} (n={v['rows']})" for v in vs])
    axes[0].set_xlabel("ROUGE-L vs f16, points (paired bootstrap 95%)")
    axes[0].set_title("accuracy vs f16 (green: served, blue: GGUF, black: HF, red: bnb)")
    axes[0].grid(alpha=0.3)
    kv = [(v["name"], (v.get("kld") or {}).get("mean_kld")) for v in vs if (v.get("kld") or {}).get("mean_kld") is not None]
    if kv:
        axes[1].barh([n for n, _ in kv], [k for _, k in kv], color="#1f77b4")
        for i, (_, k) in enumerate(kv):
            axes[1].text(k, i, f" {k:.4f}", va="center", fontsize=8)
        axes[1].set_xlabel("mean KL-divergence vs f16 (nats/token, held-out text; lower is better)")
    axes[1].set_title("quantization damage (llama-perplexity)")
    axes[1].grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path = out_dir / "intervals.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path



__all__ = ["build_document", "plot", "render_markdown"]
