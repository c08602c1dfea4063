"""The GPU check (supportlm.gpu_check, issue 14) end to end on CPU with its tiny config.

The same code the H200 runs through scripts/gpu_check_device.sh: a random-weight model built from
its config, QLoRA through LoRAFinetuneRecipe, a child process SIGKILLed past a checkpoint and
resumed by another, merge, HFEngine generation of exactly N tokens, bitsandbytes INT8/NF4, the
full-depth step, and gpu_check.json / .md. ~40 s on 2 cores, most of it the two children importing
torch, transformers and peft.
"""

from __future__ import annotations

import json
import math
import random
import signal

import pytest
import torch

from supportlm.errors import ConfigError
from supportlm.gpu_check.check import run_check
from supportlm.gpu_check.cli import parse_args
from supportlm.gpu_check.config import CheckConfig
from supportlm.gpu_check.runner import Run, run_step
from supportlm.gpu_check.synthetic import build_tokenizer, synthetic_messages


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    cfg = CheckConfig.tiny(out_dir=root / "reports", work_dir=root / "work")
    return cfg, run_check(cfg), root / "reports"


def test_every_step_passes_and_the_report_has_the_design_keys(tiny):
    cfg, rep, out = tiny
    assert rep["ok"], {n: s.get("error") for n, s in rep["steps"].items() if not s["ok"]}
    assert list(rep["steps"]) == ["build", "qlora", "resume", "merge", "generate", "bnb", "full_depth"]
    saved = json.loads((out / "gpu_check.json").read_text())
    assert saved["ok"] and saved["failed"] == [] and saved["mode"] == "tiny"
    assert saved["device"].startswith("cpu")  # names the device it ran on
    assert saved["versions"]["torch"] and saved["versions"]["bitsandbytes"]
    # DESIGN.md's contract for reports/gpu/gpu_check.json
    assert {"tokens_per_s", "peak_vram_mb", "steps", "resumed"} <= saved["qlora"].keys()
    assert saved["qlora"]["resumed"] is True and saved["qlora"]["steps"] == cfg.steps
    assert saved["model_shape"]["vocab"] == 512 and saved["model_shape"]["layers_full"] == 4
    assert all({"batch", "ms_per_100_tokens", "tokens_per_s"} <= r.keys() for r in saved["generate"])
    assert all({"name", "ok", "ms_per_100_tokens"} <= r.keys() for r in saved["bnb"])
    md = (out / "gpu_check.md").read_text()
    assert "| resume | yes |" in md and "| full_depth | yes |" in md
    assert "| step | ok | seconds | peak MB | note |\n|---|---|---:|---:|---|" in md  # numbers right-aligned
    assert (out / "logs" / "resume_victim.log").read_text().strip()
    assert not cfg.work_dir.exists()  # the random models and checkpoints are removed


def test_qlora_trains_full_batches_and_the_loss_falls(tiny):
    cfg, rep, _ = tiny
    q = rep["details"]["qlora"]
    assert (q["method"], q["precision"], q["steps"]) == ("qlora", "fp32", cfg.steps)
    assert q["tokens_per_step"] == cfg.batch_size * cfg.seq_len  # every micro-batch is batch x seq_len, no padding
    assert all(math.isfinite(x) for x in q["losses"])
    assert q["losses"][-1] < q["losses"][0]
    assert q["final_val_loss"] < q["base_val_loss"]
    assert q["peak_vram_mb"] is None and q["peak_rss_mb"] > 0


def test_a_sigkilled_run_resumes_to_the_same_weights(tiny):
    cfg, rep, _ = tiny
    r = rep["resume"]
    assert r["victim_rc"] == -signal.SIGKILL
    assert r["checkpoints_at_kill"] == [2] and r["train_lines_logged_at_kill"] == cfg.kill_at
    assert r["resumed_from"] == 2 and r["final_step"] == r["total_steps"] == cfg.steps
    # CPU kernels are deterministic: the resumed run equals the uninterrupted one bit for bit
    assert r["bitwise_equal"] and r["loss_max_abs_diff_after_resume"] == 0.0 and r["lora_b_rel_diff_final"] == 0.0


