"""The llama.cpp measurement tools the quantize stage runs: llama-imatrix and llama-perplexity's KL-divergence.

- `write_replies(jsonl, out, ...)`: the assistant replies of a formatted split as plain text, one reply per
  paragraph: the corpus both tools read. Plain text, not the chat template: both tools tokenize their input
  without parsing special tokens, so `<|im_start|>` would become ordinary text pieces.
- `imatrix(f16, corpus, out, ...)`: the importance matrix (llama-imatrix): per weight column, the mean squared
  activation it sees on the corpus. llama-quantize --imatrix then spends a block's rounding error where
  activations are small, which matters most for 4-bit types (and the IQ types are built around it).
- `lookup_cache(gguf, corpus, out)` / `lookup_stats(...)`: llama-lookup-create's static n-gram cache of the
  training replies (llama-server drafts from it: support replies repeat phrases) and llama-lookup-stats'
  acceptance of its drafts on held-out replies;
- `kl_divergence(f16, variants, text, ...)`: llama-perplexity --kl-divergence-base writes f16's token
  distributions on held-out text (n_vocab log-probs per scored token, ~100 KB each for a 49K vocab, in a
  temporary file), then each variant is scored against them: mean/median/99th-percentile KL-divergence,
  how often the top token agrees, and the perplexity ratio: the standard measures of quantization damage,
  computed over every position rather than only the tokens a greedy reply happens to produce.

A crashed tool (SIGILL from a build for another CPU, ...) raises ChildCrashed naming the binary and signal.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.errors import DataError
from supportlm.runtime import check_exit, describe_exit


def write_replies(jsonl: Path, out: Path, exclude_ids: Collection[str] = (), max_chars: int | None = None) -> int:
    """Every assistant reply in a formatted split (rows in `exclude_ids` skipped) -> `out`; returns the count."""
    if not jsonl.is_file():
        raise DataError(f"{jsonl}: not found; run `dvc repro format`")
    n, size = 0, 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with jsonl.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line_no, line in enumerate(src, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if str(row.get("id")) in exclude_ids:
                continue
            for msg in row.get("messages") or []:
                if msg.get("role") == "assistant" and str(msg.get("content", "")).strip():
                    text = str(msg["content"]).strip() + "\n\n"
                    dst.write(text)
                    n, size = n + 1, size + len(text)
            if max_chars is not None and size >= max_chars:
                break
    if n == 0:
        raise DataError(f"{jsonl}: no assistant replies to build a corpus from")
    return n


def _run(what: str, cmd: list[str], timeout: int) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        check_exit(f"{cmd[0]} ({what})", proc.returncode, out[-3000:])
        raise DataError(f"{Path(cmd[0]).name} ({what}) failed ({describe_exit(proc.returncode)}):\n{out[-3000:]}")
    return out


def imatrix(
    f16: Path, corpus: Path, out: Path, *, chunks: int, ctx: int, threads: int | None = None, timeout: int = 3600
) -> dict[str, Any]:
    """llama-imatrix over `chunks` windows of `ctx` tokens of the corpus -> `out` (GGUF imatrix, atomic)."""
    tmp = out.with_name(out.name + ".tmp.gguf")
    cmd = [str(llamacpp.tool("llama-imatrix")), "-m", str(f16), "-f", str(corpus), "-o", str(tmp),
           "--chunks", str(chunks), "-c", str(ctx), "--no-ppl", "--output-format", "gguf"]  # fmt: skip
    if threads:
        cmd += ["-t", str(threads)]
    t0 = time.perf_counter()
    _run(f"importance matrix of {f16.name}", cmd, timeout)
    if not tmp.is_file():
        raise DataError(f"llama-imatrix wrote no {tmp}")
    tmp.replace(out)
    return {"path": str(out), "chunks": chunks, "ctx": ctx, "tokens": chunks * ctx,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
KLD_LINES = {  # llama-perplexity's summary lines -> our keys ("± x" read into <key>_unc where printed)
    "mean_kld": rf"Mean\s+KLD:\s+{_NUMBER}\s+±\s+{_NUMBER}",
    "median_kld": rf"Median\s+KLD:\s+{_NUMBER}",
    "p99_kld": rf"99\.0%\s+KLD:\s+{_NUMBER}",
    "max_kld": rf"Maximum\s+KLD:\s+{_NUMBER}",
    "same_top_p": rf"Same top p:\s+{_NUMBER}\s+±\s+{_NUMBER}\s*%",
    "ppl_ratio": rf"Mean PPL\(Q\)/PPL\(base\)\s*:\s+{_NUMBER}\s+±\s+{_NUMBER}",
}


def parse_kld(text: str) -> dict[str, float]:
    """The KL-divergence summary of llama-perplexity's output; DataError naming what is missing."""
    out: dict[str, float] = {}
    for key, pattern in KLD_LINES.items():
        match = re.search(pattern, text)
        if match is None:
            raise DataError(f"llama-perplexity output has no {key} line (/{pattern}/):\n{text[-2000:]}")
        scale = 0.01 if key == "same_top_p" else 1.0  # printed as a percentage
        out[key] = float(match.group(1)) * scale
        if match.lastindex and match.lastindex > 1:
            out[f"{key}_unc"] = float(match.group(2)) * scale
    return out


