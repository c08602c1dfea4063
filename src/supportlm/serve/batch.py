"""Offline batch inference: JSONL in -> JSONL out, resumable; HF model dir or GGUF file.

    supportlm batch data/formatted/test.jsonl out/replies.jsonl --model models/merged
    supportlm batch requests.jsonl out/replies.jsonl --model models/gguf/model-q4_k_m.gguf

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.errors import DataError

ROLES = {"system", "user", "assistant"}


class BadRow(ValueError):
    """An input line that cannot be turned into a request; str(exc) goes into the errors file."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS) or "length" (max_new_tokens)
    ids: list[int]  # completion token ids, EOS excluded
    first_token_s: float | None = None  # GGUF only: prefill + first token latency
    seconds: float = 0.0  # wall time of this sequence (GGUF) or its batch (HF)


# ---------------------------------------------------------------- engines


class HFEngine:
    """Greedy batched decoding with an HF causal LM (left padding; batches sorted by prompt length)."""

    kind = "hf"

    def __init__(self, model: Any, tokenizer: Any, name: str = "hf") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model.eval()

    @classmethod
    def load(cls, model_dir: str | Path, dtype: str = "auto", **model_kwargs: Any) -> HFEngine:
        """`dtype="auto"`: float32 on CPU (the reproducible CPU pipeline), bfloat16 on a CUDA GPU (float16
        where it has no bf16). With CUDA the model goes on the GPU unless `device_map` says otherwise."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise DataError(f"{model_dir}: not an HF model dir (no config.json)")
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        cuda = torch.cuda.is_available()
        if dtype == "auto":
            dtype = "float32" if not cuda else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if "quantization_config" not in model_kwargs:
            model_kwargs["dtype"] = getattr(torch, dtype)
        if cuda:
            model_kwargs.setdefault("device_map", "cuda")
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **model_kwargs)
        return cls(model, tok, name=model_dir.name)

    def prompt_ids(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> list[int]:
        from supportlm.evaluate.metrics import prompt_ids

        return prompt_ids(self.tokenizer, messages, max_tokens)

    def generate_ids(
        self, prompts: Sequence[list[int]], max_new_tokens: int = 128, batch_size: int = 8, min_new_tokens: int = 0
    ) -> list[Generation]:
        """Greedy replies; `min_new_tokens` masks EOS until that many tokens (speed checks on random
        weights need exactly N tokens per row)."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        eos, pad = tok.eos_token_id, tok.pad_token_id
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad,
            **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}),
        )
        device = next(self.model.parameters()).device
        order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
        out: list[Generation | None] = [None] * len(prompts)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(prompts[k]) for k in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)  # (B, T) left padded
                attn = torch.zeros((len(idx), width), dtype=torch.long)
                for row, k in enumerate(idx):
                    p = prompts[k]
                    ids[row, width - len(p) :] = torch.tensor(p)
                    attn[row, width - len(p) :] = 1
                t0 = time.perf_counter()
                gen = self.model.generate(
                    input_ids=ids.to(device), attention_mask=attn.to(device), generation_config=cfg
                )
                dt = time.perf_counter() - t0
                new = gen[:, width:].tolist()  # (B, <= max_new_tokens)
                for row, k in enumerate(idx):
                    seq = new[row]
                    stop = eos in seq
                    seq = seq[: seq.index(eos)] if stop else seq
                    out[k] = Generation(
                        text=tok.decode(seq, skip_special_tokens=True).strip(),
                        prompt_tokens=len(prompts[k]),
                        completion_tokens=len(seq),
                        finish_reason="stop" if stop or len(seq) < max_new_tokens else "length",
                        ids=seq,
                        seconds=dt,
                    )
        return [g for g in out if g is not None]

    def generate(
        self,
        conversations: Sequence[list[dict[str, str]]],
        max_new_tokens: int = 128,
        batch_size: int = 8,
        max_prompt_tokens: int | None = None,
    ) -> list[Generation]:
        prompts = [self.prompt_ids(m, max_prompt_tokens) for m in conversations]
        return self.generate_ids(prompts, max_new_tokens, batch_size)