def test_merge_folds_the_adapter_in_and_generation_gives_exactly_n_tokens(tiny):
    cfg, rep, _ = tiny
    m = rep["merge"]
    assert m["dtype"] == "float32" and "device" not in m  # the CPU merge keeps its supportlm_merge.json keys
    assert m["changed_max"] > 0 and m["max_abs_err"] <= m["tolerance"]
    rows = rep["details"]["generate"]["rows"]
    assert [r["batch"] for r in rows] == list(cfg.gen_batches)
    for r in rows:
        assert r["exact_tokens"] and r["new_tokens"] == cfg.gen_tokens and r["tokens_per_s"] > 0
    full = [r for r in rep["generate"] if r["layers"] == 4]
    assert len(full) == 2 and all(r["exact_tokens"] for r in full)


def test_bitsandbytes_and_torchao_variants_run_or_say_why(tiny):
    _, rep, _ = tiny
    assert [r["name"] for r in rep["bnb"]] == ["bnb_int8", "bnb_nf4", "torchao_int4"]
    if not torch.cuda.is_available():  # the 4-bit GPU format: a recorded skip on CPU, never a crash
        assert "CUDA" in rep["bnb"][2]["skipped"]
    for r in rep["bnb"]:
        assert r["ok"] or r.get("skipped"), r
        if r["ok"]:
            assert r["new_tokens"] == 4 and r["ms_per_100_tokens"] > 0


def test_full_depth_builds_the_deeper_model_and_trains_it(tiny):
    _, rep, _ = tiny
    fd = rep["details"]["full_depth"]
    assert fd["layers"] == 4 and fd["params"] > rep["details"]["build"]["params"]
    assert fd["qlora"]["steps"] == 1 and math.isfinite(fd["qlora"]["losses"][0])


def test_a_failing_step_is_recorded_and_the_others_still_run(tmp_path):
    run = Run(cfg=CheckConfig.tiny(), work=tmp_path, cuda=False, info={})
    run_step(run, "boom", lambda r: {"x": 1 / 0})
    run_step(run, "after", lambda r: {"x": 1})
    run_step(run, "needs_boom", lambda r: {"x": 2}, needs=("boom",))
    run_step(run, "check_failed", lambda r: {"failed": "numbers off"})
    s = run.steps
    assert not s["boom"]["ok"] and s["boom"]["error"].startswith("ZeroDivisionError")
    assert s["after"]["ok"] and run.results["after"] == {"x": 1}
    assert not s["needs_boom"]["ok"] and "needs boom" in s["needs_boom"]["error"]
    assert not s["check_failed"]["ok"] and s["check_failed"]["error"] == "numbers off"


def test_tokenizer_has_the_config_vocab_and_prefix_stable_chat_template():
    tok = build_tokenizer(512)
    assert len(tok) == 512 and tok.eos_token == tok.pad_token == "<|im_end|>"
    msgs = synthetic_messages(random.Random(0), 500, 6, 9)

    def ids(x):
        return list(x["input_ids"]) if hasattr(x, "keys") else list(x)

    full = ids(tok.apply_chat_template(msgs, tokenize=True))
    prompt = ids(tok.apply_chat_template(msgs[:2], tokenize=True, add_generation_prompt=True))
    assert full[: len(prompt)] == prompt  # assistant-only labels rely on this
    assert tok.unk_token_id not in full and len(full) == len(prompt) + 9 + 1  # 9 words + <|im_end|> (\n is no token)


def test_cli_overrides_and_the_cpu_guard():
    cfg, _ = parse_args(["--tiny", "--steps", "3", "--kv-heads", "1"])
    assert (cfg.shape, cfg.steps, cfg.kv_heads, cfg.threads) == ("tiny", 3, 1, 1)
    cfg, _ = parse_args(["--shape", "llama2-7b", "--layers", "2"])
    assert cfg.dims(cfg.layers) | {"arch": "llama"} == {
        "arch": "llama", "hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32, "vocab": 32000, "layers": 2
    }
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            run_check(CheckConfig())
