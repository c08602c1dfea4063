"""On a CUDA host the model-heavy stages load in bf16 on the GPU; on CPU they stay fp32 (the device is mocked).

Evaluate (HFEngine.load), the quantize stage's HF reference and merge are the three places a 7B
model is loaded outside training. With CUDA "available", `from_pretrained` must be asked for
bf16 (fp16 on a GPU without bf16) and `device_map="cuda"`; the real load then runs on the CPU
(the recorded kwargs minus the device map), so the rest of the code path executes for real.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import tiny_model_dir


@pytest.fixture
def tiny(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("cuda") / "model")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch says a GPU is there until the model is loaded; from_pretrained records its kwargs and
    loads on the CPU (after that, CUDA is "gone" again: saving must not try to pin host memory)."""
    import transformers

    calls: list[dict] = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        calls.append(dict(kwargs))
        kwargs.pop("device_map", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        return real(cls, path, *args, **kwargs)

    def use(bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
        return calls

    return use


def test_hf_engine_cpu_stays_fp32(tiny):
    from supportlm.inference.engines import HFEngine

    engine = HFEngine.load(tiny)
    assert engine.model.dtype == torch.float32 and engine.model.device.type == "cpu"


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_hf_engine_on_cuda_asks_for_half_precision_on_the_gpu(tiny, fake_cuda, bf16, dtype):
    from supportlm.inference.engines import HFEngine

    calls = fake_cuda(bf16)
    engine = HFEngine.load(tiny)
    assert calls[-1]["dtype"] == dtype and calls[-1]["device_map"] == "cuda"
    assert engine.model.dtype == dtype
    # generation runs in that dtype (batched, left-padded) and produces ids
    prompts = [engine.prompt_ids([{"role": "user", "content": "Where is my order?"}])] * 2
    out = engine.generate_ids(prompts, max_new_tokens=3, batch_size=2, min_new_tokens=3)
    assert [len(g.ids) for g in out] == [3, 3]


def test_quantize_reference_is_bf16_on_cuda_and_fp32_on_cpu(tiny, fake_cuda):
    from supportlm.quantize.run import reference_model

    model, name = reference_model(tiny)
    assert name == "fp32" and model.dtype == torch.float32
    calls = fake_cuda(True)
    model, name = reference_model(tiny)
    assert name == "bf16" and model.dtype == torch.bfloat16 and calls[-1]["device_map"] == "cuda"


def test_merge_on_cuda_loads_the_base_in_bf16_on_the_gpu(tmp_path, fake_cuda):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from supportlm.train.merge import merge

    base = tiny_model_dir(tmp_path / "base")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    calls = fake_cuda(True)
    info = merge(base, tmp_path / "adapter", tmp_path / "merged", dtype="bfloat16", device="auto")
    assert calls[0]["dtype"] == torch.bfloat16 and calls[0]["device_map"] == "cuda"  # never fp32 first
    assert info["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_torchao_int4_skips_on_cpu_and_old_gpus_and_asks_for_tinygemm_on_ampere(tiny, monkeypatch):
    """The 4-bit GPU variant (GPTQ's replacement): a Skip with the reason on CPU and pre-sm80 GPUs;
    on sm80+ transformers gets torchao's int4 weight-only config (HQQ scales, tinygemm packing)."""
    import transformers

    from supportlm.quantize import torch_quant

    with pytest.raises(torch_quant.Skip, match="CUDA.*CPU host"):
        torch_quant.load("torchao_int4", tiny)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    with pytest.raises(torch_quant.Skip, match="compute capability >= 8.0; Tesla T4"):
        torch_quant.load("torchao_int4", tiny)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    seen: dict = {}

    def from_pretrained(cls, path, **kwargs):
        seen.update(kwargs, path=path)
        raise RuntimeError("no GPU in this test")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
    with pytest.raises(torch_quant.Skip, match="torchao_int4 failed to load on cuda: RuntimeError"):
        torch_quant.load("torchao_int4", tiny)
    quant = seen["quantization_config"].quant_type
    assert seen["dtype"] == torch.bfloat16 and seen["device_map"] == "cuda"
    assert (quant.group_size, str(quant.int4_packing_format), str(quant.int4_choose_qparams_algorithm)) == (
        128, "tile_packed_to_4d", "hqq")
