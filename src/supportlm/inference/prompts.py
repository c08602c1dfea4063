"""Token ids of a chat prompt (the model's chat template, ending in the assistant header) and of the
reply the model must produce: the one definition every engine and metric uses."""

from __future__ import annotations

from typing import Any

from supportlm.chat_template import template_ids


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], max_tokens: int | None = None) -> list[int]:
    """Chat-templated prompt ending in the assistant header; keeps the LAST max_tokens tokens."""
    ids = template_ids(tokenizer, messages, add_generation_prompt=True)
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[-max_tokens:]
    return ids


def reply_ids(tokenizer: Any, reply: str) -> list[int]:
    """Token ids the model has to produce for `reply`: the text, then EOS."""
    ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]
