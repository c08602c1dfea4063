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
    """The whole stage on the tiny model, CPU: export, an importance matrix and a calibrated variant, every
    variant scored with paired intervals vs f16, KL-divergence by llama-perplexity, the serving rule's file."""
    from supportlm.bench.inputs import resolve_primary
    from supportlm.config import BenchParams, QuantizeParams
    from supportlm.quantize import select
    from supportlm.quantize.run import quantize_and_compare

    rows = []
    for i, e in enumerate(_examples() * 20):  # 40 rows: 4 scored, the other 36 replies are the KLD's held-out text
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
        imatrix={"types": ["q4_0"], "chunks": 2, "ctx": 64},
        kld={"chunks": 4, "ctx": 64},  # 124 scored tokens: llama-perplexity summarizes from 100
        torch_variants=["bnb_nf4", "torchao_int4"],
        eval_rows=4,
        reference_rows=2,
        max_new_tokens=6,
        speed_prompts=2,
        n_ctx=256,
    )
    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    (gguf_dir / "model-q2_k.gguf").write_bytes(b"stale")  # from earlier params: removed
    res = quantize_and_compare(
        shutil.copytree(tiny_hf, tmp_path / "merged"),
        test,
        gguf_dir,
        tmp_path / "reports",
        p,
        base_model_id="tiny",
        params_hash="x",
        train_path=test,
    )
    names = [v["name"] for v in res["variants"]]
    assert names[:5] == ["fp32", "f16", "q8_0", "q4_k_m", "q4_0-imat"]
    by = {v["name"]: v for v in res["variants"]}
    for v in res["variants"]:
        assert {"name", "format", "size_bytes", "perplexity", "bleu", "rougeL", "tokens_per_s", "rows"} <= set(v)
        assert v["perplexity"] > 1 and v["size_bytes"] > 0
        lo, hi = v["rougeL_delta_ci"]  # paired with f16 on the rows both answered
        assert lo <= v["rougeL_delta_vs_f16_points"] <= hi
        ppl = v["perplexity_ratio_vs_f16"]
        assert ppl["low"] <= ppl["ratio"] <= ppl["high"]
    assert by["fp32"]["rows"] == by["bnb_nf4"]["rows"] == 2 and by["q4_0-imat"]["rows"] == by["f16"]["rows"] == 4
    assert by["f16"]["rougeL_delta_ci"] == [0.0, 0.0]
    assert by["q4_k_m"]["size_bytes"] < by["q8_0"]["size_bytes"] < by["f16"]["size_bytes"] < by["fp32"]["size_bytes"]
    # KL-divergence vs f16 for every other GGUF variant; more bits, less damage
    for name in ("q8_0", "q4_k_m", "q4_0-imat"):
        k = by[name]["kld"]
        assert k["mean_kld"] >= 0 and 0 <= k["same_top_p"] <= 1 and k["ppl_ratio"] > 0
        assert by[name]["kl_divergence"] == k["mean_kld"]
    assert by["q8_0"]["kld"]["mean_kld"] < by["q4_k_m"]["kld"]["mean_kld"]
    assert "kld" not in by["f16"] and "kld" not in by["fp32"]
    assert res["imatrix"]["types"] == ["q4_0"] and by["q4_0-imat"]["imatrix"] is True
    if not torch.cuda.is_available():
        assert any(s["name"] == "torchao_int4" and "CUDA" in s["reason"] for s in res["skipped"])
    # the serving rule: recomputed from the saved rows it gives the same answer; the file is that variant's
    saved = json.loads((tmp_path / "reports" / "quantization.json").read_text())
    served = saved["served"]["name"]
    assert select.choose(saved["variants"], p.rouge_drop_target, p.speed_tie)["variant"] == served
    assert (gguf_dir / "model-served.gguf").read_bytes() == (gguf_dir / f"model-{served}.gguf").read_bytes()
    assert json.loads((gguf_dir / "served.json").read_text())["variant"] == served
    assert resolve_primary(BenchParams(primary="served"), gguf_dir).primary == served
    assert [t["name"] for t in res["targets"]] == [
        f"served ({served}) size reduction vs f16",
        f"served ({served}) ROUGE-L vs f16, 95% interval low end (points)",
    ]
    assert saved["variants"][0]["name"] == "fp32" and "replies" not in saved["variants"][0]
    assert "row_rougeL" not in saved["variants"][0]
    for png in ("size_accuracy_speed.png", "intervals.png"):
        assert (tmp_path / "reports" / "plots" / "quantize" / png).stat().st_size > 10_000
    md = (tmp_path / "reports" / "quantization.md").read_text()
    assert f"## Served: {served}" in md and "Calibrated quantization" in md and "N-gram cache" in md
    # the n-gram cache of the training replies: held-out replies repeat them, so drafts are accepted
    stats = res["lookup_cache"]["stats"]
    assert (gguf_dir / "lookup-static.bin").stat().st_size == res["lookup_cache"]["size_bytes"] > 0
    assert 0 < stats["accepted"] <= stats["drafted"] and stats["acceptance"] == stats["accepted"] / stats["drafted"]
    assert sorted(p.name for p in gguf_dir.iterdir()) == [
        "imatrix.gguf",
        "lookup-static.bin",
        "model-f16.gguf",
        "model-q4_0-imat.gguf",
        "model-q4_k_m.gguf",
        "model-q8_0.gguf",
        "model-served.gguf",
        "served.json",
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
    params["quantize"].update(gguf_types=["q8_0"], torch_variants=[], eval_rows=2, reference_rows=2,
                              max_new_tokens=4, speed_prompts=1)
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
