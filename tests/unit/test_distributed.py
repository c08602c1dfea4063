"""Two training processes on the gloo backend (CPU), the tiny Llama: the same run as one process.

The train stage launches itself under `accelerate launch` when `train.num_processes` > 1. Checked here:
the per-step losses of 2 processes equal 1 process's (same global batch, dropout 0) to float-sum
tolerance; only rank 0 writes (one log line per step, one report); a SIGKILL of every process after a
checkpoint resumes to the same adapter as the uninterrupted 2-process run.
"""

from __future__ import annotations

import json
import os
import shutil
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
from supportlm.errors import ConfigError
from supportlm.paths import Paths
from supportlm.runtime import ChildCrashed
from supportlm.train.checkpoints import checkpoint_dir
from supportlm.train.distributed import free_port, launch_error
from supportlm.train.run import run_train

ROOT = Path(__file__).resolve().parents[2]
LORA = LoraParams(
    r=4, alpha=8, dropout=0.0
)  # dropout 0: one and two processes draw different masks otherwise
STEPS = 6


def train_params(**overrides) -> TrainParams:
    base = {
        "seed": 7,
        "max_steps": STEPS,
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "eval_steps": 2,
        "save_steps": 2,
        "save_total_limit": 3,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "train_rows": None,
        "val_rows": None,
        "max_length": 128,
        "tracking": "none",
        "baseline_steps": 0,
    }
    return TrainParams(**(base | overrides))


def params(n: int, strategy: str = "ddp"):
    return parse_params({
        "ingest": {"sources": [{"name": "s", "type": "synthetic"}]},
        "train": train_params(num_processes=n, strategy=strategy).model_dump(mode="json"),
        "lora": LORA.model_dump(mode="json"),
    })  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("dist"))


def copy_project(project: Path, dest: Path) -> Path:
    shutil.copytree(project / "models/base", dest / "models/base")
    shutil.copytree(project / "data", dest / "data")
    return dest


def run_dir(root: Path, report: dict) -> Path:
    return root / "models/checkpoints" / report["run_key"]


