"""Offline batch inference: JSONL in -> JSONL out, resumable; HF model dir or GGUF file.

    supportlm batch data/formatted/test.jsonl out/replies.jsonl --model models/merged
    supportlm batch requests.jsonl out/replies.jsonl --model models/gguf/model-served.gguf

Input rows (one JSON object per line):
    {"id": "a1", "messages": [{"role": "user", "content": "..."}, ...]}   # chat; or
    {"id": "a2", "prompt": "Where is my order?"}                          # one user turn
`id` is optional (default `line-<n>`). Trailing assistant turns are dropped (so formatted
test rows, which end with the reference reply, can be fed as they are): the model answers
the last user turn. `system_prompt=` is prepended when a row has no system message.

Output rows: {"id", "reply", "finish_reason" ("stop"|"length"), "prompt_tokens",
"completion_tokens", "model", "line"}. Appended and flushed (fsync) after every batch, so a
killed run loses at most one batch; a rerun skips every id already in the output (a torn last
line from a crash is dropped first). Bad input rows (broken JSON, not an object, no
`messages`/`prompt`, malformed messages, duplicate id) never stop the run: they go to the
errors file (default `<out stem>.errors.jsonl`) as {"line", "id", "error"} and into the summary.

The engines here (`HFEngine`: left-padded batched `generate`; `GGUFEngine`: llama-cpp-python,
one sequence at a time) are also what evaluate/ and quantize/ decode with, so every number in
the reports comes from the same greedy decoding code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supportlm.errors import DataError
from supportlm.inference.engines import load_engine

ROLES = {"system", "user", "assistant"}


class BadRow(ValueError):
    """An input line that cannot be turned into a request; str(exc) goes into the errors file."""


# ---------------------------------------------------------------- input / resume


def parse_row(
    line: str, lineno: int, system_prompt: str | None = None
) -> tuple[str, list[dict[str, str]], dict]:
    """One input line -> (id, messages ending with a user turn, the raw row). Raises BadRow."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadRow(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    rid = row.get("id", f"line-{lineno}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise BadRow("`id` must be a string or an integer")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BadRow("`messages` must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise BadRow(f"`messages[{i}]` must be {{role: system|user|assistant, content: str}}")
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        if not msgs or msgs[-1]["role"] != "user":
            raise BadRow("`messages` must contain a user turn to answer")
    elif "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise BadRow("`prompt` must be a non-empty string")
        msgs = [{"role": "user", "content": row["prompt"]}]
    else:
        raise BadRow("missing `messages` or `prompt`")
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return str(rid), msgs, row


def done_ids(out_path: Path) -> set[str]:
    """Ids already written; a torn (unparsable) line from a killed run is removed from the file."""
    if not out_path.exists():
        return set()
    good, ids, torn = [], set(), 0
    with out_path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                ids.add(str(rec["id"]))
                good.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                torn += 1
    if torn:
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text("".join(good), encoding="utf-8")
        tmp.replace(out_path)
    return ids


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def batch(
    in_jsonl: str | Path,
    out_jsonl: str | Path,
    model: str | Path | Any,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    errors_path: str | Path | None = None,
    system_prompt: str | None = None,
    max_prompt_tokens: int | None = None,
    n_ctx: int = 2048,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate a reply for every valid row of `in_jsonl` not yet in `out_jsonl`.

    Args:
        in_jsonl: input rows (see module docstring).
        out_jsonl: output rows; appended to, never truncated (resume).
        model: HF model dir, .gguf file, or an already loaded HFEngine/GGUFEngine.
        max_new_tokens: reply budget per row.
        batch_size: rows per generate call (HF: one padded batch; GGUF: rows between flushes).
        errors_path: bad-row report; default `<out_jsonl stem>.errors.jsonl` next to it.
        system_prompt: prepended to rows without a system message.

    Returns:
        Summary {rows, skipped_done, generated, errors, error_lines, errors_file, seconds,
        completion_tokens, tokens_per_s, out}.
    """
    from tqdm import tqdm

    in_path, out_path = Path(in_jsonl), Path(out_jsonl)
    if not in_path.is_file():
        raise DataError(f"{in_path}: input file not found")
    errors_path = Path(errors_path) if errors_path else out_path.with_name(out_path.stem + ".errors.jsonl")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    already = done_ids(out_path)

    todo: list[tuple[int, str, list[dict[str, str]]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    n_rows = 0
    with in_path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            n_rows += 1
            try:
                rid, msgs, _ = parse_row(line, lineno, system_prompt)
            except BadRow as exc:
                errors.append({"line": lineno, "id": None, "error": str(exc)})
                continue
            if rid in seen:
                errors.append({"line": lineno, "id": rid, "error": "duplicate id (an earlier line has it)"})
                continue
            seen.add(rid)
            if rid not in already:
                todo.append((lineno, rid, msgs))
    tmp = errors_path.with_name(errors_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    tmp.replace(errors_path)

    t0 = time.perf_counter()
    generated, completion_tokens = 0, 0
    if todo:
        engine = model if hasattr(model, "generate_ids") else load_engine(model, n_ctx=n_ctx, threads=threads)
        name = str(model if isinstance(model, (str, Path)) else getattr(engine, "name", "model"))
        bar = tqdm(total=len(todo), unit="row", desc="batch", disable=not progress)
        with out_path.open("a", encoding="utf-8") as out:
            for chunk in _chunks(todo, batch_size):
                prompts = [engine.prompt_ids(msgs, max_prompt_tokens) for _, _, msgs in chunk]
                gens = engine.generate_ids(prompts, max_new_tokens, batch_size)
                for (lineno, rid, _), g in zip(chunk, gens, strict=True):
                    rec = {
                        "id": rid,
                        "reply": g.text,
                        "finish_reason": g.finish_reason,
                        "prompt_tokens": g.prompt_tokens,
                        "completion_tokens": g.completion_tokens,
                        "model": name,
                        "line": lineno,
                    }
                    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    completion_tokens += g.completion_tokens
                out.flush()
                os.fsync(out.fileno())  # a crash after this point never loses the batch
                generated += len(chunk)
                bar.update(len(chunk))
        bar.close()
    dt = time.perf_counter() - t0
    return {
        "rows": n_rows,
        "skipped_done": len(seen & already),
        "generated": generated,
        "errors": len(errors),
        "error_lines": [e["line"] for e in errors],
        "errors_file": str(errors_path),
        "seconds": round(dt, 2),
        "completion_tokens": completion_tokens,
        "tokens_per_s": round(completion_tokens / dt, 1) if dt > 0 and completion_tokens else 0.0,
        "out": str(out_path),
    }


__all__ = ["BadRow", "batch", "done_ids", "parse_row"]
