"""Tokenize chat rows with assistant-only labels, and batch them three ways (grouped, packed, padded).

Labels: every token is -100 (ignored by the loss) except the assistant's own tokens, i.e. each
assistant turn's content plus the `<|im_end|>` (EOS) and newline that the chat template puts after
it. The spans come from the same prefix diff as `data.format.assistant_token_count`: render the
conversation up to the assistant turn with the generation prompt (`<|im_start|>assistant\\n`), then
up to the end of that turn; the tokens in between are the assistant's. So the supervised count of
an untruncated example equals the row's `n_assistant_tokens`.

Batching modes (`train.batching`):

- `grouped` (default): a seeded shuffle, then length-sorted inside mega-batches of 64 x batch_size
  rows (as HF's LengthGroupedSampler), right-padded only to the longest row of each batch; batch
  order is shuffled again. No cross-example attention; padding waste is a few percent. No
  attention mask is passed: with right padding a causal model never attends to the pads, so SDPA
  keeps its fast `is_causal` kernel (tests check logits equal the masked ones).
- `packed`: examples laid end to end (first-fit, no example split) into rows of `max_length`;
  `position_ids` restart at 0 for every example and no attention mask is passed, so transformers
  (>= 4.5x, `masking_utils.find_packed_sequence_indices`) builds a block-diagonal causal mask and an
  example never attends to its neighbours (checked in tests/unit/test_batching.py for sdpa and
  eager on CPU). Caveat: models whose attention ignores `position_ids` for masking (custom code,
  old transformers, generation with a KV cache) would attend across examples; call the model with
  `use_cache=False`. Lowest waste; long rows make attention a little more expensive.
- `padded`: the naive baseline: every row padded to `max_length`, with an attention mask (what
  a default HF collator + Trainer does). Kept to measure the speedup.

Every `Batch` carries `useful_tokens` (non-pad) and `pad_tokens`, so padding waste and useful
tokens/s are measured, not estimated.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from supportlm.chat_template import IGNORE_INDEX, assistant_spans, span_labels

Mode = Literal["grouped", "packed", "padded"]
MEGABATCH_MULT = 64  # grouped: rows sorted by length within windows of 64 x batch_size

log = logging.getLogger("supportlm.train")
_warned: list[bool] = []  # warn once per process about non-prefix tokenizations


@dataclass(frozen=True)
class Example:
    """One tokenized conversation: ids and labels of the same length (labels -100 outside assistant turns)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_supervised(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def tokenize_messages(messages: list[dict[str, str]], tokenizer: Any, max_length: int) -> Example:
    """Chat-template `messages` into ids + assistant-only labels, truncated to `max_length` tokens."""
    full, spans, exact = assistant_spans(tokenizer, messages)
    if not exact and not _warned:
        _warned.append(True)
        log.warning("chat template prefix is not a token prefix; assistant spans approximate")
    return truncate(full, span_labels(full, spans), max_length)


def truncate(ids: list[int], labels: list[int], max_length: int) -> Example:
    """The example as trained: its first `max_length` tokens (truncated=True when that cut something)."""
    return Example(ids[:max_length], labels[:max_length], len(ids) > max_length)


def tokenize_rows(
    rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[Example], dict[str, int]]:
    """Tokenize formatted rows; rows left with no supervised token (after truncation) are dropped."""
    return keep_supervised((tokenize_messages(row["messages"], tokenizer, max_length) for row in rows), len(rows))


def keep_supervised(examples_in: Iterable[Example], n_rows: int) -> tuple[list[Example], dict[str, int]]:
    """The examples that keep a supervised token (after truncation), and the counts the report shows."""
    examples: list[Example] = []
    stats = {"rows": n_rows, "truncated": 0, "dropped_no_assistant": 0}
    for ex in examples_in:
        stats["truncated"] += ex.truncated
        if ex.n_supervised == 0:
            stats["dropped_no_assistant"] += 1
            continue
        examples.append(ex)
    stats["examples"] = len(examples)
    return examples, stats


# ---------------------------------------------------------------- batch plans


def plan_batches(
    lengths: Sequence[int], mode: Mode, batch_size: int, max_length: int, seed: int, epoch: int
) -> list[list[list[int]]]:
    """Deterministic batch plan for one epoch: batches -> rows -> example indices.

    grouped/padded rows hold one example each; packed rows hold several. The plan depends only on
    (lengths, mode, batch_size, max_length, seed, epoch), so a resumed run replays the same order.
    """
    rng = random.Random(f"supportlm-batches-{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if mode == "padded":
        rows = [[i] for i in order]
    elif mode == "grouped":
        window = batch_size * MEGABATCH_MULT
        rows = []
        for s in range(0, len(order), window):
            chunk = sorted(order[s : s + window], key=lambda i: -lengths[i])
            rows.extend([i] for i in chunk)
    elif mode == "packed":
        rows = _first_fit(order, lengths, max_length)
    else:  # pragma: no cover - pydantic Literal guards this
        raise ValueError(f"unknown batching mode {mode!r}")
    batches = [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]
    if mode != "padded":
        rng.shuffle(batches)  # grouped: long and short batches interleave; packed: mixes bins
    return batches


def _first_fit(order: list[int], lengths: Sequence[int], max_length: int) -> list[list[int]]:
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        n = min(lengths[i], max_length)
        for b, free in enumerate(space):
            if free >= n:
                bins[b].append(i)
                space[b] -= n
                break
        else:
            bins.append([i])
            space.append(max_length - n)
    return bins


# ---------------------------------------------------------------- collation


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) token ids, pad id after each row's end
    labels: torch.Tensor  # (B, T) -100 outside assistant tokens and on padding
    attention_mask: torch.Tensor | None  # (B, T) 1 = real token; padded only (grouped/packed: see collate)
    position_ids: torch.Tensor | None  # (B, T) restart at 0 per example when packed
    useful_tokens: int  # non-pad tokens
    pad_tokens: int
    n_examples: int

    @property
    def total_tokens(self) -> int:
        return self.useful_tokens + self.pad_tokens

    @property
    def n_supervised(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def model_inputs(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids.to(device)}
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask.to(device)
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids.to(device)
        return out


def collate(
    examples: Sequence[Example], rows: list[list[int]], mode: Mode, max_length: int, pad_id: int
) -> Batch:
    """Turn a planned batch into tensors. Padding goes on the right."""
    seqs: list[tuple[list[int], list[int], list[int]]] = []  # (ids, labels, position ids) per row
    for row in rows:
        ids, labels, pos = [], [], []
        for i in row:
            ex = examples[i]
            ids += ex.input_ids
            labels += ex.labels
            pos += range(len(ex))
        seqs.append((ids, labels, pos))
    width = max_length if mode in ("padded", "packed") else max(len(s[0]) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    labels = torch.full((B, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    position_ids = torch.zeros((B, width), dtype=torch.long)
    useful = 0
    for b, (ids, lab, pos) in enumerate(seqs):
        n = len(ids)
        useful += n
        input_ids[b, :n] = torch.tensor(ids)
        labels[b, :n] = torch.tensor(lab)
        mask[b, :n] = 1
        position_ids[b, :n] = torch.tensor(pos)
        # packed tail: padding is its own "sequence" (positions restart) so no real token sees it
        position_ids[b, n:] = torch.arange(width - n)
    if mode == "packed":
        return Batch(input_ids, labels, None, position_ids, useful, B * width - useful, sum(map(len, rows)))
    if mode == "grouped":
        # Right padding + causal attention: no real token can see a pad (pads come after it), and
        # pad positions carry label -100, so the mask is redundant. Without it SDPA takes its
        # is_causal fast path instead of materializing a (B, heads, T, T) masked attention.
        return Batch(input_ids, labels, None, None, useful, B * width - useful, B)
    return Batch(input_ids, labels, mask, None, useful, B * width - useful, B)  # naive: mask, as HF collators


class BatchStream:
    """An endless, deterministic stream of micro-batches across epochs, indexable by position.

    Micro-batch m of the stream is batch `m - start(epoch)` of epoch `epoch`'s plan, so the
    trainer can resume at any micro-batch (`step * gradient_accumulation_steps`) without
    replaying the data loader.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        mode: Mode,
        batch_size: int,
        max_length: int,
        pad_id: int,
        seed: int,
    ) -> None:
        if not examples:
            raise ValueError("no examples to batch")
        self.examples, self.mode, self.batch_size = examples, mode, batch_size
        self.max_length, self.pad_id, self.seed = max_length, pad_id, seed
        self._lengths = [len(e) for e in examples]
        self._plans: dict[int, list[list[list[int]]]] = {}

    def plan(self, epoch: int) -> list[list[list[int]]]:
        if epoch not in self._plans:
            self._plans = {k: v for k, v in self._plans.items() if k >= epoch - 1}  # keep memory flat
            self._plans[epoch] = plan_batches(
                self._lengths, self.mode, self.batch_size, self.max_length, self.seed, epoch
            )
        return self._plans[epoch]

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches in epoch 0 (packed epochs can differ by a batch or so)."""
        return len(self.plan(0))

    def locate(self, m: int) -> tuple[int, int]:
        """Micro-batch index in the stream -> (epoch, index within the epoch)."""
        epoch = 0
        while m >= len(self.plan(epoch)):
            m -= len(self.plan(epoch))
            epoch += 1
        return epoch, m

    def __getitem__(self, m: int) -> Batch:
        epoch, i = self.locate(m)
        return collate(self.examples, self.plan(epoch)[i], self.mode, self.max_length, self.pad_id)

    def epoch_of(self, m: int) -> float:
        epoch, i = self.locate(m)
        return epoch + i / len(self.plan(epoch))


def fixed_batches(examples: Sequence[Example], batch_size: int, pad_id: int, max_length: int) -> list[Batch]:
    """Eval batches: length-sorted, dynamic padding, no shuffle (the same for base and tuned model)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    return [
        collate(examples, [[i] for i in order[s : s + batch_size]], "grouped", max_length, pad_id)
        for s in range(0, len(order), batch_size)
    ]


def padding_waste(batches: Sequence[Batch]) -> float:
    total = sum(b.total_tokens for b in batches)
    return round(sum(b.pad_tokens for b in batches) / total, 4) if total else 0.0


def steps_for(n_micro_per_epoch: int, accum: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps: max_steps when > 0, else ceil(epochs x micro-batches / accumulation)."""
    return max_steps if max_steps > 0 else max(1, math.ceil(epochs * n_micro_per_epoch / accum))
