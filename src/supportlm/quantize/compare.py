"""Score every model variant on the SAME test slice: size, perplexity, BLEU, ROUGE-L, speed.

Same slice, same token ids: prompts are built once with the merged model's HF tokenizer and
fed as token ids to every variant (HF and llama.cpp share the vocabulary after conversion),
and every reference reply is scored on the same ids (`inference.prompts.reply_ids`), so perplexities
differ only by the weights.

- perplexity: HF variants via `metrics.reply_nll_hf`; GGUF via llama-cpp-python with
  `logits_all=True`: evaluate prompt + reply in one pass, log-softmax the logits at the reply
  positions (the same quantity `llama-perplexity` reports, restricted to reply tokens);
- BLEU / ROUGE-L on greedy generations (max `quantize.max_new_tokens`);
- tokens_per_s: single-stream greedy DECODE rate, i.e. (tokens - 1) / (time after the first
  token), a median over prompts, so prefill (prompt length) does not distort it. GGUF: every
  streamed eval generation; HF: generate(N) - generate(1) on the first `speed_prompts` prompts;
- load_s: from file to first usable model object (what a server restart costs).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.evaluate import metrics as m
from supportlm.inference.prompts import reply_ids

SPEED_TOKENS = 32  # HF decode-rate probe length: the per-token cost is flat, a longer probe only costs time


def _text_scores(replies: Sequence[str], examples: Sequence[m.Example]) -> dict[str, Any]:
    """BLEU, mean ROUGE-1/2/L and the per-row ROUGE-L (`row_rougeL`, for the paired intervals)."""
    refs = [e.reference for e in examples]
    rows = m.rouge_rows(replies, refs)
    return {
        "bleu": m.bleu(replies, refs),
        **{k: sum(r[k] for r in rows) / len(rows) for k in ("rouge1", "rouge2", "rougeL")},
        "row_rougeL": [r["rougeL"] for r in rows],
    }


def hf_decode_rate(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int
) -> dict[str, Any]:
    """Single-stream decode tok/s of an HF model: (N-1) / (t(generate N) - t(generate 1)), median."""
    from supportlm.inference.engines import HFEngine

    eng = HFEngine(model, tokenizer)
    rates, ttft = [], []
    for p in prompts:
        t0 = time.perf_counter()
        eng.generate_ids([p], 1, 1)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        g = eng.generate_ids([p], max_new_tokens, 1)[0]
        tn = time.perf_counter() - t0
        n = len(g.ids) + (g.finish_reason == "stop")  # the EOS step was decoded too
        if n > 1 and tn > t1:
            rates.append((n - 1) / (tn - t1))
        ttft.append(t1)
    return {
        "tokens_per_s": statistics.median(rates) if rates else None,
        "ttft_ms": 1000 * statistics.median(ttft) if ttft else None,
    }


def evaluate_hf(
    name: str,
    fmt: str,
    model: Any,
    tokenizer: Any,
    examples: Sequence[m.Example],
    prompts: Sequence[list[int]],
    p: Any,
    size_bytes: int,
    load_s: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HF-loaded variant (fp32 or bitsandbytes): batched greedy generations + NLL + decode speed."""
    from supportlm.inference.engines import HFEngine

    t0 = time.perf_counter()
    eng = HFEngine(model, tokenizer, name=name)
    gens = eng.generate_ids(prompts, p.max_new_tokens, batch_size=16)
    nll = m.reply_nll_hf(model, tokenizer, examples, batch_size=8)
    speed = hf_decode_rate(model, tokenizer, prompts[: p.speed_prompts], min(p.max_new_tokens, SPEED_TOKENS))
    return {
        "name": name,
        "format": fmt,
        "size_bytes": int(size_bytes),
        "perplexity": m.perplexity(sum(a for a, _ in nll), sum(b for _, b in nll)),
        "row_nll": [list(x) for x in nll],
        **_text_scores([g.text for g in gens], examples),
        "tokens_per_s": speed["tokens_per_s"],
        "ttft_ms": speed["ttft_ms"],
        "load_s": round(load_s, 2),
        "eval_s": round(time.perf_counter() - t0, 1),
        "replies": [g.text for g in gens],
        **(extra or {}),
    }


def gguf_reply_nll(
    engine: Any, prompts: Sequence[list[int]], replies: Sequence[list[int]]
) -> list[tuple[float, int]]:
    """(NLL sum, n) per example from llama.cpp logits (engine built with logits_all=True)."""
    import numpy as np

    llm = engine.llm
    out = []
    for p, r in zip(prompts, replies, strict=True):
        ids = list(p) + list(r)
        if len(ids) > llm.n_ctx():
            ids = ids[-llm.n_ctx() :]
            p = ids[: len(ids) - len(r)]
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(
            llm.scores[len(p) - 1 : len(ids) - 1], dtype=np.float64
        )  # (R, V) rows predict reply
        mx = logits.max(axis=1, keepdims=True)
        logz = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        picked = logits[np.arange(len(r)), np.asarray(r)]
        out.append((float((logz - picked).sum()), len(r)))
    llm.reset()
    return out


def evaluate_gguf(
    name: str,
    path: Path,
    fmt: str,
    tokenizer: Any,
    examples: Sequence[m.Example],
    prompts: Sequence[list[int]],
    p: Any,
) -> dict[str, Any]:
    """A GGUF variant through llama-cpp-python: NLL on the reference replies + greedy generations."""
    from supportlm.inference.engines import GGUFEngine

    t0 = time.perf_counter()
    eng = GGUFEngine(path, n_ctx=p.n_ctx, threads=p.threads, logits_all=True, tokenizer=tokenizer)
    load_s = eng.load_s
    nll = gguf_reply_nll(eng, prompts, [reply_ids(tokenizer, e.reference) for e in examples])
    gens = eng.generate_ids(prompts, p.max_new_tokens)
    rates = [
        (len(g.ids) + (g.finish_reason == "stop") - 1) / (g.seconds - g.first_token_s)
        for g in gens  # llama.cpp decodes one stream anyway: every eval row is a speed sample
        if g.first_token_s is not None and g.seconds > g.first_token_s and len(g.ids) > 1
    ]
    ttft = [g.first_token_s for g in gens if g.first_token_s is not None]
    result = {
        "name": name,
        "format": fmt,
        "size_bytes": path.stat().st_size,
        "perplexity": m.perplexity(sum(a for a, _ in nll), sum(b for _, b in nll)),
        "row_nll": [list(x) for x in nll],
        **_text_scores([g.text for g in gens], examples),
        "tokens_per_s": statistics.median(rates) if rates else None,
        "ttft_ms": 1000 * statistics.median(ttft) if ttft else None,
        "load_s": round(load_s, 2),
        "eval_s": round(time.perf_counter() - t0, 1),
        "replies": [g.text for g in gens],
        "file": str(path),
    }
    eng.llm.close()
    del eng
    gc.collect()
    return result
