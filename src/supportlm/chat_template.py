"""The base model's chat template, made usable for every stage and every server.

Three problems, solved once on models/base so format, train, evaluate, merge, the GGUF export
and TGI all see the same template:

- **No chat template** (microsoft/phi-2): the model gets `INSTRUCT_OUTPUT`, the documented
  template below (the "Instruct: ... / Output:" QA format of Phi-2's model card; the system
  prompt leads the first turn). `base_model.chat_template` may name any other Jinja file.
- **No system role** (Gemma's template raises on one, Mistral-v0.2's demands strict
  user/assistant alternation, some silently drop it): the format stage always sends a system
  prompt, so the template is wrapped by `FOLD_SYSTEM`, which moves the system prompt into the
  first user turn before the original template runs. The wrapper is plain Jinja (a `set` of a
  new list), so TGI's minijinja and llama.cpp's jinja render it too: a client's system message
  reaches such a model folded the same way instead of as a 422.
- **Where servers look for it**: transformers 5 saves the template to `chat_template.jinja`
  only; TGI reads `chat_template` from tokenizer_config.json only. `save_tokenizer` writes both
  (every tokenizer the pipeline saves goes through it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.errors import ConfigError, DataError

# Phi-2's documented prompt format (model card, "QA format"), one turn after another.
INSTRUCT_OUTPUT = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'Instruct: ' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Output: ' + message['content'] + eos_token + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Output:' }}{%- endif -%}"
)

FOLD_MARK = "{#- supportlm: system prompt folded into the first user turn -#}"
FOLD_SYSTEM = (
    FOLD_MARK + "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages | length > 1 and messages[1]['role'] == 'user' -%}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content'] + '\n\n' + messages[1]['content']}]"
    " + messages[2:] -%}"
    "{%- else -%}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content']}] + messages[1:] -%}"
    "{%- endif -%}"
    "{%- endif -%}"
)

_PROBE_SYSTEM = "supportlm-probe-system-7f3a"
_PROBE_USER = "supportlm-probe-user-7f3a"


def system_role_supported(tokenizer: Any) -> tuple[bool, str]:
    """(supported, why): does the template render a system message and keep its text?"""
    probe = [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - any failure to render (TemplateError, raise_exception) = no system role
        return False, f"the template rejects a system message ({type(exc).__name__}: {exc})"
    if _PROBE_SYSTEM not in text:
        return False, "the template drops the system message's text"
    return True, "native"


def prepare(tokenizer: Any, template_file: str | Path | None = None) -> dict[str, str]:
    """Give `tokenizer` a chat template every stage can use; returns what was done (for the reports).

    Raises:
        ConfigError: `template_file` is not a file.
        DataError: the template cannot render a system prompt even after folding.
    """
    if template_file is not None:
        path = Path(template_file)
        if not path.is_file():
            raise ConfigError(f"base_model.chat_template: {path} is not a file (a Jinja chat template)")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        source = str(path)
    elif tokenizer.chat_template:
        source = "model"
    else:
        tokenizer.chat_template = INSTRUCT_OUTPUT
        source = "supportlm INSTRUCT_OUTPUT (the model ships none; Phi-2 model card format)"
    supported, why = system_role_supported(tokenizer)
    if supported:
        return {"chat_template": source, "system_role": "native"}
    tokenizer.chat_template = FOLD_SYSTEM + tokenizer.chat_template
    folded, after = system_role_supported(tokenizer)
    if not folded:
        raise DataError(f"chat template ({source}): cannot render a system prompt even folded: {after}")
    return {"chat_template": source, "system_role": f"folded into the first user turn: {why}"}


# How the tokenizer was loaded, not what it is: transformers writes these back into tokenizer_config.json
# (`local_files_only` follows HF_HUB_OFFLINE), so the same model would hash differently per environment.
LOAD_TIME_KEYS = ("local_files_only", "cache_dir", "token", "_commit_hash", "force_download", "proxies")


def save_tokenizer(tokenizer: Any, out_dir: str | Path) -> None:
    """`save_pretrained`, plus the template in tokenizer_config.json where TGI reads it, minus the
    load-time keys (the saved files depend only on the tokenizer, not on HF_HUB_OFFLINE)."""
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in LOAD_TIME_KEYS:
        config.pop(key, None)
    if isinstance(tokenizer.chat_template, str):
        config["chat_template"] = tokenizer.chat_template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


IGNORE_INDEX = -100  # the label of a token the loss skips (system/user turns, padding): cross_entropy's default


def span_labels(ids: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """Labels for `ids`: the id itself inside an assistant span, IGNORE_INDEX elsewhere."""
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return labels


def template_ids(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of `messages` through the chat template: the one chat-template → ids call every stage uses
    (transformers 5 returns a BatchEncoding, older versions a list)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)


def _span_renders(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """What `assistant_spans` tokenizes: the conversation, and per assistant turn the prompt before it
    (ending in the assistant header) and the conversation through it."""
    turns = [
        (
            tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True),
            tokenizer.apply_chat_template(messages[: i + 1], tokenize=False),
        )
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False), turns


def assistant_spans_batch(
    tokenizer: Any, conversations: Sequence[list[dict[str, str]]]
) -> list[tuple[list[int], list[tuple[int, int]], bool]]:
    """`assistant_spans` of many conversations, with one batched tokenizer call for all of them.

    Why: the format stage spans every row of every split, and the per-call overhead of transformers'
    tokenizer (`apply_chat_template(tokenize=True)` renders and then tokenizes one text) was most of its
    time. Here the chat template renders each text as before, every distinct text is tokenized once (a
    conversation's last assistant turn ends in the conversation itself) and the fast tokenizer encodes
    the batch in parallel. The ids are `apply_chat_template`'s own: it too tokenizes the rendered text
    with `add_special_tokens=False`."""
    renders = [_span_renders(tokenizer, messages) for messages in conversations]
    distinct = list(dict.fromkeys(t for text, turns in renders for t in (text, *(x for turn in turns for x in turn))))
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    ids_of = {text: list(ids) for text, ids in zip(distinct, encoded, strict=True)}
    out = []
    for text, turns in renders:
        full = ids_of[text]
        spans: list[tuple[int, int]] = []
        exact = True
        for before_text, after_text in turns:
            before, after = ids_of[before_text], ids_of[after_text]
            spans.append((len(before), len(after)))
            exact = exact and after == full[: len(after)] and before == after[: len(before)]
        out.append((full, spans, exact))
    return out


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[list[int], list[tuple[int, int]], bool]:
    """The templated ids, each assistant turn's [start, end) token span, and whether every span is exact.

    A turn's span runs from the prompt before it (ending in the assistant header) to the conversation
    through it. A tokenizer that merges tokens across the turn boundary makes those prefixes differ
    from the full conversation's ids: the spans are then off by a token or two (`exact` is False)."""
    return assistant_spans_batch(tokenizer, [messages])[0]
