"""Training start-up and process scaling, measured in one run -> reports/train_startup.json.

    make train-startup     # after `dvc repro train`; ~10 min on 2 cores, then reruns the report

Three measurements, same machine, one run (compare the ratios, not the seconds across machines):
- inputs: `train.inputs.split_examples` tokenizing at start-up vs slicing data/formatted/*.tokens.arrow,
  at the CPU default's seeded 320 rows, the whole train split and 27,000 rows (the GPU profile's size;
  the split repeated); the two example lists must be equal.
- launch to first optimizer step of `python stages/train.py` (a fresh process, as `dvc exp run` starts
  it), before and after: "before" is the trainer as it was (no token files, so it tokenizes; no cached base
  validation loss, so it recomputes it), "after" is today's (token files memory-mapped, base loss cached
  by base model and validation data). Two cases: `-S lora.r=32` on the CPU default (SmolLM2-135M, 320
  rows) and 27,000 rows with the tiny random-weight model of the tests (the GPU profile's size on a CPU).
- two processes against one (gloo on CPU, the tiny model, the same global batch): useful tokens/s of
  each. A correctness check that `train.num_processes` runs, not a speed claim: two processes on two
  cores share the cores the one process already used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from supportlm.data.tokens import tokens_path
from supportlm.runtime import cpu_info
from supportlm.tokenizer import load_tokenizer
from supportlm.train.inputs import split_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.model_utils: the tiny random-weight model the tests train
BIG = 27_000
LAUNCH_TIMEOUT_S = 1200


def repeated(src: Path, rows: int, out: Path) -> Path:
    """`src` (JSONL + its .tokens.arrow) repeated to `rows` rows under `out`."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    reps = -(-rows // len(lines))
    out.mkdir(parents=True, exist_ok=True)
    path = out / src.name
    path.write_text("".join((lines * reps)[:rows]), encoding="utf-8")
    table = pa.ipc.open_file(pa.memory_map(str(tokens_path(src)))).read_all()
    big = pa.concat_tables([table] * reps).slice(0, rows)
    with pa.OSFile(str(tokens_path(path)), "wb") as sink, pa.ipc.new_file(sink, big.schema) as writer:
        writer.write_table(big)
    return path


def timed(path: Path, tokenizer: object, rows: int | None) -> dict[str, float]:
    arrow = tokens_path(path)
    t = time.perf_counter()
    mapped, _ = split_examples(path, tokenizer, rows, 42, 512)
    mapped_s = time.perf_counter() - t
    aside = arrow.rename(arrow.with_name("aside.arrow"))
    try:
        t = time.perf_counter()
        tokenized, _ = split_examples(path, tokenizer, rows, 42, 512)
        tokenized_s = time.perf_counter() - t
    finally:
        aside.rename(arrow)
    assert mapped == tokenized, f"{path}: the two paths gave different examples"
    return {"examples": len(mapped), "tokenized_s": round(tokenized_s, 2), "memory_mapped_s": round(mapped_s, 3),
            "ratio": round(tokenized_s / mapped_s, 1)}  # fmt: skip


