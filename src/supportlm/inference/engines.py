"""The decoding engines every offline number comes from: `HFEngine` (left-padded batched greedy
`generate`) and `GGUFEngine` (llama-cpp-python, one sequence at a time), plus `load_engine` that picks one.

evaluate/, quantize/, serve/batch.py and the GPU check decode with these, so every score in the reports
comes from the same greedy decoding code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.errors import DataError
from supportlm.inference.prompts import prompt_ids
from supportlm.inference.threads import resolve_threads


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS) or "length" (max_new_tokens)
    ids: list[int]  # completion token ids, EOS excluded
    first_token_s: float | None = None  # GGUF only: prefill + first token latency
    seconds: float = 0.0  # wall time of this sequence (GGUF) or its batch (HF)


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
    path = Path(model)
    threads = resolve_threads(threads)
    if path.is_file() and path.suffix == ".gguf":
        return GGUFEngine(path, n_ctx=n_ctx, threads=threads)
    if path.is_dir():
        import torch

        torch.set_num_threads(threads)
        return HFEngine.load(path, dtype=dtype)
    raise DataError(f"--model {model}: expected an HF model dir or a .gguf file")
