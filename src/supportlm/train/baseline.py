"""The padded-batching baseline: weight-frozen optimizer steps on naive padded batches, for the speedup."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from supportlm.errors import ConfigError
from supportlm.train.batching import BatchStream
from supportlm.train.device import peak_memory_mb, reset_peak_memory
from supportlm.train.memory import oom_guard

if TYPE_CHECKING:
    from supportlm.train.trainer import LoRAFinetuneRecipe

log = logging.getLogger("supportlm.train")


def benchmark_padded(recipe: LoRAFinetuneRecipe, steps: int) -> dict[str, Any]:
    """Naive baseline: `steps` optimizer steps of padded batches, same batch size and accumulation.

    Runs after training with a frozen optimizer (AdamW with lr=0), so the weights do not move;
    measures useful tokens/s, padding waste and peak memory of the phase. Skipped (the reason
    recorded) when check_memory estimated it would not fit, or when it runs out of memory.
    """
    if steps <= 0:
        return {}
    if not recipe.baseline_fits:
        return {"baseline_skipped": "estimated not to fit in memory"}
    p, device = recipe.p, recipe.device
    stream = BatchStream(
        recipe.train_examples, "padded", p.batch_size, p.max_length, recipe.tokenizer.pad_token_id, p.seed
    )
    frozen = torch.optim.AdamW(recipe.trainable, lr=0.0, weight_decay=0.0)
    useful = pad = 0
    seconds = 0.0
    reset_peak_memory(device)
    recipe.model.train()
    for s in range(steps):
        batches = [
            stream[s * p.gradient_accumulation_steps + k] for k in range(p.gradient_accumulation_steps)
        ]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            with oom_guard(p, recipe.state.step + 1):
                recipe.optimizer_step(batches, frozen)
        except ConfigError as exc:  # out of memory: the benchmark must not fail a finished run
            log.warning("padded baseline skipped: %s", exc)
            frozen.zero_grad(set_to_none=True)
            return {"baseline_skipped": "out of memory"}
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t
        useful += sum(b.useful_tokens for b in batches)
        pad += sum(b.pad_tokens for b in batches)
    out = {
        "baseline_steps": steps,
        "baseline_tokens_per_s": round(useful / seconds, 1),
        "baseline_padding_waste": round(pad / (useful + pad), 4),
        "baseline_peak_mem_mb": peak_memory_mb(device),
        "baseline_seconds": round(seconds, 2),
    }
    log.info(
        "padded baseline: %d steps, %s useful tok/s, padding waste %.1f%%, peak %s MB",
        steps,
        f"{out['baseline_tokens_per_s']:,.0f}",
        100 * out["baseline_padding_waste"],
        f"{out['baseline_peak_mem_mb']:,.0f}",
    )
    return out
