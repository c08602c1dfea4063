"""Tiny, download-free model assets for the train tests (torchtune's tests/recipes/utils.py idea).

- `tiny_tokenizer()`: a byte-level BPE (~400 tokens) trained in milliseconds on a few support
  sentences, wrapped in `PreTrainedTokenizerFast` with the same ChatML template and specials
  (`<|im_start|>`, `<|im_end|>` = EOS = pad) as SmolLM2, so the chat-template code paths match.
- `tiny_model_dir(path)`: a random-weight 2-layer, 64-hidden `LlamaForCausalLM` (seeded, fp32) saved
  with that tokenizer as an HF dir, i.e. what `models/base/` looks like.
- `tiny_rows(n, tokenizer)`: formatted rows (the `data/formatted/*.jsonl` schema) built by the
  project's own `format_split`, and `write_formatted(root, ...)` to lay out a project tree.

Nothing here depends on `models/base/` or the network.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SYSTEM = "You are a helpful support assistant."

USER_LINES = [
    "Where is my order?",
    "I want a refund for my last purchase.",
    "How do I change my shipping address?",
    "Can I cancel my subscription today?",
    "My payment failed twice, what should I do?",
    "Please send me the invoice for order {{Order Number}}.",
    "How long does delivery take?",
    "I forgot my password and cannot log in.",
]
ASSISTANT_LINES = [
    "You can track your order under {{Order Tracking}} in your account.",
    "I am sorry to hear that. Refunds are processed within five business days.",
    "Go to {{Settings}} and open the address section to update it.",
    "Yes, you can cancel at any time from the subscription page.",
    "Please check your card details or try another payment method.",
    "The invoice is available under {{Invoices}}; I can also email it to you.",
    "Standard delivery takes three to five business days.",
    "Use the reset link on the login page and follow the email instructions.",
]


def tiny_tokenizer():  # PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = USER_LINES + ASSISTANT_LINES + [SYSTEM, "user", "assistant", "system"]
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model_dir(path: Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Save a seeded random LlamaForCausalLM + tiny tokenizer under `path` (an HF model dir)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def tiny_messages(i: int, rng: random.Random) -> list[dict[str, str]]:
    """One system + 1 or 2 user/assistant turns; lengths vary so batching has padding to save."""
    msgs = [{"role": "system", "content": SYSTEM}]
    for _ in range(1 + (i % 3 == 0)):
        k = rng.randrange(len(USER_LINES))
        reps = 1 + rng.randrange(3)
        msgs.append({"role": "user", "content": USER_LINES[k]})
        msgs.append({"role": "assistant", "content": " ".join([ASSISTANT_LINES[k]] * reps)})
    return msgs


def tiny_rows(n: int, tokenizer: Any, seed: int = 0, max_length: int = 512) -> list[dict[str, Any]]:
    """Formatted rows (data/formatted schema) made by the project's own `format_split`."""
    return tiny_formatted(n, tokenizer, seed, max_length)[0]


def tiny_formatted(n: int, tokenizer: Any, seed: int = 0, max_length: int = 512) -> tuple[list[dict], dict[str, list]]:
    """`format_split`'s rows and token columns (what the format stage writes) for `n` tiny records."""
    from supportlm.config import FormatParams
    from supportlm.data.format import format_split
    from supportlm.data.schema import Record

    rng = random.Random(seed)
    records = [
        Record(
            id=f"t{i:04d}", source="tiny", kind="qa", intent="track_order", category="ORDER",
            messages=tiny_messages(i, rng),
        )
        for i in range(n)
    ]
    rows, _, tokens = format_split(records, tokenizer, FormatParams(system_prompt=SYSTEM, max_length=max_length))
    return rows, tokens


def tiny_project(root: Path) -> Path:
    """A project root with models/base (the tiny Llama) and data/formatted/{train,val}: what the train tests use."""
    tiny_model_dir(Path(root) / "models" / "base")
    write_formatted(root, tiny_tokenizer())
    return Path(root)


def write_formatted(root: Path, tokenizer: Any, n_train: int = 48, n_val: int = 12, tokens: bool = True) -> Path:
    """Write data/formatted/{train,val}.jsonl (and, as the format stage does, their .tokens.arrow) under a
    project root; returns the formatted dir."""
    from supportlm.data.tokens import tokens_path, write_tokens

    out = Path(root) / "data" / "formatted"
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 1), ("val", n_val, 2)):
        rows, tok = tiny_formatted(n, tokenizer, seed=seed)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if tokens:
            write_tokens(tokens_path(out / f"{name}.jsonl"), tok)
    return out
