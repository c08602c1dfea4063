"""Training memory: the estimate checked before loading weights, and out-of-memory errors made advice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from supportlm.config import TrainParams
from supportlm.errors import ConfigError
from supportlm.train.device import DTYPES

log = logging.getLogger("supportlm.train")


def estimate_step_bytes(
    config: Any, batch_size: int, seq_len: int, precision: str, checkpointing: bool
) -> int:
    """Rough estimate of the memory one micro-batch needs (activations kept for backward + logits).

    A transformer layer keeps ~34 x hidden 16-bit values per token for backward (Korthikanti et al.
    2022, https://arxiv.org/abs/2205.05198, table 2); LoRA adds a dropout copy of each adapted
    input. Calibrated on SmolLM2-135M, LoRA r=16 on every projection, fp32, CPU: the padded 4 x 512
    baseline peaked at ~4.6 MB per token over the weights = ~(48 x hidden + 6 x intermediate) values
    per token and layer. Gradient checkpointing keeps each layer's input plus one layer's full set.
    The logits (tokens x vocab) are held ~3 times (fp32 logits, log-softmax, gradient).
    """
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1024)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 24)
    vocab = getattr(config, "vocab_size", 32000)
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    per_value = 2 if precision in ("bf16", "fp16") else 4
    tokens = batch_size * seq_len
    per_layer = tokens * (48 * hidden + 6 * inter) * per_value
    acts = tokens * hidden * per_value * layers + per_layer if checkpointing else per_layer * layers
    logits = tokens * vocab * 4 * 3
    return int(acts + logits)


def param_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) or sum(
        p.stat().st_size for p in Path(model_dir).glob("*.bin")
    )


def check_memory(
    p: TrainParams, model_config: Any, model_dir: Path, precision: str, device: torch.device, longest: int
) -> bool:
    """Fail before loading weights when the widest micro-batch cannot fit (ConfigError with the fix).

    `longest` is the longest tokenized train example. The padded baseline (widest batches:
    batch_size x max_length) is only a benchmark: when it would not fit, it is skipped with a
    warning instead of failing the stage. Returns whether the baseline fits.
    """
    seq = p.max_length if p.batching in ("packed", "padded") else min(longest, p.max_length)
    stored = 4 if str(getattr(model_config, "dtype", "float32")).endswith("float32") else 2
    n_params = param_bytes(model_dir) / stored
    weights = int(n_params * (0.5 if p.method == "qlora" else DTYPES[precision].itemsize))

    def need(width: int) -> int:
        return weights + estimate_step_bytes(
            model_config, p.batch_size, width, precision, p.gradient_checkpointing
        )

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info()
        where = f"GPU ({torch.cuda.get_device_name()}, {free / 2**30:.1f} GiB free)"
    else:
        import psutil

        free = psutil.virtual_memory().available
        where = f"RAM ({free / 2**30:.1f} GiB available)"
    log.info(
        "memory estimate: %.2f GiB for a %d x %d micro-batch incl. weights (padded baseline %.2f GiB); %s",
        need(seq) / 2**30,
        p.batch_size,
        seq,
        need(p.max_length) / 2**30,
        where,
    )
    if need(seq) > 0.9 * free:
        raise ConfigError(
            f"a micro-batch of train.batch_size={p.batch_size} x {seq} tokens needs ~{need(seq) / 2**30:.1f} GiB "
            f"but the {where} cannot hold it: lower train.batch_size (raise train.gradient_accumulation_steps "
            f"to keep the effective batch), lower train.max_length, or set train.gradient_checkpointing=true"
            + ("" if p.method == "qlora" else " / train.method=qlora")
        )
    baseline_fits = need(p.max_length) <= 0.9 * free
    if p.baseline_steps and not baseline_fits:
        log.warning(
            "padded baseline (%d x %d tokens) would not fit in the %s: it will be skipped",
            p.batch_size,
            p.max_length,
            where,
        )
    return baseline_fits


@contextlib.contextmanager
def oom_guard(p: TrainParams, step: int) -> Iterator[None]:
    """Turn an out-of-memory error during optimizer step `step` into a ConfigError naming the knobs."""
    advice = (
        f"with train.batch_size={p.batch_size}, train.max_length={p.max_length}: lower train.batch_size "
        f"(raise train.gradient_accumulation_steps to keep the effective batch), lower train.max_length, "
        f"or set train.gradient_checkpointing=true" + ("" if p.method == "qlora" else " / train.method=qlora")
    )
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(f"CUDA out of memory at step {step} {advice}") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
            raise ConfigError(f"out of RAM at step {step} {advice}") from None
        raise
