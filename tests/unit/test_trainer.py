"""The LoRA recipe on a tiny random Llama (2 layers, hidden 64, ~400-token BPE): no download, CPU, fp32.

Pinned numbers (torchtune style): EXPECTED_LOSSES are the per-step train losses of the `reference`
fixture (`_params()` + `LORA` below, seed 7, fp32, 1 torch thread), checked by
    .venv/bin/python -m pytest tests/unit/test_trainer.py -k pinned
and produced with torch 2.13.0 (CPU), transformers 5.24, peft 0.21 on x86-64 (AMD EPYC). A change in
these versions, the tiny model/tokenizer (tests/model_utils.py) or the loss/batching code moves them:
recheck the cause, then repin from `losses(r)`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import tiny_project

from supportlm.config import LoraParams, TrainParams, parse_params
from supportlm.errors import ConfigError, DataError, MissingDependencyError
from supportlm.train.trainer import LoRAFinetuneRecipe

# 8 optimizer steps (48 rows / (4 x 2) = 6 steps per epoch: the run crosses an epoch boundary)
EXPECTED_LOSSES = [6.0008616, 5.9744005, 5.9533234, 5.9223419, 5.8902047, 5.9049006, 5.8994379, 5.8478625]
ROOT = Path(__file__).resolve().parents[2]


def _params(**overrides) -> TrainParams:
    base = {
        "seed": 7, "max_steps": 8, "batch_size": 4, "gradient_accumulation_steps": 2, "eval_steps": 2,
        "save_steps": 2, "save_total_limit": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0, "train_rows": None,
        "val_rows": None, "max_length": 128, "tracking": "none", "baseline_steps": 0,
    }
    return TrainParams(**(base | overrides))


LORA = LoraParams(r=4, alpha=8, dropout=0.1)  # dropout > 0: resume must restore the RNG stream


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """1 thread: bit-reproducible matmuls (the pinned losses) and no oversubscription on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project root with models/base (tiny Llama) and data/formatted/{train,val}.jsonl."""
    return tiny_project(tmp_path_factory.mktemp("proj"))


def recipe(project: Path, ckpts: Path, train: TrainParams | None = None, lora: LoraParams = LORA, **kw):
    r = LoRAFinetuneRecipe(
        train or _params(), lora, model_dir=project / "models/base", data_dir=project / "data/formatted",
        checkpoints_root=ckpts, progress=False, **kw,
    )
    r.setup()
    return r


def losses(r: LoRAFinetuneRecipe) -> list[float]:
    return [rec["loss"] for rec in r.read_log() if rec["type"] == "train"]


@pytest.fixture(scope="module")
def reference(project, tmp_path_factory):
    """The uninterrupted run every other test compares against."""
    r = recipe(project, tmp_path_factory.mktemp("ref"))
    result = r.train()
    return r, result


def test_pinned_losses_and_loss_decreases(reference):
    r, result = reference
    got = losses(r)
    assert len(got) == 8 and result.steps == 8
    torch.testing.assert_close(got, EXPECTED_LOSSES, rtol=1e-5, atol=1e-5)
    assert got[-1] < got[0]  # loss decreased
    assert result.best_val_loss < result.base_val_loss
    # every optimizer step logged with the agreed fields
    rec = next(x for x in r.read_log() if x["type"] == "train")
    assert {"step", "loss", "lr", "tokens_per_s", "peak_mem_mb", "grad_norm", "elapsed_s"} <= rec.keys()
    assert [x["step"] for x in r.read_log() if x["type"] == "eval"] == [2, 4, 6, 8]


def test_gradient_checkpointing_does_not_change_the_math(project, reference, tmp_path):
    r = recipe(project, tmp_path / "gc", _params(gradient_checkpointing=True, max_steps=8))
    assert r.model.get_base_model().is_gradient_checkpointing
    r.train()
    torch.testing.assert_close(losses(r), losses(reference[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_other_batching_modes_train(project, reference, tmp_path, mode):
    r = recipe(project, tmp_path / mode, _params(batching=mode, max_steps=2, eval_steps=2))
    result = r.train()
    assert result.steps == 2 and result.best_val_loss < result.base_val_loss
    if mode == "padded":
        assert result.padding_waste > reference[1].padding_waste  # grouped pads less


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from supportlm.config import LoraParams, TrainParams
    from supportlm.train.trainer import LoRAFinetuneRecipe
    train, lora, project, ckpts = json.loads(sys.argv[1])

    def kill(step, path):  # kill -9 right after the first complete checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

    r = LoRAFinetuneRecipe(TrainParams(**train), LoraParams(**lora), model_dir=Path(project) / "models/base",
                           data_dir=Path(project) / "data/formatted", checkpoints_root=Path(ckpts),
                           progress=False, on_checkpoint=kill)
    r.setup()
    r.train()
    """
)


