"""The training loss: summed cross-entropy over assistant tokens, the LM head run only where it is needed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from supportlm.train.batching import IGNORE_INDEX, Batch

log = logging.getLogger("supportlm.train")

Head = tuple[torch.nn.Module, torch.nn.Module]  # (backbone, lm_head)


def split_head(model: Any) -> Head | None:
    """(backbone, lm_head) of the peft-wrapped causal LM when its logits are a plain head(hidden)."""
    base = model.get_base_model()
    backbone = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    cfg = base.config
    post_processed = any(
        getattr(cfg, k, None) not in (None, 1.0)
        for k in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
    )
    if backbone is None or head is None or post_processed:
        log.info("LM head: full logits (model forward post-processes them)")
        return None
    return backbone, head


def summed_loss(
    model: Any,
    head: Head | None,
    batch: Batch,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """Summed cross-entropy over the batch's supervised tokens (caller divides by the step's count).

    With `head` (from `split_head`) the LM head runs only on positions whose next token is
    supervised: ~36% of the tokens of a support conversation are system/user/pad, and the head
    (hidden x vocab, 576 x 49,152 for SmolLM2) plus the (tokens, vocab) fp32 logits are a large
    share of a small model's step. Without it, the model's own forward (its logits post-processed).
    """
    inputs = batch.model_inputs(device)
    labels = batch.labels.to(device)
    targets = labels[:, 1:]  # token t predicts t+1
    with autocast:
        if head is None:
            logits = model(**inputs, use_cache=False).logits[:, :-1]  # (B, T-1, V)
            return torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        backbone, lm_head = head
        hidden = backbone(**inputs, use_cache=False).last_hidden_state  # (B, T, H)
        keep = targets != IGNORE_INDEX  # (B, T-1)
        logits = lm_head(hidden[:, :-1][keep])  # (N supervised, V)
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")


class StepLoss(torch.nn.Module):
    """`summed_loss` as a module: what DDP wraps when several processes train (its forward is the step's).

    Calling the backbone and head directly, as `summed_loss` does, would bypass DDP's forward and
    with it the gradient all-reduce; through this module every step goes through DDP."""

    def __init__(
        self,
        model: Any,
        head: Head | None,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> None:
        super().__init__()
        self.model, self.head, self.device, self.autocast = model, head, device, autocast

    def forward(self, batch: Batch) -> torch.Tensor:
        return summed_loss(self.model, self.head, batch, self.device, self.autocast())
