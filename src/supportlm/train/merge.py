"""Merge a LoRA/QLoRA adapter into its base weights and save a plain HF model dir (models/merged).

    dvc repro merge
    python stages/merge.py

Why merge: evaluation, GGUF conversion and serving then load one ordinary model (no peft at
inference, no extra matmuls per layer).

QLoRA: the adapter was trained against a 4-bit base, but merging into 4-bit weights would
re-quantize W + BA and lose the update's precision. We always load the base UNquantized
and merge there: on CPU in fp32, cast to `merge.dtype` after (exact); on a CUDA GPU in
`merge.dtype` on the GPU (bf16 for a 7B: 14 GB instead of 28 GB of fp32; W + BA is rounded
once). If the base dir itself is a bnb-quantized checkpoint (`quantization_config` in its
config.json) it is de-quantized first (`model.dequantize()`), so the merged weights are plain floats.

Writes <out_dir>/ with model.safetensors, config.json, generation_config.json, tokenizer
files, chat template (chat_template.jinja and, for TGI, tokenizer_config.json) and supportlm_merge.json (adapter config, dtypes). The write is
atomic: everything goes to <out_dir>.tmp, which is renamed over <out_dir> at the end.

Raises:
    DataError: the base dir or the adapter dir is missing / not the right format.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from supportlm import chat_template
from supportlm.config import Params
from supportlm.errors import DataError
from supportlm.paths import Paths

log = logging.getLogger("supportlm.train")


def _load_base(base_dir: Path, dtype: Any, device: str = "cpu") -> tuple[Any, bool]:
    """Base model in `dtype` on `device`, never quantized; (model, was_dequantized)."""
    from transformers import AutoModelForCausalLM

    config = json.loads((base_dir / "config.json").read_text())
    placement = {} if device == "cpu" else {"device_map": device}
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype, **placement)
    dequantized = False
    if config.get("quantization_config"):
        # a pre-quantized (bnb) base checkpoint: back to floats before the adapter goes in
        model = model.dequantize()
        model = model.to(dtype)
        dequantized = True
    return model, dequantized


def merge(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    max_shard_size: str = "2GB",
    device: str = "auto",
) -> dict[str, Any]:
    """Fold `adapter_dir` (peft LoRA) into `base_dir` and save the result to `out_dir`.

    Args:
        base_dir: HF model dir of the base model (models/base).
        adapter_dir: peft adapter dir (adapter_config.json + adapter_model.safetensors).
        out_dir: where the merged HF model dir goes (replaced atomically).
        dtype: weights dtype of the merge and of the saved files.
        max_shard_size: safetensors shard size.
        device: `auto` = cuda when available, else cpu (CPU merges in fp32 and casts after).

    Returns:
        Summary (also saved as <out_dir>/supportlm_merge.json).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, GenerationConfig

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if not (base_dir / "config.json").is_file():
        raise DataError(f"{base_dir}: not an HF model dir (no config.json); run `dvc repro base_model`")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise DataError(f"{adapter_dir}: no adapter_config.json; run `dvc repro train` (peft adapter dir)")
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if adapter_cfg.get("peft_type", "LORA") not in ("LORA", "QLORA"):
        raise DataError(f"{adapter_dir}: peft_type={adapter_cfg.get('peft_type')}; only LoRA adapters merge")
    torch_dtype = getattr(torch, dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    t0 = time.perf_counter()
    if device == "cpu":
        model, dequantized = _load_base(base_dir, torch.float32)  # merge in fp32, cast after (exact on CPU)
    else:
        model, dequantized = _load_base(base_dir, torch_dtype, device)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model = model.merge_and_unload(safe_merge=True)  # safe_merge: fails on NaN/inf instead of saving them
    model = model.to(torch_dtype)
    model.config.dtype = torch_dtype
    merge_s = time.perf_counter() - t0

    # tokenizer: the adapter's copy if training saved one (it may set a pad token), else the base's
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    if tokenizer.chat_template is None:
        base_tok = AutoTokenizer.from_pretrained(str(base_dir))
        tokenizer.chat_template = base_tok.chat_template
    try:
        gen_cfg = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        gen_cfg = GenerationConfig(
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    model.generation_config = gen_cfg

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
    chat_template.save_tokenizer(tokenizer, tmp)  # also into tokenizer_config.json, where TGI reads it
    info = {
        "base_dir": str(base_dir),
        "adapter_dir": str(adapter_dir),
        "lora_r": adapter_cfg.get("r"),
        "lora_alpha": adapter_cfg.get("lora_alpha"),
        "target_modules": adapter_cfg.get("target_modules"),
        "base_dequantized": dequantized,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_bytes": sum(f.stat().st_size for f in tmp.glob("*.safetensors")),
        "merge_s": round(merge_s, 2),
    }
    if device != "cpu":  # the CPU pipeline's supportlm_merge.json keeps its keys
        info["device"] = device
    # the merge time goes to the log, not into the model dir: a cached out must not change with the clock
    log.info("merged in %.1f s", info["merge_s"])
    saved = {k: v for k, v in info.items() if k != "merge_s"}
    (tmp / "supportlm_merge.json").write_text(json.dumps(saved, indent=2, default=str))
    # swap: old dir aside, new one in, old one removed; a crash never leaves a half-written out_dir
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return info


def run_merge(params: Params, paths: Paths) -> dict[str, Any]:
    """The merge stage: models/base + models/adapter -> models/merged."""
    return merge(
        paths.base_model,
        paths.adapter,
        paths.merged,
        dtype=params.merge.dtype,
        max_shard_size=params.merge.max_shard_size,
    )
