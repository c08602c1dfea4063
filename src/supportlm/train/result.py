"""What a training run returns: TrainResult, summarized from the train state and the run log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supportlm.train.checkpoints import TrainState


@dataclass
class TrainResult:
    """The summary the train stage report is built from."""

    steps: int
    total_steps: int
    best_step: int
    best_val_loss: float
    base_val_loss: float
    stopped_early: bool
    resumed_from: int | None
    tokens_per_s: float
    padding_waste: float
    peak_mem_mb: float
    train_seconds: float
    precision: str
    device: str
    method: str
    run_dir: str
    best_checkpoint: str
    train_curve: list[dict[str, float]] = field(default_factory=list)
    val_curve: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def summarize(cls, st: TrainState, records: list[dict[str, Any]], **run: Any) -> TrainResult:
        """Steps, best, speed and padding from `st`; curves and peak memory from the log `records`.

        `run`: the fields neither holds (total_steps, base_val_loss, resumed_from, precision, device,
        method, run_dir, best_checkpoint, data).
        """
        total_tokens = st.useful_tokens + st.pad_tokens
        return cls(
            steps=st.step,
            best_step=st.best_step,
            best_val_loss=st.best_val_loss,
            stopped_early=st.stopped_early,
            tokens_per_s=round(st.useful_tokens / st.train_seconds, 1) if st.train_seconds else 0.0,
            padding_waste=round(st.pad_tokens / total_tokens, 4) if total_tokens else 0.0,
            peak_mem_mb=max([r["peak_mem_mb"] for r in records if r.get("type") == "train"] or [0.0]),
            train_seconds=round(st.train_seconds, 2),
            train_curve=[{"step": r["step"], "loss": r["loss"]} for r in records if r.get("type") == "train"],
            val_curve=[
                {"step": r["step"], "val_loss": r["val_loss"]} for r in records if r.get("type") == "eval"
            ],
            **run,
        )