def test_resume_after_sigkill_matches_uninterrupted_run(project, reference, tmp_path):
    ref, ref_result = reference
    ckpts = tmp_path / "ckpts"
    arg = json.dumps([_params().model_dump(mode="json"), LORA.model_dump(mode="json"), str(project), str(ckpts)])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, arg], env=env, capture_output=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    run_dir = next(d for d in ckpts.iterdir() if d.name != "base_val_loss")
    assert (run_dir / "checkpoint-000002" / "COMPLETE").exists()

    r = recipe(project, ckpts)
    assert r.resumed_from == 2
    result = r.train()
    assert result.steps == ref_result.steps == 8
    assert losses(r) == losses(ref)  # bit-identical on CPU: RNG, optimizer, scheduler and data order restored
    assert (result.best_step, result.best_val_loss) == (ref_result.best_step, ref_result.best_val_loss)
    a = load_file(str(Path(result.best_checkpoint) / "adapter_model.safetensors"))
    b = load_file(str(Path(ref_result.best_checkpoint) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_checkpoint_write_is_ignored(project, reference, tmp_path, monkeypatch):
    ref, _ = reference
    ckpts = tmp_path / "ckpts"
    r = recipe(project, ckpts)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):  # the 2nd checkpoint write fails half way (ENOSPC)
        if "000004" in str(f):
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        r.train()
    monkeypatch.undo()
    run_dir = r.run_dir
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["checkpoint-000002"]  # tmp dir cleaned
    # a kill during a write leaves an unmarked dir or a tmp dir: both are ignored and removed
    (run_dir / "checkpoint-000006").mkdir()
    (run_dir / "checkpoint-000006" / "adapter_model.safetensors").write_bytes(b"half a file")
    (run_dir / ".tmp-checkpoint-000004-123").mkdir()
    r2 = recipe(project, ckpts)
    assert r2.resumed_from == 2
    assert not (run_dir / "checkpoint-000006").exists() and not (run_dir / ".tmp-checkpoint-000004-123").exists()
    result = r2.train()
    assert result.steps == 8 and losses(r2) == losses(ref)


def test_early_stopping_keeps_best_step(project, tmp_path):
    # min_delta larger than any possible gain: only the first eval "improves" -> a plateau
    train = _params(eval_steps=1, save_steps=4, save_total_limit=1, early_stopping={"patience": 2, "min_delta": 10.0})
    r = recipe(project, tmp_path / "ckpts", train)
    result = r.train()
    assert result.stopped_early and result.steps == 3 and result.best_step == 1
    kept = sorted(p.name for p in r.run_dir.iterdir() if p.name.startswith("checkpoint-"))
    assert kept == ["checkpoint-000001", "checkpoint-000003"]  # the best survives save_total_limit=1
    out = r.export_adapter(tmp_path / "adapter")
    exported = load_file(str(out / "adapter_model.safetensors"))
    best = load_file(str(r.run_dir / "checkpoint-000001" / "adapter_model.safetensors"))
    last = load_file(str(r.run_dir / "checkpoint-000003" / "adapter_model.safetensors"))
    assert all(torch.equal(exported[k], best[k]) for k in best)
    assert any(not torch.equal(exported[k], last[k]) for k in last)  # the adapter is the best, not the last
    meta = json.loads((out / "supportlm_train.json").read_text())
    assert meta["best_step"] == 1 and meta["stopped_early"] is True
    assert (out / "tokenizer_config.json").exists()


def test_qlora_runs_on_cpu_with_correct_gradients(project, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf

    lora = LoraParams(r=4, alpha=8, dropout=0.0)
    q = recipe(project, tmp_path / "q", _params(method="qlora", max_steps=2, eval_steps=2), lora=lora)
    assert type(q.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    # Reference: plain LoRA on the dequantized 4-bit weights, same adapter values (B made non-zero).
    ref = recipe(project, tmp_path / "l", _params(max_steps=2, eval_steps=2), lora=lora)
    with torch.no_grad():
        ref_mods = dict(ref.model.named_modules())
        for name, mod in q.model.named_modules():
            if type(mod).__name__ == "Linear4bit":
                ref_mods[name].weight.copy_(bnbf.dequantize_4bit(mod.weight.data, mod.weight.quant_state))
        ref_params = dict(ref.model.named_parameters())
        for name, t in q.model.named_parameters():
            if t.requires_grad:
                if "lora_B" in name:
                    t.normal_(0, 0.1)
                ref_params[name].copy_(t)

    def grads(r):
        r.evaluate(adapter=False)  # an eval first: bitsandbytes' CPU repacking must not break backward
        r.model.train()
        batch = r.stream[0]
        (r.loss_step(batch) / batch.n_supervised).backward()
        out = {n: t.grad for n, t in r.model.named_parameters() if t.requires_grad}
        r.model.zero_grad(set_to_none=True)
        return out

    gq, gref = grads(q), grads(ref)
    assert all(g is not None for g in gq.values())
    for name in gref:
        torch.testing.assert_close(gq[name], gref[name], rtol=1e-4, atol=1e-6)

    result = q.train()
    got = losses(q)
    assert len(got) == 2 and all(math.isfinite(x) for x in got)
    assert result.method == "qlora" and math.isfinite(result.best_val_loss)


def test_bad_target_module_names_it(project, tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.target_modules: `qproj` not found") as exc:
        recipe(project, tmp_path, lora=LoraParams(target_modules=["q_proj", "qproj"]))
    assert "'q_proj'" in str(exc.value) and "'down_proj'" in str(exc.value)  # lists what exists


@pytest.mark.parametrize(
    ("config_cls", "expected"),
    [
        ("LlamaConfig", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("MistralConfig", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("GemmaConfig", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("PhiConfig", ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]),
        ("GPT2Config", ["c_attn", "c_proj", "c_fc"]),
    ],
)
def test_auto_target_modules_per_architecture(config_cls, expected):
    import transformers
    from transformers import AutoModelForCausalLM

    from supportlm.train.lora_model import resolve_target_modules

    small = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "n_embd": 32, "n_layer": 1,
             "n_head": 2}
    cfg_cls = getattr(transformers, config_cls)
    cfg = cfg_cls(**{k: v for k, v in small.items() if k in cfg_cls().to_dict() or k == "head_dim"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert resolve_target_modules(model, LoraParams()) == expected


def test_missing_split_file_says_how_to_make_it(project, tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl: not found; run `dvc repro format`"):
        LoRAFinetuneRecipe(
            _params(), LORA, model_dir=project / "models/base", data_dir=tmp_path, checkpoints_root=tmp_path
        )


def test_batch_too_big_for_memory_fails_before_training(project, tmp_path, monkeypatch):
    import psutil

    class Tiny:
        available = 2**20  # 1 MiB free

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(ConfigError, match=r"train\.batch_size=4 .*gradient_checkpointing=true"):
        recipe(project, tmp_path, _params(batching="padded"))


def test_config_change_never_resumes_stale_run(project, reference, tmp_path):
    ref, _ = reference
    r = recipe(project, ref.checkpoints_root, lora=LoraParams(r=8, alpha=16))
    assert r.run_key != ref.run_key and r.resumed_from is None


def test_batching_param_replaces_packing():
    with pytest.raises(ConfigError, match="train.packing"):
        parse_params({"ingest": {"sources": [{"name": "s", "type": "synthetic"}]}, "train": {"packing": True}})


def test_wandb_missing_is_a_clear_error(tmp_path):
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb installed")
    except ImportError:
        pass
    from supportlm.train.tracking import make_tracker

    with pytest.raises(MissingDependencyError, match="train.tracking=wandb"):
        make_tracker("wandb", tmp_path, "x")


def test_stage_writes_adapter_report_plot_and_mlflow_run(project, tmp_path):
    """run_train end to end on the tiny model with MLflow in a tmp project (sqlite + mlruns inside it)."""
    import shutil

    from mlflow.tracking import MlflowClient

    from supportlm.paths import Paths
    from supportlm.train.run import run_train

    root = tmp_path / "p"
    shutil.copytree(project / "models/base", root / "models/base")
    shutil.copytree(project / "data", root / "data")
    params = parse_params(
        {
            "ingest": {"sources": [{"name": "s", "type": "synthetic"}]},
            "train": _params(max_steps=4, tracking="mlflow", baseline_steps=1).model_dump(mode="json"),
            "lora": LORA.model_dump(mode="json"),
        }
    )
    report = run_train(params, Paths(root), progress=False)
    for key in ("base_val_loss", "best_val_loss", "best_step", "tokens_per_s", "baseline_tokens_per_s",
                "peak_mem_mb", "mlflow_run_id", "device", "val_curve", "train_curve", "precision", "method",
                "stopped_early", "steps", "train_seconds", "speedup_vs_baseline", "params_hash"):
        assert key in report
    assert json.loads((root / "reports/train.json").read_text())["mlflow_run_id"] == report["mlflow_run_id"]
    assert report["precision"] == "fp32" and report["steps"] == 4 and len(report["train_curve"]) == 4
    assert report["padding_waste"] < report["baseline_padding_waste"]
    assert (root / "reports/plots/train/loss.png").stat().st_size > 10_000
    assert "| best val loss (step) |" in (root / "reports/train.md").read_text()
    assert [t["met"] for t in report["targets"]][1] is True  # val loss below base
    assert (root / "models/adapter/adapter_model.safetensors").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["lora.r"] == "4" and run.data.params["train.learning_rate"] == "0.01"
    assert "system.torch" in run.data.params and "data.train_md5" in run.data.params
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [2, 4]
    assert run.data.metrics["best_val_loss"] == pytest.approx(report["best_val_loss"])
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "adapter")]
    assert "adapter/adapter_model.safetensors" in artifacts
    versions = client.search_model_versions("name='supportlm-adapter'")
    assert [v.run_id for v in versions] == [run.info.run_id]


def test_exported_adapter_config_does_not_depend_on_the_hash_seed(tmp_path):
    """peft writes target_modules (a set) in hash-seed order; the exported adapter sorts it, so two runs
    of the same training give the same bytes."""
    from supportlm.train.checkpoints import export_adapter

    best = tmp_path / "checkpoint-000001"
    best.mkdir()
    (best / "adapter_model.safetensors").write_bytes(b"weights")
    outs = []
    for i, order in enumerate((["v_proj", "q_proj", "o_proj"], ["o_proj", "v_proj", "q_proj"])):
        (best / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": order}), encoding="utf-8")
        out = export_adapter(best, tmp_path / f"adapter{i}", _FakeTokenizer(), {"best_step": 1})
        outs.append((out / "adapter_config.json").read_bytes())
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["target_modules"] == ["o_proj", "q_proj", "v_proj"]


class _FakeTokenizer:
    chat_template = None

    def save_pretrained(self, path: str) -> None:
        (Path(path) / "tokenizer_config.json").write_text("{}", encoding="utf-8")


def test_base_val_loss_is_reused_across_lora_settings(project, reference, tmp_path):
    """The base model's val loss depends on the base and the val rows only: `-S lora.r=32` reuses it."""
    ckpts = tmp_path / "ckpts"
    first = recipe(project, ckpts)
    base = first.measure_base()
    assert base == reference[1].base_val_loss
    other = recipe(project, ckpts, lora=LoraParams(r=8, alpha=16, dropout=0.1))
    assert other.run_key != first.run_key  # a different run ...

    def no_eval(adapter=True):
        raise AssertionError("the base loss was recomputed")

    other.evaluate = no_eval
    assert other.measure_base() == base  # ... with the same cached base loss
    changed = recipe(project, ckpts, _params(max_length=96))  # the val rows change: measured again
    assert changed.measure_base() != base
