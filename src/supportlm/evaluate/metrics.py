"""Reference-based metrics: perplexity of the reference reply, BLEU (sacrebleu), ROUGE-1/2/L (rouge-score).

Why not `evaluate.load("bleu")`: it downloads the metric script from the hub at run time (fails
offline); sacrebleu and rouge-score are the libraries behind those scripts anyway.

Conventions (the same for every model and quantization variant, so numbers compare):
- an example = the conversation up to the FIRST assistant turn (the prompt: system + user) and
  that assistant turn (the reference reply);
- perplexity = exp(total NLL / total tokens) over the reference reply tokens given the prompt,
  token-weighted across examples. The reply tokens are `tokenizer(reply)` + EOS, i.e. exactly
  what the model must emit (`<|im_end|>` included); the prompt is the chat template with the
  generation prompt (`<|im_start|>assistant\\n`). Loss only on reply tokens;
- BLEU: `sacrebleu.corpus_bleu` (13a tokenization, 0-100); ROUGE: mean F-measure with the
  Porter stemmer (0-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from supportlm.inference.prompts import prompt_ids, reply_ids

# ---------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """One scored turn: the prompt messages and the reference assistant reply."""

    id: str
    intent: str
    prompt: list[dict[str, str]]  # system + user (+ earlier turns); ends with a user turn
    reference: str
    category: str = ""
    kind: str = ""


def to_example(row: dict[str, Any]) -> Example:
    """Formatted row (data/formatted schema) -> Example at its first assistant turn."""
    msgs = row["messages"]
    i = next((k for k, m in enumerate(msgs) if m["role"] == "assistant"), None)
    if i is None or i == 0:
        raise ValueError(f"row {row.get('id')}: no assistant turn after a prompt")
    return Example(
        id=str(row["id"]),
        intent=str(row.get("intent", "")),
        prompt=[dict(m) for m in msgs[:i]],
        reference=msgs[i]["content"],
        category=str(row.get("category", "")),
        kind=str(row.get("kind", "")),
    )


# ---------------------------------------------------------------- perplexity


def nll_from_logits(logits: Any, labels: Any) -> tuple[float, int]:
    """(sum of next-token NLL, number of scored tokens) for causal-LM logits.

    Args:
        logits: (B, T, V) float tensor; position t predicts token t+1.
        labels: (B, T) token ids, IGNORE_INDEX (-100) where no loss is wanted (prompt, padding).
    """
    import torch
    import torch.nn.functional as F

    from supportlm.train.batching import IGNORE_INDEX

    logits = torch.as_tensor(logits, dtype=torch.float32)
    labels = torch.as_tensor(labels)
    shift_logits = logits[:, :-1, :]  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != IGNORE_INDEX
    if not mask.any():
        return 0.0, 0
    nll = F.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="sum")
    return float(nll), int(mask.sum())


def perplexity(nll_sum: float, n_tokens: int) -> float:
    return math.exp(nll_sum / n_tokens) if n_tokens else float("nan")


def reply_nll_hf(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
) -> list[tuple[float, int]]:
    """Per-example (NLL sum, reply tokens) of the reference replies under an HF causal LM.

    Right-padded batches sorted by length (less padding); logits are only projected for the
    reply positions (`lm_head` on selected hidden states), so a 49K vocab does not cost
    B x T x V floats for the prompt part.
    """
    import torch

    from supportlm.train.batching import IGNORE_INDEX

    seqs = []
    for ex in examples:
        p = prompt_ids(tokenizer, ex.prompt, max_prompt_tokens)
        r = reply_ids(tokenizer, ex.reference)
        seqs.append((p + r, len(p)))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else None
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(seqs[k][0]) for k in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
            for row, k in enumerate(idx):
                seq, n_prompt = seqs[k]
                ids[row, : len(seq)] = torch.tensor(seq)
                attn[row, : len(seq)] = 1
                labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
            ids, attn = ids.to(device), attn.to(device)
            if backbone is not None and head is not None:
                hidden = backbone(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
                shift_labels = labels[:, 1:]  # position t predicts t+1
                mask = shift_labels != IGNORE_INDEX
                logits = head(hidden[:, :-1][mask.to(device)]).float()  # (N, V) reply positions only
                logp = torch.log_softmax(logits, dim=-1)
                tok_nll = -logp.gather(1, shift_labels[mask].to(device).unsqueeze(1)).squeeze(1).cpu()
                counts = mask.sum(1).tolist()
                pos = 0
                for row, k in enumerate(idx):
                    n = counts[row]
                    out[k] = (float(tok_nll[pos : pos + n].sum()), n)
                    pos += n
            else:  # generic fallback: full logits
                logits = model(input_ids=ids, attention_mask=attn).logits
                for row, k in enumerate(idx):
                    out[k] = nll_from_logits(logits[row : row + 1].cpu(), labels[row : row + 1])
    return out


# ---------------------------------------------------------------- BLEU / ROUGE


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100), one reference per hypothesis."""
    import sacrebleu

    if not hypotheses:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def sentence_bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


_SCORER: Any = None


def rouge_rows(hypotheses: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-row ROUGE-1/2/L F-measure (stemmer on)."""
    global _SCORER
    from rouge_score import rouge_scorer

    if _SCORER is None:
        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = []
    for hyp, ref in zip(hypotheses, references, strict=True):
        s = _SCORER.score(ref, hyp)  # (target, prediction)
        rows.append({k: float(v.fmeasure) for k, v in s.items()})
    return rows


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-1)."""
    rows = rouge_rows(hypotheses, references)
    if not rows:
        return {"rouge1": float("nan"), "rouge2": float("nan"), "rougeL": float("nan")}
    return {k: sum(r[k] for r in rows) / len(rows) for k in ("rouge1", "rouge2", "rougeL")}


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU + ROUGE-1/2/L for one system on one set of rows."""
    return {"bleu": bleu(hypotheses, references), **rouge(hypotheses, references)}
