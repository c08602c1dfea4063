"""Assistant-only labels, truncation, and the three batching modes (tiny BPE tokenizer, no model download)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import tiny_rows, tiny_tokenizer

from supportlm.data.format import assistant_token_count
from supportlm.train.batching import (
    IGNORE_INDEX,
    BatchStream,
    collate,
    padding_waste,
    plan_batches,
    tokenize_messages,
    tokenize_rows,
)

TWO_TURNS = [
    {"role": "system", "content": "You are a helpful support assistant."},
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "You can track your order under {{Order Tracking}}."},
    {"role": "user", "content": "Thanks, and a refund?"},
    {"role": "assistant", "content": "Refunds are processed within five business days."},
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_assistant_only_labels_hand_checked(tok):
    ex = tokenize_messages(TWO_TURNS, tok, max_length=1024)
    # The ChatML rendering written out by hand: (text, supervised?) pieces in order.
    pieces = [
        ("<|im_start|>system\nYou are a helpful support assistant.<|im_end|>\n", False),
        ("<|im_start|>user\nWhere is my order?<|im_end|>\n<|im_start|>assistant\n", False),
        ("You can track your order under {{Order Tracking}}.<|im_end|>\n", True),
        ("<|im_start|>user\nThanks, and a refund?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Refunds are processed within five business days.<|im_end|>\n", True),
    ]
    ids, labels = [], []
    for text, supervised in pieces:
        piece = _enc(tok, text)
        ids += piece
        labels += piece if supervised else [IGNORE_INDEX] * len(piece)
    assert ex.input_ids == ids
    assert ex.labels == labels
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    im_end_positions = [i for i, t in enumerate(ex.input_ids) if t == im_end]
    assert len(im_end_positions) == 5  # system, user, assistant, user, assistant
    supervised_im_end = [i for i in im_end_positions if ex.labels[i] != IGNORE_INDEX]
    assert len(supervised_im_end) == 2  # exactly the two assistant turns' EOS
    # system and user text is never supervised; the decoded supervised spans are the assistant turns
    spans, cur = [], []
    for t, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    decoded = [tok.decode(s) for s in spans]
    assert decoded == [TWO_TURNS[2]["content"] + "<|im_end|>\n", TWO_TURNS[4]["content"] + "<|im_end|>\n"]
    # same count as the format stage's n_assistant_tokens
    assert ex.n_supervised == assistant_token_count(tok, TWO_TURNS)


def test_truncation_and_rows_without_supervision(tok):
    full = tokenize_messages(TWO_TURNS, tok, max_length=1024)
    cut = tokenize_messages(TWO_TURNS, tok, max_length=30)
    assert len(cut) == 30 and cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:30] and cut.labels == full.labels[:30]
    # a budget that ends before the first assistant token leaves nothing to learn: dropped and counted
    first_sup = next(i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX)
    rows = [{"messages": TWO_TURNS}, {"messages": TWO_TURNS[:2]}]
    examples, stats = tokenize_rows(rows, tok, max_length=first_sup)
    assert examples == [] and stats["dropped_no_assistant"] == 2 and stats["truncated"] == 1


def test_labels_match_format_stage_counts(tok):
    rows = tiny_rows(24, tok, seed=3)
    examples, stats = tokenize_rows(rows, tok, max_length=512)
    assert stats["examples"] == 24
    assert [e.n_supervised for e in examples] == [r["n_assistant_tokens"] for r in rows]
    assert [len(e) for e in examples] == [r["n_tokens"] for r in rows]


@pytest.mark.parametrize("mode", ["grouped", "packed", "padded"])
def test_useful_token_counts_exact(tok, mode):
    examples, _ = tokenize_rows(tiny_rows(40, tok, seed=4), tok, max_length=128)
    plan = plan_batches([len(e) for e in examples], mode, 4, 128, seed=0, epoch=0)
    seen = sorted(i for batch in plan for row in batch for i in row)
    assert seen == list(range(len(examples)))  # every example exactly once per epoch
    batches = [collate(examples, rows, mode, 128, tok.pad_token_id) for rows in plan]
    assert sum(b.useful_tokens for b in batches) == sum(len(e) for e in examples)
    assert sum(b.n_supervised for b in batches) == sum(e.n_supervised for e in examples)
    for b in batches:
        assert b.useful_tokens + b.pad_tokens == b.input_ids.numel()
        real = b.attention_mask.sum().item() if b.attention_mask is not None else b.useful_tokens
        assert real == b.useful_tokens
        assert (b.labels[b.input_ids == tok.pad_token_id] != IGNORE_INDEX).sum() <= b.n_supervised  # EOS may be supervised
    if mode == "padded":
        assert all(b.input_ids.shape[1] == 128 for b in batches)


def test_grouped_and_packed_waste_less_than_padded(tok):
    examples, _ = tokenize_rows(tiny_rows(64, tok, seed=5), tok, max_length=256)
    waste = {}
    for mode in ("grouped", "packed", "padded"):
        plan = plan_batches([len(e) for e in examples], mode, 4, 256, seed=1, epoch=0)
        waste[mode] = padding_waste([collate(examples, rows, mode, 256, tok.pad_token_id) for rows in plan])
    assert waste["grouped"] < waste["padded"] and waste["packed"] < waste["padded"]
    assert waste["padded"] > 0.4 and waste["grouped"] < 0.15


def test_plan_is_deterministic_per_epoch_and_stream_crosses_epochs(tok):
    lengths = [len(e) for e in tokenize_rows(tiny_rows(20, tok), tok, 128)[0]]
    assert plan_batches(lengths, "grouped", 4, 128, 9, 0) == plan_batches(lengths, "grouped", 4, 128, 9, 0)
    assert plan_batches(lengths, "grouped", 4, 128, 9, 0) != plan_batches(lengths, "grouped", 4, 128, 9, 1)
    examples, _ = tokenize_rows(tiny_rows(20, tok), tok, 128)
    stream = BatchStream(examples, "grouped", 4, 128, tok.pad_token_id, seed=9)
    assert stream.batches_per_epoch == 5
    assert stream.locate(4) == (0, 4) and stream.locate(5) == (1, 0) and stream.locate(12) == (2, 2)
    assert torch.equal(stream[7].input_ids, BatchStream(examples, "grouped", 4, 128, 2, seed=9)[7].input_ids)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_do_not_attend_across_examples(tok, attn):
    """position_ids restarting per example (no attention mask) -> block-diagonal attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, attn_implementation=attn,
    )
    model = LlamaForCausalLM(cfg).eval()
    examples, _ = tokenize_rows(tiny_rows(3, tok, seed=6), tok, 128)
    batch = collate(examples, [[0, 1, 2]], "packed", 3 * 128 + 16, tok.pad_token_id)
    with torch.no_grad():
        packed = model(**batch.model_inputs("cpu"), use_cache=False).logits[0]
        start = 0
        for ex in examples:
            alone = model(torch.tensor([ex.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start : start + len(ex)], alone, rtol=1e-4, atol=1e-4)
            start += len(ex)


def test_grouped_batches_need_no_attention_mask(tok):
    """Right padding + causal attention: dropping the mask leaves every real position's logits unchanged."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    examples, _ = tokenize_rows(tiny_rows(4, tok, seed=7), tok, 128)
    batch = collate(examples, [[0], [1], [2], [3]], "grouped", 128, tok.pad_token_id)
    assert batch.attention_mask is None and batch.pad_tokens > 0
    mask = torch.zeros_like(batch.input_ids)
    for b, ex in enumerate(examples):
        mask[b, : len(ex)] = 1
    with torch.no_grad():
        fast = model(batch.input_ids, use_cache=False).logits
        masked = model(batch.input_ids, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    torch.testing.assert_close(fast[real], masked[real], rtol=1e-4, atol=1e-4)


def test_format_stage_tokens_equal_start_up_tokenization(tok, tmp_path):
    """`<split>.tokens.arrow` (written by the format stage, memory-mapped by the trainer) gives exactly the
    examples that tokenizing the rows at start-up gives, for any subset and max_length."""
    from model_utils import write_formatted

    from supportlm.data.tokens import tokens_path
    from supportlm.errors import DataError
    from supportlm.train.inputs import split_examples

    path = write_formatted(tmp_path, tok, n_train=30, n_val=4) / "train.jsonl"
    for n, max_length in ((None, 512), (7, 96)):
        mapped, s1 = split_examples(path, tok, n, seed=3, max_length=max_length)
        arrow = tokens_path(path).rename(tmp_path / "aside.arrow")
        tokenized, s2 = split_examples(path, tok, n, seed=3, max_length=max_length)
        arrow.rename(tokens_path(path))
        assert mapped == tokenized and 0 < len(mapped) <= (n or 30)
        assert s1.pop("source") == "train.tokens.arrow" and s2.pop("source") == "tokenized at start-up"
        assert s1 == s2
    assert split_examples(path, tok, None, 3, 96)[1]["truncated"] > 0  # the cut is the trainer's, not the file's
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # jsonl re-made, arrow stale
    with pytest.raises(DataError, match="rerun `dvc repro format`"):
        split_examples(path, tok, None, 3, 512)
