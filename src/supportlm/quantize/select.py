"""The serving rule: which GGUF variant `make serve`, the bench, compose and the serve image run.

The rule, applied to this run's numbers (reports/quantization.md states it beside them):

1. eligible: every GGUF variant whose paired-bootstrap 95% interval for ROUGE-L against f16, on the full
   eval slice, lies above -`rouge_drop_target` points: a drop larger than the target is ruled out at 95%.
   f16 itself always is (its difference with itself is zero);
2. the fastest eligible variant by single-stream decode tok/s (the median over its eval generations,
   measured in the same run);
3. variants within `speed_tie` of that speed are a tie (run-to-run noise on a shared CPU is a few percent),
   broken by the lowest mean KL-divergence against f16 on held-out text, then by the smaller file.

The choice is written into models/gguf as `paths.SERVED_GGUF` (a hard link to the chosen file; a copy where
a link is impossible) and `paths.SERVED_INFO` (variant, file, the rule, every candidate's numbers and why
it was or was not eligible). `serve.model.path`, compose's SUPPORTLM_GGUF and the serve image's
SUPPORTLM_MODEL_PATH name the fixed file; `bench.primary: served` reads the JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.paths import SERVED_GGUF, SERVED_INFO

REFERENCE = "f16"


def rule_text(drop_target: float, speed_tie: float) -> str:
    return (f"eligible: GGUF variants whose ROUGE-L 95% paired-bootstrap interval vs f16 lies above "
            f"-{drop_target:g} points (f16 always); among them the fastest single-stream decode; variants within "
            f"{speed_tie:.0%} of that speed tie, broken by the lowest mean KL-divergence vs f16, then the smaller file")  # fmt: skip


def choose(variants: Sequence[dict[str, Any]], drop_target: float, speed_tie: float) -> dict[str, Any]:
    """Apply the rule to the variant rows of quantization.json; returns the choice and every candidate's verdict.

    A GGUF row needs `name`, `file`, `tokens_per_s`, `size_bytes`, `rougeL_vs_f16` ({low, ...} in points)
    and optionally `kld` ({mean_kld, ...}). Raises ValueError when there is no f16 row to compare with.
    """
    gguf = [v for v in variants if v.get("file")]
    if not any(v["name"] == REFERENCE for v in gguf):
        raise ValueError("the serving rule compares with f16, and there is no f16 GGUF row")
    candidates = []
    for v in gguf:
        interval = v.get("rougeL_vs_f16") or {}
        low = 0.0 if v["name"] == REFERENCE else interval.get("low")
        if low is None:
            why = "no ROUGE-L interval vs f16"
        elif low < -drop_target:
            why = f"ROUGE-L interval reaches {low:+.2f} points, below -{drop_target:g}"
        elif not v.get("tokens_per_s"):
            why = "no decode speed measured"
        else:
            why = ""
        kld = 0.0 if v["name"] == REFERENCE else (v.get("kld") or {}).get("mean_kld")
        candidates.append({"variant": v["name"], "eligible": not why, "why_not": why or None,
                           "rougeL_low_points": low, "tokens_per_s": v.get("tokens_per_s"),
                           "mean_kld": kld, "size_bytes": v["size_bytes"]})  # fmt: skip
    eligible = [c for c in candidates if c["eligible"]]
    if not eligible:  # f16 with no speed measured: serve it anyway, it is the reference
        chosen = next(c for c in candidates if c["variant"] == REFERENCE)
    else:
        fastest = max(c["tokens_per_s"] for c in eligible)
        tied = [c for c in eligible if c["tokens_per_s"] >= (1 - speed_tie) * fastest]
        chosen = min(tied, key=lambda c: (float("inf") if c["mean_kld"] is None else c["mean_kld"], c["size_bytes"]))
    return {"variant": chosen["variant"], "rule": rule_text(drop_target, speed_tie),
            "rouge_drop_target": drop_target, "speed_tie": speed_tie, "candidates": candidates}  # fmt: skip


def publish(gguf_dir: Path, choice: dict[str, Any], chosen_file: Path) -> dict[str, Any]:
    """Write SERVED_GGUF (hard link or copy of `chosen_file`) and SERVED_INFO into gguf_dir, each atomically."""
    target, tmp = gguf_dir / SERVED_GGUF, gguf_dir / (SERVED_GGUF + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(chosen_file, tmp)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(chosen_file, tmp)
    tmp.replace(target)  # (DVC's checkout may turn the link into a copy: the bytes are what count)
    info = {**choice, "file": chosen_file.name, "served_file": SERVED_GGUF}
    tmp_info = gguf_dir / (SERVED_INFO + ".tmp")
    tmp_info.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp_info.replace(gguf_dir / SERVED_INFO)
    return info


__all__ = ["choose", "publish", "rule_text"]
