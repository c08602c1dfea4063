"""What the GPU check runs: the published model shapes and CheckConfig (full, or `tiny()` on CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Published configs (hidden, intermediate, heads, kv heads, vocab, depth). rope_theta stays the
# library default: it changes no shape, and random weights make its value irrelevant.
SHAPES: dict[str, dict[str, Any]] = {
    "mistral-7b": {"arch": "mistral", "hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8,
                   "vocab": 32000, "depth": 32},  # Mistral-7B-Instruct-v0.2 (profiles/gpu.yaml's base)
    "llama2-7b": {"arch": "llama", "hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32,
                  "vocab": 32000, "depth": 32},
    "tiny": {"arch": "llama", "hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2,
             "vocab": 512, "depth": 4},
}  # fmt: skip


@dataclass
class CheckConfig:
    """What to run; the defaults are the full check (~5 min on one H200), `tiny()` the CPU test."""

    shape: str = "mistral-7b"
    hidden: int | None = None  # None = the shape's value (overrides exist to run the full path on CPU)
    intermediate: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    vocab: int | None = None
    layers: int = 4  # layers of the model used by the timed steps 2-6
    full_layers: int | None = None  # step 7's depth; None = the shape's depth, 0 = skip step 7
    batch_size: int = 8
    seq_len: int = 1024
    steps: int = 20
    save_steps: int = 5
    eval_steps: int = 10
    kill_at: int = 12  # the victim is killed once this step is logged (after the checkpoint at 10)
    learning_rate: float = 2e-4
    lora_r: int = 16
    gen_tokens: int = 128
    gen_batches: tuple[int, ...] = (1, 8)
    gen_repeats: int = 3  # median of this many timed generations per batch size (after one warm-up)
    prompt_tokens: int = 64
    bnb_tokens: int = 32
    full_steps: int = 3  # QLoRA steps at full depth (the first one warms up)
    budget_s: float = 330.0  # step 7's QLoRA part is skipped (reason recorded) when the run is past this
    child_timeout_s: float = 150.0
    threads: int | None = None  # torch CPU threads here and in the children; None = torch's default
    seed: int = 0
    out_dir: Path = Path("reports/gpu")
    work_dir: Path | None = None  # None = a temp dir, removed at the end
    keep_work: bool = False

    @classmethod
    def tiny(cls, **kw: Any) -> CheckConfig:
        """CPU: 2 layers x 64 wide, vocab 512, batch 2 x 64 tokens, 4 steps; ~40 s on 2 cores."""
        base = {
            "shape": "tiny",
            "layers": 2,
            "full_layers": None,
            "batch_size": 2,
            "seq_len": 64,
            "steps": 4,
            "save_steps": 2,
            "eval_steps": 2,
            "kill_at": 3,
            "learning_rate": 1e-2,
            "lora_r": 8,
            "gen_tokens": 12,
            "gen_repeats": 1,
            "prompt_tokens": 16,
            "bnb_tokens": 4,
            "full_steps": 1,
            "child_timeout_s": 120.0,
            "threads": 1,  # 64-wide matrices gain nothing from a 2nd thread; on a busy box it spins (2x slower)
            "out_dir": Path("reports/gpu/tiny"),  # never over the GPU results in reports/gpu/
        }
        return cls(**(base | kw))

    def dims(self, layers: int) -> dict[str, Any]:
        s = SHAPES[self.shape]
        return {
            "arch": s["arch"],
            "hidden": self.hidden or s["hidden"],
            "intermediate": self.intermediate or s["intermediate"],
            "heads": self.heads or s["heads"],
            "kv_heads": self.kv_heads or s["kv_heads"],
            "vocab": self.vocab or s["vocab"],
            "layers": layers,
        }

    @property
    def depth(self) -> int:
        return SHAPES[self.shape]["depth"] if self.full_layers is None else self.full_layers
