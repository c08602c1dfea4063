"""Merging a LoRA adapter (torchtune's merge check): merged-model logits == base+adapter logits.

A freshly initialised LoRA has B = 0 (a no-op), so the B matrices get seeded random values first:
the adapter must change the outputs, or the equality below would prove nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import tiny_model_dir

from supportlm.errors import DataError
from supportlm.train.merge import merge, run_merge

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory) -> tuple[Path, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("merge")
    base = tiny_model_dir(root / "base", seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)
    )
    torch.manual_seed(16)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_logits_equal_base_plus_adapter(base_and_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter = base_and_adapter
    info = merge(base, adapter, tmp_path / "merged")
    ids = torch.tensor([[1, 17, 42, 99, 7, 250, 3, 64], [5, 6, 7, 8, 9, 10, 11, 12]])  # (B, T)

    plain = _logits(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), ids)
    with_adapter = _logits(
        PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(adapter)
        ),
        ids,
    )
    merged = _logits(AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32), ids)

    assert merged.shape == with_adapter.shape == (2, 8, plain.shape[-1])
    assert (with_adapter - plain).abs().max() > 1e-2, (
        "the adapter must change the outputs for this test to mean anything"
    )
    torch.testing.assert_close(merged, with_adapter, rtol=1e-5, atol=1e-5)
    assert info["lora_r"] == 4 and info["dtype"] == "float32" and not info["base_dequantized"]


def test_merged_dir_is_complete_and_atomic(base_and_adapter, tmp_path):
    from transformers import AutoTokenizer

    base, adapter = base_and_adapter
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")  # replaced wholesale, not merged into
    merge(base, adapter, out)
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "supportlm_merge.json",
    } <= names
    assert "stale.txt" not in names
    assert not (tmp_path / "merged.tmp").exists() and not (tmp_path / "merged.old").exists()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id
    assert "lora" not in json.dumps(json.loads((out / "config.json").read_text())).lower()  # plain model


def test_bf16_merge_halves_the_weights(base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    fp32 = merge(base, adapter, tmp_path / "fp32")
    bf16 = merge(base, adapter, tmp_path / "bf16", dtype="bfloat16")
    assert bf16["size_bytes"] < 0.55 * fp32["size_bytes"]


def test_missing_adapter_is_a_clear_error(base_and_adapter, tmp_path):
    base, _ = base_and_adapter
    with pytest.raises(DataError, match="adapter_config.json"):
        merge(base, tmp_path / "nope", tmp_path / "out")


def test_run_merge_uses_project_layout(base_and_adapter, tmp_path):
    """The stage runner reads models/base + models/adapter under paths.root."""
    import shutil

    from supportlm.paths import Paths
    from tests.stage_params import project_params

    base, adapter = base_and_adapter
    shutil.copytree(base, tmp_path / "models" / "base")
    shutil.copytree(adapter, tmp_path / "models" / "adapter")
    info = run_merge(project_params(), Paths(root=tmp_path))
    assert (tmp_path / "models" / "merged" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "models" / "merged" / "supportlm_merge.json").read_text())
    assert info["merge_s"] >= 0 and "merge_s" not in saved  # no clock reading inside a cached out
    assert info["parameters"] > 0
