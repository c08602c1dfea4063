"""In-framework quantization of the merged HF model: bitsandbytes LLM.int8 / NF4, GPTQ 4-bit.

- bnb_int8: LLM.int8() (Dettmers et al. 2022, https://arxiv.org/abs/2208.07339): int8 weights,
  outlier features kept in fp16. bitsandbytes >= 0.49 has a CPU backend, so it loads on CPU
  too, but there it de-quantizes per matmul: smaller, not faster.
- bnb_nf4: 4-bit NormalFloat with double quantization (QLoRA paper, https://arxiv.org/abs/2305.14314);
  compute dtype fp32 on CPU, bf16 on CUDA. Runs on CPU in bitsandbytes 0.50 (slowly).
- gptq: 4-bit GPTQ (https://arxiv.org/abs/2210.17323) via transformers' GPTQConfig, calibrated on
  `gptq_calibration_rows` train replies. Needs CUDA and the `gptqmodel` package; on a CPU host
  it is skipped with the reason recorded in reports/quantization.json (`skipped`).

`load(name, model_dir, ...)` returns (model, info) or raises `Skip(reason)`; compare.py scores
the model like every other variant.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class Skip(Exception):
    """The variant cannot run on this host; str(exc) says why (it goes into the report)."""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bnb_config(name: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise Skip("bitsandbytes is not installed (pip install -e '.[train]')")
    if name == "bnb_int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if _cuda() else torch.float32,
    )


def saved_size(model: Any) -> int:
    """Bytes of the model's safetensors when saved (a temp dir; falls back to the RAM footprint)."""
    tmp = Path(tempfile.mkdtemp(prefix="supportlm-size-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        return sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
    except Exception:  # noqa: BLE001 - some quantizers cannot serialize; the footprint is the next best
        return int(model.get_memory_footprint())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(
    name: str,
    model_dir: str | Path,
    calibration_texts: Sequence[str] = (),
    out_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Quantize `model_dir` as variant `name`; (model, {format, device, load_s, size_bytes, ...})."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    device = "cuda" if _cuda() else "cpu"
    t0 = time.perf_counter()
    if name in ("bnb_int8", "bnb_nf4"):
        cfg = _bnb_config(name)
        # bitsandbytes logs "MatMul8bitLt: inputs will be cast ..." on EVERY int8 matmul on CPU
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForCausalLM.from_pretrained(
                    str(model_dir), quantization_config=cfg, device_map=device
                )
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a skip, not a crash
            raise Skip(
                f"bitsandbytes {name} failed to load on {device}: {type(exc).__name__}: {exc}"[:300]
            ) from None
        fmt = "bnb-int8" if name == "bnb_int8" else "bnb-nf4"
    elif name == "gptq":
        if device != "cuda":
            raise Skip("GPTQ needs a CUDA GPU (calibration and the exllama/marlin kernels); CPU host")
        if importlib.util.find_spec("gptqmodel") is None and importlib.util.find_spec("auto_gptq") is None:
            raise Skip("GPTQ needs `gptqmodel` (pip install gptqmodel; or optimum + auto-gptq)")
        from transformers import GPTQConfig

        if not calibration_texts:
            raise Skip("GPTQ needs calibration texts (quantize.gptq_calibration_rows train replies)")
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        cfg = GPTQConfig(
            bits=4, group_size=128, dataset=list(calibration_texts), tokenizer=tok, desc_act=False
        )
        try:  # pragma: no cover - GPU host only
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), quantization_config=cfg, device_map="auto"
            )
        except Exception as exc:  # noqa: BLE001  # pragma: no cover
            raise Skip(f"GPTQ quantization failed: {type(exc).__name__}: {exc}"[:300]) from None
        if out_dir is not None:  # pragma: no cover - keep the GPTQ checkpoint for TGI/vLLM
            model.save_pretrained(out_dir)
            tok.save_pretrained(out_dir)
        fmt = "gptq-4bit"
    else:
        raise Skip(f"unknown torch variant `{name}`")
    load_s = time.perf_counter() - t0
    model.eval()
    return model, {
        "format": fmt,
        "device": device,
        "load_s": round(load_s, 2),
        "size_bytes": saved_size(model),
        "memory_footprint_bytes": int(model.get_memory_footprint()),
    }
