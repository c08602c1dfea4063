"""bf16 autocast against fp32 for CPU training, measured in one run -> reports/train_precision.json.

    make train-precision     # after `dvc repro train`; two whole CPU-default runs (~10 min on 2 cores)

`train.precision: bf16` runs the forward and backward passes under torch.autocast(cpu, bfloat16); the LoRA
weights, the optimizer and the loss stay fp32. The same params otherwise (320 seeded rows, 40 steps, the same
validation rows), one run each, back to back on the same machine: useful tokens/s of each (train.json), the
ratio, and the best validation loss of each (the relative difference is the quality cost).

Where the CPU has native bf16 (AVX512_BF16, AMX-BF16) oneDNN runs bf16 matmuls on it; without it bf16 is
emulated and slower than fp32. The report records which kernels oneDNN picked (ONEDNN_VERBOSE, one short
bf16 matmul in a child process) so an AMX fault, like llama.cpp's, would show up here as a crash, not a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from supportlm.runtime import cpu_info, describe_exit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.train_startup import project

RUN_TIMEOUT_S = 3600
PROBE = """
import torch
a = torch.randn(256, 256)
with torch.autocast("cpu", dtype=torch.bfloat16):
    (a @ a).sum().item()
print("capability", torch.backends.cpu.get_cpu_capability())
"""


def onednn_kernels() -> dict[str, Any]:
    """Which oneDNN implementation a bf16 matmul under CPU autocast runs (a child process, so a crash is reported)."""
    env = os.environ | {"ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, check=False)
    lines = [ln.split(",") for ln in proc.stdout.splitlines() if ln.startswith("onednn_verbose")]
    # "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,..." -> brg_matmul:avx512_core_bf16
    impls = sorted({f[6] for f in lines if len(f) > 6 and f[2:4] == ["primitive", "exec"]})
    isa = next((",".join(f[4:]).removeprefix("isa:") for f in lines if len(f) > 4 and f[4].startswith("isa:")), None)
    capability = next((line.split()[1] for line in proc.stdout.splitlines() if line.startswith("capability")), None)
    return {"exit": describe_exit(proc.returncode), "implementations": impls, "isa": isa,
            "torch_cpu_capability": capability, "stderr_tail": proc.stderr[-500:] if proc.returncode else ""}  # fmt: skip


def train_once(tmp: Path, params: dict[str, Any], precision: str) -> dict[str, Any]:
    """`python stages/train.py` to the end in a fresh project; its reports/train.json plus the wall time."""
    p = params | {"train": params["train"] | {"precision": precision, "tracking": "none"}}
    root = project(tmp / precision, ROOT / "models" / "base", ROOT / "data" / "formatted", p, True, None)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py")], cwd=root, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, check=False)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train ({precision}) {describe_exit(proc.returncode)}:\n{proc.stderr[-2000:]}")
    out = json.loads((root / "reports" / "train.json").read_text(encoding="utf-8"))
    keys = ("tokens_per_s", "best_val_loss", "base_val_loss", "best_step", "steps", "train_seconds", "precision",
            "peak_mem_mb")  # fmt: skip
    row = {k: out.get(k) for k in keys} | {"wall_s": round(wall, 1)}
    print(f"{precision}: {row}", file=sys.stderr)
    return row


def main() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    cpu = cpu_info()
    report: dict[str, Any] = {"what": __doc__.split("\n")[0], "cpu": cpu,
                              "native_bf16": any(f in cpu["isa"] for f in ("avx512_bf16", "amx_bf16")),
                              "onednn": onednn_kernels()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        runs = {prec: train_once(Path(tmp), params, prec) for prec in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"], runs["bf16"]
    report["runs"] = runs
    report["speedup"] = round(bf16["tokens_per_s"] / fp32["tokens_per_s"], 3)
    report["val_loss_rel_diff"] = round((bf16["best_val_loss"] - fp32["best_val_loss"]) / fp32["best_val_loss"], 4)
    report["goal"] = {"speedup": ">= 1.5x where the CPU has native bf16", "val_loss": "within 1% of fp32"}
    report["met"] = {"speedup": report["speedup"] >= 1.5 if report["native_bf16"] else None,
                     "val_loss": abs(report["val_loss_rel_diff"]) <= 0.01}  # fmt: skip
    out = ROOT / "reports" / "train_precision.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("speedup", "val_loss_rel_diff", "met")}), file=sys.stderr)


if __name__ == "__main__":
    main()