def project(
    root: Path, model: Path, formatted: Path, params: dict[str, Any], tokens: bool, base_loss: Path | None
) -> Path:
    """A project root for one launch: the model, the formatted splits (with or without their token files),
    params.yaml, and optionally the cached base validation losses."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "base").symlink_to(model.resolve())
    (root / "data" / "formatted").mkdir(parents=True)
    for f in formatted.iterdir():
        if f.suffix == ".jsonl" or (tokens and f.name.endswith(".tokens.arrow")):
            (root / "data" / "formatted" / f.name).symlink_to(f.resolve())
    if base_loss is not None and base_loss.is_dir():
        shutil.copytree(base_loss, root / "models" / "checkpoints" / "base_val_loss")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def train_records(root: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for log in (root / "models" / "checkpoints").glob("*/log.jsonl"):
        out += [
            r
            for r in map(json.loads, log.read_text(encoding="utf-8").splitlines())
            if r.get("type") == "train"
        ]
    return out


def launch(root: Path, steps: int = 1) -> tuple[float, list[dict[str, Any]]]:
    """Start `python stages/train.py` in `root`; seconds until its `steps`-th optimizer step is logged
    (then the process group is killed) and the step records so far."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    err = (root / "stderr.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "stages" / "train.py")], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)  # fmt: skip
    try:
        while time.perf_counter() - t0 < LAUNCH_TIMEOUT_S:
            records = train_records(root)
            if len(records) >= steps:
                return time.perf_counter() - t0, records
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = (root / "stderr.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"train in {root} logged no step {steps} (exit {proc.poll()}):\n{tail}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        err.close()


def first_step(case: str, make: Any) -> dict[str, Any]:
    """Launch to first optimizer step, before (tokenize, recompute base loss) and after (today)."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        before, _ = launch(make(Path(a) / "p", tokens=False, cached=False))
        after, _ = launch(make(Path(b) / "p", tokens=True, cached=True))
    print(f"{case}: launch to first step {before:.1f} s before, {after:.1f} s after", file=sys.stderr)
    return {"before_s": round(before, 1), "after_s": round(after, 1), "speedup": round(before / after, 1)}


def main() -> None:
    from tests.model_utils import tiny_model_dir, tiny_tokenizer, write_formatted

    tokenizer = load_tokenizer(ROOT / "models" / "base")
    formatted = ROOT / "data" / "formatted"
    train = formatted / "train.jsonl"
    n_split = sum(1 for _ in train.open(encoding="utf-8"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["tracking"] = "none"
    report: dict[str, Any] = {"what": __doc__.split("\n")[0], "cpu": cpu_info()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        big = repeated(train, BIG, tmp_dir / "big")
        report["inputs"] = {
            "cpu_default_320_rows": timed(train, tokenizer, 320),
            f"train_split_{n_split}_rows": timed(train, tokenizer, None),
            f"repeated_{BIG}_rows": timed(big, tokenizer, None),
        }

        r32 = params | {"lora": params["lora"] | {"r": 32}}
        base_loss_cache = ROOT / "models" / "checkpoints" / "base_val_loss"

        def cpu_default(root: Path, tokens: bool, cached: bool) -> Path:
            return project(
                root, ROOT / "models" / "base", formatted, r32, tokens, base_loss_cache if cached else None
            )

        # the tiny model's 27K-row project: its base loss is computed once, so "after" finds it cached
        tiny = tmp_dir / "tiny"
        tiny_model_dir(tiny / "model")
        tiny_data = write_formatted(tiny, tiny_tokenizer(), n_train=BIG, n_val=32)
        tiny_params = params | {"train": params["train"] | {"train_rows": None, "eval_steps": 1000, "save_steps": 1000,
                                                            "max_steps": 12, "baseline_steps": 0}}  # fmt: skip
        warm = project(tmp_dir / "warm", tiny / "model", tiny_data, tiny_params, True, None)
        launch(warm)
        tiny_cache = warm / "models" / "checkpoints" / "base_val_loss"

        def tiny_27k(root: Path, tokens: bool, cached: bool) -> Path:
            return project(
                root, tiny / "model", tiny_data, tiny_params, tokens, tiny_cache if cached else None
            )

        report["launch_to_first_step"] = {
            "cpu_default_lora_r32": first_step("CPU default, lora.r=32", cpu_default),
            f"tiny_model_{BIG}_rows": first_step(f"tiny model, {BIG} rows", tiny_27k),
        }

        # one process vs two on the same global batch: useful tokens/s over steps 3..8 (after warm-up)
        per: dict[str, Any] = {}
        for n in (1, 2):
            p = tiny_params | {"train": tiny_params["train"] | {"num_processes": n, "gradient_accumulation_steps": 4},
                               "lora": tiny_params["lora"] | {"dropout": 0.0}}  # fmt: skip
            root = project(tmp_dir / f"procs{n}", tiny / "model", tiny_data, p, True, tiny_cache)
            _, records = launch(root, steps=8)
            steady = records[2:8]
            tok_s = sum(r["useful_tokens"] for r in steady) / (sum(r["step_ms"] for r in steady) / 1000)
            per[str(n)] = {"useful_tokens_per_s": round(tok_s, 1), "median_step_ms": statistics.median(r["step_ms"] for r in steady),
                           "losses": [r["loss"] for r in records[:8]]}  # fmt: skip
        per["ratio_2_over_1"] = round(per["2"]["useful_tokens_per_s"] / per["1"]["useful_tokens_per_s"], 2)
        per["max_loss_difference"] = max(
            abs(a - b) for a, b in zip(per["1"]["losses"], per["2"]["losses"], strict=True)
        )
        report["processes"] = per
    (ROOT / "reports" / "train_startup.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    print(json.dumps({k: v for k, v in report.items() if k != "cpu"}, indent=2))


if __name__ == "__main__":
    main()