def log_records(root: Path, report: dict) -> list[dict]:
    return [json.loads(x) for x in (run_dir(root, report) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_and_two(project, tmp_path_factory):
    """The stage run once in 1 process (in this one) and once in 2 (launched), same project files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    one_root = copy_project(project, tmp_path_factory.mktemp("one"))
    try:
        one = run_train(params(1), Paths(one_root), progress=False)
    finally:
        torch.set_num_threads(before)
    two_root = copy_project(project, tmp_path_factory.mktemp("two"))
    two = run_train(params(2), Paths(two_root), progress=False)
    return (one_root, one), (two_root, two)


@pytest.fixture(scope="module")
def fsdp_two(project, tmp_path_factory):
    """The stage run in 2 processes that shard the model (train.strategy=fsdp)."""
    root = copy_project(project, tmp_path_factory.mktemp("fsdp"))
    return root, run_train(params(2, "fsdp"), Paths(root), progress=False)


def test_two_processes_train_like_one(one_and_two):
    (_, one), (_, two) = one_and_two
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    assert two["steps"] == one["steps"] == STEPS
    l1 = [r["loss"] for r in one["train_curve"]]
    l2 = [r["loss"] for r in two["train_curve"]]
    torch.testing.assert_close(l2, l1, rtol=1e-4, atol=1e-5)  # only the order of float sums differs
    assert l2[-1] < l2[0]
    torch.testing.assert_close(two["base_val_loss"], one["base_val_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["best_val_loss"], one["best_val_loss"], rtol=1e-4, atol=1e-5)
    # token counts are the whole step's, not one rank's share
    r1, r2 = (next(r for r in log_records(*x) if r["type"] == "train") for x in one_and_two)
    assert r2["useful_tokens"] == r1["useful_tokens"] and r2["pad_tokens"] == r1["pad_tokens"]
    assert one["run_key"] != two["run_key"]  # the world size is part of the run key


def test_fsdp_trains_like_one_process(one_and_two, fsdp_two):
    """Sharded across 2 processes: the one-process losses and adapter. The 12 val rows make 3 val
    batches, so one process runs a spare pass (FSDP's gathers are collective) whose loss is dropped."""
    (one_root, one), _ = one_and_two
    root, fsdp = fsdp_two
    assert (fsdp["num_processes"], fsdp["strategy"], fsdp["steps"]) == (2, "fsdp", STEPS)
    torch.testing.assert_close([r["loss"] for r in fsdp["train_curve"]], [r["loss"] for r in one["train_curve"]],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    torch.testing.assert_close(fsdp["base_val_loss"], one["base_val_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fsdp["best_val_loss"], one["best_val_loss"], rtol=1e-4, atol=1e-5)
    a = load_file(str(root / "models/adapter/adapter_model.safetensors"))
    b = load_file(str(one_root / "models/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys()  # whole tensors under peft's names: the file one process writes
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert fsdp["run_key"] not in {one["run_key"], one_and_two[1][1]["run_key"]}
    ck = checkpoint_dir(run_dir(root, fsdp), STEPS)
    optimizer = torch.load(ck / "optimizer.pt", weights_only=False)
    assert all(".lora_" in name for name in optimizer["state"])  # gathered, keyed by parameter name
    assert not [p for p in run_dir(root, fsdp).iterdir() if p.name.startswith(".tmp-")]


def test_only_rank_zero_writes(one_and_two):
    _, (root, two) = one_and_two
    records = log_records(root, two)
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # one writer: no step logged twice
    assert sum(r["type"] == "base" for r in records) == 1
    rd = run_dir(root, two)
    ck = checkpoint_dir(rd, STEPS)
    assert (ck / "rng.pt").exists() and (ck / "rng-rank1.pt").exists()  # every rank's RNG, one writer
    assert not [p for p in rd.iterdir() if p.name.startswith(".tmp-")]
    assert json.loads((root / "reports/train.json").read_text())["num_processes"] == 2
    assert (root / "models/adapter/adapter_model.safetensors").exists()


KILL_AFTER_CHECKPOINT = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from supportlm.config import parse_params
    from supportlm.train.trainer import LoRAFinetuneRecipe

    raw, root = json.loads(sys.argv[1]), Path(sys.argv[2])
    p = parse_params(raw)

    def kill_all(step, path):  # every rank kills itself with SIGKILL once checkpoint 2 is complete
        if step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    r = LoRAFinetuneRecipe(p.train, p.lora, model_dir=root / "models/base", data_dir=root / "data/formatted",
                           checkpoints_root=root / "models/checkpoints", progress=False, on_checkpoint=kill_all)
    r.setup()
    r.train()
    """
)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigkill_of_every_process_resumes_to_the_same_adapter(project, one_and_two, fsdp_two, tmp_path, strategy):
    two_root, two = one_and_two[1] if strategy == "ddp" else fsdp_two
    root = copy_project(project, tmp_path / "p")
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_CHECKPOINT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(script), json.dumps(params(2, strategy).model_dump(mode="json")), str(root)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=180, check=False)
    tail = proc.stderr.decode(errors="replace")[-6000:]
    assert proc.returncode != 0, tail
    err = launch_error(2, proc.returncode, tail)  # what the stage says when a rank dies like this
    assert isinstance(err, ChildCrashed) and err.signal == "SIGKILL", str(err)
    rd = run_dir(root, two)
    assert (checkpoint_dir(rd, 2) / "COMPLETE").exists() and not checkpoint_dir(rd, 4).exists()

    resumed = run_train(params(2, strategy), Paths(root), progress=False)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == STEPS
    assert [r["loss"] for r in resumed["train_curve"]] == [r["loss"] for r in two["train_curve"]]
    a = load_file(str(root / "models/adapter/adapter_model.safetensors"))
    b = load_file(str(two_root / "models/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit on CPU


def test_more_processes_than_micro_batches_is_refused():
    with pytest.raises(
        ValueError, match=r"train.num_processes \(4\) > train.gradient_accumulation_steps \(2\)"
    ):
        train_params(num_processes=4)
    with pytest.raises(ConfigError, match="train.num_processes"):
        parse_params({"ingest": {"sources": [{"name": "s", "type": "synthetic"}]},
                      "train": {"num_processes": 3, "gradient_accumulation_steps": 2}})  # fmt: skip


def test_fsdp_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match=r"multiple of train.num_processes \(2\)"):
        train_params(num_processes=2, strategy="fsdp", gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="strategy=fsdp with train.method=qlora is not supported"):
        train_params(num_processes=2, strategy="fsdp", method="qlora")
    assert train_params(num_processes=2, strategy="fsdp", gradient_accumulation_steps=4).strategy == "fsdp"
