"""In-framework quantization of the merged HF model: bitsandbytes LLM.int8 / NF4, torchao INT4.

- bnb_int8: LLM.int8() (Dettmers et al. 2022, https://arxiv.org/abs/2208.07339): int8 weights,
  outlier features kept in fp16. bitsandbytes >= 0.49 has a CPU backend, so it loads on CPU
  too, but there it de-quantizes per matmul: smaller, not faster.
- bnb_nf4: 4-bit NormalFloat with double quantization (QLoRA paper, https://arxiv.org/abs/2305.14314);
  compute dtype fp32 on CPU, bf16 on CUDA. Runs on CPU in bitsandbytes 0.50 (slowly).
- torchao_int4: 4-bit weight-only, group size 128, scales chosen by HQQ (calibration-free), run by
  the tinygemm kernel that ships inside torch itself (`aten._weight_int4pack_mm`, CUDA sm80+), via
  transformers' TorchAoConfig. Why not GPTQ: `gptqmodel` is published only as source that compiles
  CUDA kernels with nvcc, which the runtime image does not have; torchao is a pinned wheel whose
  kernel needs no compiler. On a CPU host it is skipped with the reason recorded in
  reports/quantization.json (`skipped`).

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


def _torchao_int4(model_dir: Path, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, TorchAoConfig

    if device != "cuda":
        raise Skip("torchao_int4 runs on the tinygemm CUDA kernel (compute capability >= 8.0); CPU host")
    if torch.cuda.get_device_capability()[0] < 8:
        raise Skip(f"torchao_int4 needs compute capability >= 8.0; {torch.cuda.get_device_name()} has less")
    if importlib.util.find_spec("torchao") is None:
        raise Skip("torchao is not installed (pip install -e '.[train]')")
    from torchao.quantization import Int4WeightOnlyConfig

    cfg = TorchAoConfig(
        Int4WeightOnlyConfig(
            group_size=128, int4_packing_format="tile_packed_to_4d", int4_choose_qparams_algorithm="hqq"
        )
    )
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.bfloat16, quantization_config=cfg, device_map=device
        )
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a skip, not a crash
        raise Skip(f"torchao_int4 failed to load on {device}: {type(exc).__name__}: {exc}"[:300]) from None


def load(name: str, model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Quantize `model_dir` as variant `name`; (model, {format, device, load_s, size_bytes, ...})."""
    from transformers import AutoModelForCausalLM

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
    elif name == "torchao_int4":
        model = _torchao_int4(model_dir, device)
        fmt = "torchao-int4"
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