def kl_divergence(
    f16: Path,
    variants: Mapping[str, Path],
    text: Path,
    *,
    chunks: int,
    ctx: int,
    threads: int | None = None,
    timeout: int = 3600,
) -> dict[str, Any]:
    """{"tokens": scored tokens, "variants": {name: parse_kld(...) + seconds}} against f16 on `text`."""
    exe = str(llamacpp.tool("llama-perplexity"))
    common = ["-c", str(ctx), "--chunks", str(chunks), *(["-t", str(threads)] if threads else [])]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="supportlm-kld-") as tmp:
        base = Path(tmp) / "f16.kld"
        t0 = time.perf_counter()
        _run(f"f16 logits on {text.name}", [exe, "-m", str(f16), "-f", str(text), "--kl-divergence-base", str(base),
                                            *common], timeout)  # fmt: skip
        base_s = time.perf_counter() - t0
        for name, path in variants.items():
            t0 = time.perf_counter()
            out = _run(f"KL-divergence of {name} vs f16",
                       [exe, "-m", str(path), "--kl-divergence-base", str(base), "--kl-divergence", *common], timeout)  # fmt: skip
            results[name] = {**parse_kld(out), "seconds": round(time.perf_counter() - t0, 1)}
    return {"chunks": chunks, "ctx": ctx, "tokens": chunks * (ctx - 1 - ctx // 2), "base_s": round(base_s, 1),
            "text": str(text), "variants": results}  # fmt: skip


def lookup_cache(gguf: Path, corpus: Path, out: Path, *, timeout: int = 1800) -> dict[str, Any]:
    """llama-lookup-create: the static n-gram cache llama-server drafts from (--spec-type ngram-cache
    --lookup-cache-static). Only the model's tokenizer is used (any variant of the model gives the same ids)."""
    tmp = out.with_name(out.name + ".tmp")
    t0 = time.perf_counter()
    _run(f"n-gram cache of {corpus.name}", [str(llamacpp.tool("llama-lookup-create")), "-m", str(gguf), "-f",
                                             str(corpus), "--lookup-cache-static", str(tmp)], timeout)  # fmt: skip
    if not tmp.is_file():
        raise DataError(f"llama-lookup-create wrote no {tmp}")
    tmp.replace(out)
    return {"path": str(out), "size_bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}


LOOKUP_STATS_LINES = {"drafted": r"n_drafted\s*=\s*(\d+)", "accepted": r"n_accept\s*=\s*(\d+)",
                      "predicted": r"n_predict\s*=\s*(\d+)"}  # fmt: skip


def lookup_stats(gguf: Path, text: Path, cache: Path, *, ctx: int, timeout: int = 1800) -> dict[str, Any]:
    """llama-lookup-stats: how many of the tokens drafted from the cache (plus the text's own n-grams) match
    the held-out text that follows: the acceptance a model that writes like the references would see."""
    t0 = time.perf_counter()
    out = _run(f"n-gram draft acceptance on {text.name}", [str(llamacpp.tool("llama-lookup-stats")), "-m", str(gguf),
               "-f", str(text), "--lookup-cache-static", str(cache), "-c", str(ctx)], timeout)  # fmt: skip
    found = {}
    for key, pattern in LOOKUP_STATS_LINES.items():
        match = re.search(pattern, out)
        if match is None:
            raise DataError(f"llama-lookup-stats output has no {key} line (/{pattern}/):\n{out[-2000:]}")
        found[key] = int(match.group(1))
    found["acceptance"] = found["accepted"] / found["drafted"] if found["drafted"] else None
    found["seconds"] = round(time.perf_counter() - t0, 1)
    return found


__all__ = ["imatrix", "kl_divergence", "lookup_cache", "lookup_stats", "parse_kld", "write_replies"]
