"""The data-quality report's PNG plots (matplotlib, Agg backend), one file per figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from supportlm.data.quality_defects import RECALL_WARN

PLOTS_SUBDIR = "plots/quality"  # one dir per stage: a DVC out of its own
PLOT_FILES = {
    "intents": "quality_intents_per_split.png",
    "lengths": "quality_lengths.png",
    "reasons": "quality_quarantine_reasons.png",
    "label_quality": "quality_label_quality.png",
    "defects": "quality_defect_detection.png",
}


def write_plots(report: dict, private: dict, plots_dir: Path) -> dict[str, Path]:
    """Write the report's PNGs into `plots_dir`; return {plot key: path} for those written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(fig: Any, key: str) -> None:
        fig.tight_layout()
        path = plots_dir / PLOT_FILES[key]
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[key] = path

    def empty(ax: Any, msg: str) -> None:
        ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#666")
        ax.set_xticks([])
        ax.set_yticks([])

    # 1) intent share per split ---------------------------------------------------
    dist = report["distribution"]["splits"]
    names = list(dist)
    intents = sorted({i for s in names for i in dist[s]["intents"]})
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.12 * len(intents) * max(1, len(names)) + 1.5)))
    if intents:
        y = np.arange(len(intents))
        h = 0.8 / max(1, len(names))
        for k, s in enumerate(names):
            shares = [100 * dist[s]["intents"].get(i, {}).get("share", 0.0) for i in intents]
            ax.barh(
                y + (k - (len(names) - 1) / 2) * h, shares, height=h, label=f"{s} (n={dist[s]['rows']:,})"
            )
        ax.set_yticks(y)
        ax.set_yticklabels(intents, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("share of split rows (%)")
        ax.legend(loc="lower right", fontsize=8)
    else:
        empty(ax, "no split rows")
    ax.set_title("Intent distribution per split")
    save(fig, "intents")

    # 2) word lengths raw vs kept ---------------------------------------------------
    (raw_u, raw_a), (kept_u, kept_a) = private["raw_words"], private["kept_words"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, title, r, k in ((axes[0], "User", raw_u, kept_u), (axes[1], "Assistant", raw_a, kept_a)):
        if len(r) == 0 and len(k) == 0:
            empty(ax, "no rows")
        else:
            both = np.concatenate([r, k]).astype(np.float64)
            hi = max(1.0, float(np.percentile(both, 99)))
            step = max(1, math.ceil(hi / 40))  # integer-aligned bins: word counts are integers
            bins = np.arange(0, hi + step + 1, step) - 0.5
            ax.hist(np.clip(r, 0, hi), bins=bins, histtype="step", linewidth=1.6, label=f"raw (n={len(r):,})")
            ax.hist(
                np.clip(k, 0, hi), bins=bins, histtype="step", linewidth=1.6, label=f"kept (n={len(k):,})"
            )
            ax.set_xlabel("words per row (clipped at p99)")
            ax.set_ylabel("rows")
            ax.legend(fontsize=8)
        ax.set_title(f"{title} text length: raw vs kept")
    save(fig, "lengths")

    # 3) quarantine reasons + change codes ------------------------------------------
    reasons = dict(report["summary"]["quarantined_by_reason"])
    reasons |= {f"ingest:{k}": v for k, v in report["completeness"]["ingest_rejections_by_reason"].items()}
    codes = report["text_quality"]["changes_by_code"]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.5, 0.35 * max(len(reasons), len(codes), 1) + 1.5)))
    for ax, data, title, color in (
        (axes[0], reasons, "Quarantined rows by reason", "#c0504d"),
        (axes[1], codes, "Changed rows by change code", "#4f81bd"),
    ):
        if data:
            items = sorted(data.items(), key=lambda kv: -kv[1])
            ax.barh([k for k, _ in items], [v for _, v in items], color=color)
            ax.invert_yaxis()
            ax.set_xlabel("rows")
            for i, (_, v) in enumerate(items):
                ax.text(v, i, f" {v:,}", va="center", fontsize=8)
            ax.margins(x=0.15)
        else:
            empty(ax, "none")
        ax.set_title(title)
    save(fig, "reasons")

    # 4) label quality ---------------------------------------------------------------
    ok_q, issue_q = private["label_quality"]
    fig, ax = plt.subplots(figsize=(8, 4))
    if len(ok_q) or len(issue_q):
        bins = np.linspace(0, 1, 41)
        ax.hist(
            [ok_q, issue_q],
            bins=bins,
            stacked=True,
            label=["not flagged", "flagged as label issue"],
            color=["#4f81bd", "#c0504d"],
        )
        ax.set_yscale("log")
        ax.set_xlabel("cleanlab label quality (low = suspicious)")
        ax.set_ylabel("rows (log)")
        ax.legend(fontsize=8)
    else:
        empty(ax, "label check disabled or no scores")
    ax.set_title("Label quality of examined rows")
    save(fig, "label_quality")

    # 5) defect detection (synthetic ground truth only) ------------------------------
    det = report.get("defect_detection") or {}
    per_type = det.get("per_type") or {}
    if per_type:
        types = list(per_type)
        x = np.arange(len(types))
        prec = [per_type[t]["precision"] or 0.0 for t in types]
        rec = [per_type[t]["recall"] or 0.0 for t in types]
        fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(types) + 2), 4.5))
        ax.bar(x - 0.2, prec, width=0.4, label="precision", color="#4f81bd")
        ax.bar(x + 0.2, rec, width=0.4, label="recall", color="#9bbb59")
        for k, t in enumerate(types):
            for dx, key in ((-0.2, "precision"), (0.2, "recall")):
                v = per_type[t][key]
                ax.text(
                    k + dx,
                    (v or 0.0) + 0.01,
                    "n/a" if v is None else f"{v:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.axhline(RECALL_WARN, ls="--", color="#c0504d", lw=1, label=f"recall warning ({RECALL_WARN})")
        ax.set_xticks(x)
        ax.set_xticklabels(types, rotation=30, ha="right", fontsize=9)
        ax.set_ylim(0, 1.25)
        ax.set_ylabel("score")
        ax.legend(fontsize=8, loc="upper center", ncol=3)
        ax.set_title("Defect detection vs synthetic ground truth")
        save(fig, "defects")
    return written
