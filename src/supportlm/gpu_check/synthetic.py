"""The check's inputs, built in-process: a word-level tokenizer, a random-weight model, chat rows."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from supportlm.gpu_check.config import CheckConfig

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (= pad): SmolLM2's ChatML names
ROLES = ["system", "user", "assistant"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(vocab_size: int) -> Any:
    """Word-level tokenizer with exactly `vocab_size` ids: ChatML specials, role names, `w0`, `w1`, ...

    Word level (split on whitespace, specials matched first) keeps every chat-template prefix a token
    prefix, which the trainer's assistant-only labels rely on.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(SPECIALS) - len(ROLES))]
    vocab = {t: i for i, t in enumerate(SPECIALS + ROLES + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=SPECIALS[0],
        bos_token=SPECIALS[1],
        eos_token=SPECIALS[2],
        pad_token=SPECIALS[2],
    )
    fast.chat_template = CHATML
    if len(fast) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(fast)} ids, the config {vocab_size}")
    return fast


def model_config(dims: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import LlamaConfig, MistralConfig

    common = {
        "vocab_size": dims["vocab"],
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["intermediate"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if dims["arch"] == "mistral":
        return MistralConfig(**common, max_position_embeddings=32768, sliding_window=None)
    return LlamaConfig(**common, max_position_embeddings=4096)


def build_model(config: Any, device: str, dtype: Any, seed: int) -> Any:
    """Random weights initialised on `device` directly (a 7B in bf16 on a GPU takes seconds)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def save_model_dir(model: Any, tokenizer: Any, out: Path) -> Path:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def synthetic_messages(
    rng: random.Random, n_words: int, user_words: int, reply_words: int
) -> list[dict[str, str]]:
    """System + user + assistant turns of Zipf-distributed words (learnable: a few words dominate)."""
    weights = [1.0 / (k + 1) ** 1.1 for k in range(min(n_words, 256))]

    def text(n: int) -> str:
        return " ".join(f"w{k}" for k in rng.choices(range(len(weights)), weights=weights, k=n))

    return [
        {"role": "system", "content": text(8)},
        {"role": "user", "content": text(user_words)},
        {"role": "assistant", "content": text(reply_words)},
    ]


def write_rows(data_dir: Path, tokenizer: Any, cfg: CheckConfig, n_words: int) -> dict[str, Any]:
    """data_dir/{train,val}.jsonl in the data/formatted schema (made by data.format.format_split).

    Every row is longer than seq_len (user seq_len/8 words, reply seq_len words), so each micro-batch
    is exactly batch_size x seq_len tokens after truncation; train has one epoch of `steps` batches.
    """
    from supportlm.config import FormatParams
    from supportlm.data.format import format_split
    from supportlm.data.schema import Record
    from supportlm.io import write_jsonl

    stats = {}
    fp = FormatParams(max_length=cfg.seq_len)
    for split, n, seed in (
        ("train", cfg.batch_size * cfg.steps, cfg.seed + 1),
        ("val", cfg.batch_size, cfg.seed + 2),
    ):
        rng = random.Random(f"gpu-check-{split}-{seed}")
        records = [
            Record(
                id=f"{split}-{i:05d}",
                source="gpu_check",
                kind="qa",
                intent="track_order",
                category="ORDER",
                messages=synthetic_messages(rng, n_words, max(cfg.seq_len // 8, 4), cfg.seq_len),
            )
            for i in range(n)
        ]
        rows, stats[split], _ = format_split(records, tokenizer, fp)
        write_jsonl(data_dir / f"{split}.jsonl", rows)
    return stats