class GGUFEngine:
    """Greedy decoding with llama-cpp-python (one sequence at a time; KV prefix reuse across prompts)."""

    kind = "gguf"

    def __init__(
        self,
        path: str | Path,
        n_ctx: int = 2048,
        threads: int | None = None,
        logits_all: bool = False,
        tokenizer: Any = None,
    ) -> None:
        from supportlm.llamacpp import binding

        llama_cpp = binding()  # the project's own libllama (built for this CPU), not a second copy
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: GGUF file not found")
        self.path, self.name = path, path.stem
        t0 = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            verbose=False,
            seed=0,
        )
        self.load_s = time.perf_counter() - t0
        self._lib = llama_cpp  # is_eog runs once per token: no per-token lookup
        self.tokenizer = tokenizer  # optional HF tokenizer: identical prompt ids to the HF engine
        self._formatter: Any = None

    def prompt_ids(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> list[int]:
        if self.tokenizer is not None:
            from supportlm.evaluate.metrics import prompt_ids

            return prompt_ids(self.tokenizer, messages, max_tokens)
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            meta = self.llm.metadata
            template = meta.get("tokenizer.chat_template")
            if not template:
                raise DataError(
                    f"{self.path}: no tokenizer.chat_template in the GGUF; cannot format chat rows"
                )
            tok = self.llm._model
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=tok.token_get_text(self.llm.token_eos()),
                bos_token=tok.token_get_text(self.llm.token_bos()),
            )
        text = self._formatter(messages=messages).prompt
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return ids[-max_tokens:] if max_tokens and len(ids) > max_tokens else ids

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.llm._model.vocab, token))

    def generate_one(self, prompt: list[int], max_new_tokens: int = 128) -> Generation:
        out: list[int] = []
        t0 = time.perf_counter()
        first = None
        stop = False
        for tok in self.llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter() - t0
            if self.is_eog(tok):
                stop = True
                break
            out.append(tok)
            if len(out) >= max_new_tokens:
                break
        dt = time.perf_counter() - t0
        text = self.llm.detokenize(out).decode("utf-8", errors="replace").strip()
        return Generation(
            text=text,
            prompt_tokens=len(prompt),
            completion_tokens=len(out),
            finish_reason="stop" if stop else "length",
            ids=out,
            first_token_s=first,
            seconds=dt,
        )

    def generate_ids(
        self, prompts: Sequence[list[int]], max_new_tokens: int = 128, batch_size: int = 1
    ) -> list[Generation]:
        return [self.generate_one(list(p), max_new_tokens) for p in prompts]

    def generate(
        self,
        conversations: Sequence[list[dict[str, str]]],
        max_new_tokens: int = 128,
        batch_size: int = 1,
        max_prompt_tokens: int | None = None,
    ) -> list[Generation]:
        return self.generate_ids(
            [self.prompt_ids(m, max_prompt_tokens) for m in conversations], max_new_tokens
        )


def load_engine(model: str | Path, n_ctx: int = 2048, threads: int | None = None, dtype: str = "float32"):
    """HF model dir -> HFEngine; *.gguf file -> GGUFEngine. threads None = auto (idle cores, >= 1)."""
    from supportlm.evaluate.run import resolve_threads

    path = Path(model)
    threads = resolve_threads(threads)
    if path.is_file() and path.suffix == ".gguf":
        return GGUFEngine(path, n_ctx=n_ctx, threads=threads)
    if path.is_dir():
        import torch

        torch.set_num_threads(threads)
        return HFEngine.load(path, dtype=dtype)
    raise DataError(f"--model {model}: expected an HF model dir or a .gguf file")


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


__all__ = ["BadRow", "GGUFEngine", "Generation", "HFEngine", "batch", "done_ids", "load_engine", "parse_row"]
