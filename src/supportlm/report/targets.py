"""The targets table: every goal the stages wrote, plus the documented goals checked on their values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supportlm.render import Inline, Link, Para, Section, Strong, Table, pct
from supportlm.render import fmt as num
from supportlm.report.sections import load_json

TRAIN_SPEEDUP_GOAL = 1.5  # DESIGN.md: sequence-packing/grouping vs the naive padded baseline
TRAIN_STAGE_BUDGET_S = 12 * 60  # issue budget for the train stage on 2 CPU cores


def _display(t: dict[str, Any]) -> str:
    if t.get("display"):
        return str(t["display"])
    m = t.get("measured")
    if m is None:
        return "n/a"
    if isinstance(m, float) and ("%" in str(t.get("goal", "")) or "reduction" in str(t.get("name", ""))):
        return f"{m:.1%}" if abs(m) <= 1.5 else num(m)
    return num(m)


def collect_targets(reports: Path) -> list[dict[str, Any]]:
    """Every target the stages wrote, plus the documented goals checked on the values they wrote.

    Each: {stage, name, goal, measured, display, met (True/False/None = not measured), report}."""
    out: list[dict[str, Any]] = []

    def add_list(stage: str, data: dict[str, Any] | None, report: str) -> None:
        for t in (data or {}).get("targets") or []:
            out.append({"stage": stage, "name": t.get("name"), "goal": t.get("goal"), "measured": t.get("measured"),
                        "display": _display(t), "met": bool(t.get("met")), "report": report})  # fmt: skip

    def add(
        stage: str, name: str, goal: str, measured: Any, met: bool | None, display: str, report: str
    ) -> None:
        out.append({"stage": stage, "name": name, "goal": goal, "measured": measured, "display": display,
                    "met": met, "report": report})  # fmt: skip

    split = load_json(reports / "split.json")
    if split and "leaked_groups" in split:
        lg = split["leaked_groups"]
        add("data", "duplicate groups leaking across splits", "= 0", lg, lg == 0, num(lg), "data_quality.md")
    add_list("data scaling", load_json(reports / "data_scaling.json"), "data_quality.md")

    train = load_json(reports / "train.json")
    if train and train.get("targets"):
        add_list("train", train, "train.md")
    elif train and "_error" not in train:
        sp = train.get("speedup_vs_baseline")
        add(
            "train",
            "training tokens/s vs naive padded batching",
            f">= {TRAIN_SPEEDUP_GOAL:g}x",
            sp,
            None if sp is None else sp >= TRAIN_SPEEDUP_GOAL,
            f"{sp:.2f}x" if sp is not None else "n/a",
            "train.md",
        )

    stage_s = (train or {}).get("stage_seconds")
    on_cpu = str((train or {}).get("device", "")).startswith("cpu")  # the budget is the CPU default's
    resumed = (train or {}).get("resumed_from")
    if stage_s is not None and on_cpu and resumed:  # this stage run only finished a run: not the training's time
        add(
            "train",
            "train stage time on the CPU default",
            f"<= {TRAIN_STAGE_BUDGET_S / 60:g} min",
            None,
            None,
            f"not measured: this run resumed at step {resumed} ({stage_s / 60:.1f} min); "
            f"{(train or {}).get('train_seconds', 0) / 60:.1f} min in optimizer steps over the whole run",
            "train.md",
        )
    elif stage_s is not None and on_cpu:
        add(
            "train",
            "train stage time on the CPU default",
            f"<= {TRAIN_STAGE_BUDGET_S / 60:g} min",
            stage_s,
            stage_s <= TRAIN_STAGE_BUDGET_S,
            f"{stage_s / 60:.1f} min",
            "train.md",
        )

    ev = load_json(reports / "eval.json")
    if ev and ev.get("targets"):
        add_list("evaluate", ev, "eval.md")
    elif ev and "_error" not in ev:
        delta = ev.get("delta") or {}
        d = delta.get("rougeL")
        add(
            "evaluate",
            "fine-tuned ROUGE-L above base",
            "> 0",
            d,
            None if d is None else d > 0,
            num(d, "+.4f") if d is not None else "n/a",
            "eval.md",
        )
        d = delta.get("perplexity")
        add(
            "evaluate",
            "fine-tuned perplexity below base",
            "< 0 (delta)",
            d,
            None if d is None else d < 0,
            num(d, "+.4g") if d is not None else "n/a",
            "eval.md",
        )

    h = load_json(reports / "human_eval.json")
    if h and h.get("win_rate") is not None:
        add(
            "human eval",
            "fine-tuned preferred by raters (win rate of decided pairs)",
            "> 50%",
            h["win_rate"],
            h["win_rate"] > 0.5,
            pct(h["win_rate"]),
            "human_eval_sheet.csv",
        )

    add_list("quantize", load_json(reports / "quantization.json"), "quantization.md")
    add_list("bench", load_json(reports / "bench.json"), "bench.md")
    add_list("fairness", load_json(reports / "fairness.json"), "fairness.md")
    return out


def targets_section(reports: Path, targets: list[dict[str, Any]]) -> Section:
    if not targets:
        return Section("targets", "Targets", [Para("No stage has written targets yet.")], ran=False)
    rows: list[list[Inline]] = []
    for t in targets:
        status: Inline = "met" if t["met"] else ("not measured" if t["met"] is None else Strong("missed"))
        report = Link(t["report"], t["report"]) if (reports / t["report"]).is_file() else t["report"]
        rows.append([t["stage"], str(t["name"]), str(t["goal"]), t["display"], status, report])
    met = sum(1 for t in targets if t["met"])
    return Section("targets", "Targets", [
        Para(f"{met} of {len(targets)} targets met. Each value is copied from the stage's JSON."),
        Table(["stage", "target", "goal", "measured", "status", "report"], rows, align_right={3}, status_col=4),
    ])  # fmt: skip
