"""The model the recipe trains: the base (full precision or 4-bit) with LoRA adapters on its targets."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from supportlm.config import LoraParams, TrainParams
from supportlm.errors import ConfigError, MissingDependencyError
from supportlm.train.device import DTYPES
from supportlm.train.loss import Head, split_head

log = logging.getLogger("supportlm.train")

# Projection names per architecture (`config.model_type`) for lora.target_modules=auto.
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
AUTO_TARGETS: dict[str, list[str]] = {
    **{
        t: _LLAMA_LIKE
        for t in ("llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3", "olmo2")
    },
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names (`q_proj`) of every linear-like module: what lora.target_modules may name."""
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_target_modules(model: torch.nn.Module, lora: LoraParams) -> list[str]:
    """`auto` -> the architecture's projections; explicit names are checked (ConfigError lists the valid ones)."""
    available = linear_module_names(model)
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    if lora.target_modules == "auto":
        wanted = [n for n in AUTO_TARGETS.get(model_type, []) if n in available]
        if not wanted:  # unknown architecture: every linear layer except the output head
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            heads = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head and head is not None}
            wanted = [n for n in available if n not in heads | {"lm_head"}]
        return wanted
    bad = [n for n in lora.target_modules if n not in available]
    if bad:
        raise ConfigError(
            f"lora.target_modules: {', '.join(f'`{b}`' for b in bad)} not found in this {model_type} model "
            f"({type(model).__name__}). Available linear modules: {available}. Or use `auto`."
        )
    return list(lora.target_modules)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks (the classes transformers lists in `_no_split_modules`): FSDP's units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [m for m in base.modules() if type(m).__name__ in names]


@dataclass
class LoraModel:
    """What `load_lora_model` hands the recipe."""

    model: Any  # peft PeftModelForCausalLM
    target_modules: list[str]
    head: Head | None  # see loss.split_head
    trainable_params: int


def load_lora_model(
    model_dir: Path,
    model_config: Any,
    p: TrainParams,
    lora: LoraParams,
    device: torch.device,
    precision: str,
) -> LoraModel:
    """Load the base (fp/bf16, or 4-bit for qlora), wrap it with LoRA adapters."""
    dtype = DTYPES[precision]
    # bitsandbytes' CPU backend warns about an optional kernels package on import; not actionable.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # Validate target modules on a weightless (meta) model: no time wasted loading a 7B base.
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    targets = resolve_target_modules(skeleton, lora)
    del skeleton

    kwargs: dict[str, Any] = {"dtype": dtype if precision != "fp16" else torch.float16}
    if p.method == "qlora":
        kwargs["quantization_config"] = _bnb_config(p, device, dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if p.method == "lora":
        model.to(device)
    model.config.use_cache = False
    if p.method == "qlora":
        _disable_bnb_cpu_inference_packing(model)
    gc_kwargs = {"use_reentrant": False}
    if p.method == "qlora":
        from peft import prepare_model_for_kbit_training

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=p.gradient_checkpointing,
                gradient_checkpointing_kwargs=gc_kwargs,
            )
    elif p.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(p.seed)  # LoRA A init + dropout stream; a resume restores both from the checkpoint
    with warnings.catch_warnings():  # peft calls transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)  # adapters in fp32 (peft autocast_adapter_dtype)
    head = split_head(peft_model)
    trainable = sum(t.numel() for t in peft_model.parameters() if t.requires_grad)
    total = sum(t.numel() for t in peft_model.parameters())
    log.info(
        "model: %s %s, %s on %s (%s), targets %s: %s trainable params of %s (%.2f%%)",
        model_config.model_type,
        p.method,
        precision,
        device.type,
        f"{torch.get_num_threads()} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(),
        ",".join(targets),
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )
    return LoraModel(peft_model, targets, head, trainable)


def _bnb_config(p: TrainParams, device: torch.device, dtype: torch.dtype) -> Any:
    """4-bit load settings from `train.quant`; `dtype` (the train precision) when compute_dtype is unset."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "train.method=qlora needs bitsandbytes: pip install -e '.[train]' (or set train.method=lora)"
        ) from None
    from transformers import BitsAndBytesConfig

    q = p.quant
    compute = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        q.compute_dtype, dtype
    )
    if device.type == "cpu":
        log.warning("train.method=qlora on CPU: bitsandbytes dequantizes every matmul; expect a slow run")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def _disable_bnb_cpu_inference_packing(model: torch.nn.Module) -> None:
    """Keep bitsandbytes 4-bit weights in the trainable layout on CPU.

    bitsandbytes 0.50 repacks a Linear4bit's weight for its AVX512-BF16 CPU kernel the first time
    it runs in eval mode without grad (our base / val evaluations) and never unpacks it; training
    then goes through `gemv_4bit`, which has no autograd kernel, so gradients stop flowing through
    the frozen base layers (some LoRA grads become None). tests/unit/test_trainer.py checks the
    QLoRA gradients against a dequantized-base LoRA model after an eval.
    """
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
