"""HF -> GGUF f16 -> q8_0 with the vendored llama.cpp tools, loaded back by llama-cpp-python.

    pytest tests/integration/test_quantize_gguf.py -m integration

A tiny random Llama (2 layers, hidden 64) with the REAL SmolLM2 tokenizer (models/base, else read
from the bundled GGUF): the converter identifies the pre-tokenizer by hashing the tokenizer's
output, so a made-up BPE would be rejected; the tiny config keeps conversion and scoring to seconds. The first run
builds the llama.cpp tools (~9-18 min on 2 cores, cached in ~/.cache/supportlm afterwards);
skipped only when they cannot be built here (no cmake/compiler, no sdist).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from supportlm.errors import MissingDependencyError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "models" / "base"


@pytest.fixture(scope="module")
def tools():
    from supportlm import llamacpp

    try:
        return {"quantize": llamacpp.tool("llama-quantize"), "converter": llamacpp.converter()}
    except MissingDependencyError as exc:
        pytest.skip(f"llama.cpp tools cannot be built here: {exc}")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("gguf") / "tiny-hf"
    if (BASE / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(BASE))
    else:  # a fresh clone: the same tokenizer straight from the bundled GGUF (seconds, no weights loaded)
        from supportlm.train.base_model import bundled_gguf

        gguf_path = bundled_gguf("bundled:smollm2-135m-instruct")
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _examples():
    from supportlm.evaluate.metrics import Example

    sys_msg = {"role": "system", "content": "You are a helpful, concise customer-support assistant."}
    return [
        Example(
            "a",
            "track_order",
            [sys_msg, {"role": "user", "content": "Where is my order {{Order Number}}?"}],
            "You can track order {{Order Number}} under {{Order Tracking}}.",
        ),
        Example(
            "b",
            "get_refund",
            [sys_msg, {"role": "user", "content": "I want my money back."}],
            "I can help with that refund. Refunds take five business days.",
        ),
    ]


def test_convert_quantize_load_generate(tools, tiny_hf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from supportlm.evaluate import metrics as m
    from supportlm.inference.engines import GGUFEngine
    from supportlm.quantize import compare, gguf
    from supportlm.serve.batch import batch

    f16 = gguf.convert(tiny_hf, tmp_path / "tiny-f16.gguf", "f16")
    q8 = gguf.quantize(f16["path"], tmp_path / "tiny-q8_0.gguf", "q8_0")
    assert q8["via"] == "llama-quantize"
    hf_size = gguf.file_size(tiny_hf)
    assert hf_size > f16["size_bytes"] > q8["size_bytes"]  # fp32 > f16 > q8_0
    # weights halve, then ~halve again; the ~1.8 MB of tokenizer metadata (49K vocab + merges) in every
    # GGUF keeps these tiny-model ratios above the 0.5 / 0.53 a 135M model shows
    assert f16["size_bytes"] < 0.7 * hf_size and q8["size_bytes"] < 0.7 * f16["size_bytes"]

    tok = AutoTokenizer.from_pretrained(str(tiny_hf))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_hf), dtype=torch.float32)
    examples = _examples()
    prompts = [m.prompt_ids(tok, e.prompt) for e in examples]
    hf_nll = m.reply_nll_hf(model, tok, examples)
    for path, tol in ((f16["path"], 0.01), (q8["path"], 0.03)):
        eng = GGUFEngine(path, n_ctx=256, logits_all=True, tokenizer=tok)
        gg_nll = compare.gguf_reply_nll(eng, prompts, [m.reply_ids(tok, e.reference) for e in examples])
        for (a, n_a), (b, n_b) in zip(hf_nll, gg_nll, strict=True):
            assert n_a == n_b
            assert b / n_b == pytest.approx(a / n_a, rel=tol)  # same weights -> same per-token NLL
        gens = eng.generate_ids(prompts, max_new_tokens=8)
        assert all(1 <= g.completion_tokens + (g.finish_reason == "stop") <= 9 for g in gens)
        assert all(g.first_token_s is not None and g.seconds > 0 for g in gens)
        eng.llm.close()

    # the GGUF's own chat template (no HF tokenizer) through the batch CLI path
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": e.id, "messages": e.prompt}) + "\n" for e in examples) + "{oops\n"
    )
    res = batch(src, tmp_path / "out.jsonl", q8["path"], max_new_tokens=5, progress=False)
    assert res["generated"] == 2 and res["error_lines"] == [3]


def test_quantize_stage_on_tiny_model(tools, tiny_hf, tmp_path):
    """The whole stage (export + every variant scored + report) on the tiny model, CPU."""
    from supportlm.config import QuantizeParams
    from supportlm.quantize.run import quantize_and_compare

    rows = []
    for i, e in enumerate(_examples() * 2):
        rows.append(
            {
                "id": f"{e.id}{i}",
                "intent": e.intent,
                "kind": "qa",
                "messages": [*e.prompt, {"role": "assistant", "content": e.reference}],
            }
        )
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = QuantizeParams(
        gguf_types=["q8_0", "q4_k_m"],
        torch_variants=["bnb_nf4", "torchao_int4"],
        eval_rows=4,
        max_new_tokens=6,
        speed_prompts=2,
        n_ctx=256,
    )
    res = quantize_and_compare(
        shutil.copytree(tiny_hf, tmp_path / "merged"),
        test,
        tmp_path / "gguf",
        tmp_path / "reports",
        p,
        base_model_id="tiny",
        params_hash="x",
    )
    names = [v["name"] for v in res["variants"]]
    assert names[:4] == ["fp32", "f16", "q8_0", "q4_k_m"]
    for v in res["variants"]:
        assert {"name", "format", "size_bytes", "perplexity", "bleu", "rougeL", "tokens_per_s"} <= set(v)
        assert v["perplexity"] > 1 and v["size_bytes"] > 0
    by = {v["name"]: v for v in res["variants"]}
    assert (
        by["q4_k_m"]["size_bytes"]
        < by["q8_0"]["size_bytes"]
        < by["f16"]["size_bytes"]
        < by["fp32"]["size_bytes"]
    )
    if not torch.cuda.is_available():
        assert any(s["name"] == "torchao_int4" and "CUDA" in s["reason"] for s in res["skipped"])
    assert [t["name"] for t in res["targets"]] == [
        "q4_k_m size reduction vs f16",
        "q4_k_m ROUGE-L drop vs f16 (points)",
    ]
    saved = json.loads((tmp_path / "reports" / "quantization.json").read_text())
    assert saved["variants"][0]["name"] == "fp32" and "replies" not in saved["variants"][0]
    assert (tmp_path / "reports" / "plots" / "quantize" / "size_accuracy_speed.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == [
        "model-f16.gguf",
        "model-q4_k_m.gguf",
        "model-q8_0.gguf",
    ]


def _standin_that_dies_of_sigill(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text('#!/bin/sh\necho "main: quantizing" >&2\nkill -ILL $$\n')
    exe.chmod(0o755)
    return exe


def test_quantize_stage_reports_a_sigill_with_binary_signal_and_fix(tools, tiny_hf, tmp_path):
    """`python stages/quantize.py` in a project whose configured llama-quantize dies of SIGILL: the stage
    exits non-zero with the binary, the signal, what it means and the fix; no traceback, nothing half-written."""
    import os
    import subprocess
    import sys

    import yaml

    proj = tmp_path / "proj"
    shutil.copytree(tiny_hf, proj / "models" / "merged")
    (proj / "data" / "formatted").mkdir(parents=True)
    rows = [{"id": e.id, "intent": e.intent, "kind": "qa",
             "messages": [*e.prompt, {"role": "assistant", "content": e.reference}]} for e in _examples()]  # fmt: skip
    (proj / "data" / "formatted" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["quantize"].update(gguf_types=["q8_0"], torch_variants=[], eval_rows=2, max_new_tokens=4, speed_prompts=1)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    fake = _standin_that_dies_of_sigill(tmp_path / "bin", "llama-quantize")
    env = dict(os.environ, SUPPORTLM_LLAMA_BIN=str(fake.parent))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "quantize.py")], cwd=proj, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 6, out[-3000:]
    assert f"{fake} (model-f16.gguf -> q8_0) killed by SIGILL" in out
    assert "illegal instruction: the build uses CPU instructions this machine cannot run" in out
    assert "Fix: rebuild for this CPU with `make llama-tools`" in out
    assert "Traceback" not in out
    assert not list((proj / "models" / "gguf").glob("*.tmp"))  # no half-written file left behind
    assert not (proj / "reports" / "quantization.json").exists()
