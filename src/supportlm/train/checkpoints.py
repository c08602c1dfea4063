"""Checkpoint IO: run keys, atomic checkpoint writes and rotation, resume, and the exported adapter.

Layout: `<checkpoints_root>/<run_key>/checkpoint-NNNNNN/` holds adapter_model.safetensors +
adapter_config.json (peft), optimizer.pt, scheduler.pt, scaler.pt (fp16 only), rng.pt (torch, CUDA,
numpy and Python RNG states; rng-rank<N>.pt for each further process), trainer_state.json (`TrainState`) and, written last, `COMPLETE`.
A dir without `COMPLETE` (or a `.tmp-` dir) is an interrupted write: removed, never resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supportlm import chat_template
from supportlm.config import LoraParams, TrainParams
from supportlm.errors import DataError

log = logging.getLogger("supportlm.train")

TRAINER_VERSION = 1  # bump when a code change makes old checkpoints unsafe to resume
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE = "COMPLETE"
# Params that do not change the training trajectory: changing them must not start a new run.
_NOT_IN_RUN_KEY = {"tracking", "baseline_steps", "save_total_limit", "save_steps", "num_processes", "strategy"}


@dataclass
class TrainState:
    """Everything besides tensors that a checkpoint must restore (trainer_state.json)."""

    step: int = 0
    total_steps: int = 0
    best_val_loss: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    finished: bool = False
    useful_tokens: int = 0  # non-pad tokens trained on so far
    pad_tokens: int = 0
    train_seconds: float = 0.0  # time inside optimizer steps (excludes eval, checkpoints, setup)
    elapsed_s: float = 0.0  # wall time of the run so far, eval and checkpoints included
    run_key: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainState:
        d = dict(d)
        d["best_val_loss"] = math.inf if d.get("best_val_loss") is None else d["best_val_loss"]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def run_key(
    train: TrainParams,
    lora: LoraParams,
    data_md5: list[str],
    model_dir: Path,
    device: torch.device,
    precision: str,
) -> str:
    """Hash of what determines the trajectory: params, data, base model, device, code version."""
    params = {k: v for k, v in train.model_dump(mode="json").items() if k not in _NOT_IN_RUN_KEY}
    key = {
        "train": params,
        "lora": lora.model_dump(mode="json"),
        "data": data_md5,
        **_base_identity(model_dir),
        "device": device.type,
        "precision": precision,
        "version": TRAINER_VERSION,
    }
    if train.num_processes > 1:  # only then: one-process runs keep the keys they had before it existed
        key["world_size"] = train.num_processes
        if train.strategy != "ddp":  # its optimizer file is keyed by parameter name, not position
            key["strategy"] = train.strategy
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def base_loss_key(train: TrainParams, val_md5: str, model_dir: Path, device: torch.device, precision: str) -> str:
    """Hash of what the base model's val loss depends on: base weights, val rows and their batching,
    device, precision and (qlora) the 4-bit load; not the adapter or optimizer settings."""
    key = {
        **_base_identity(model_dir),
        "val": [val_md5, train.val_rows, train.seed, train.max_length, train.batch_size],
        "method": train.method,
        "quant": train.quant.model_dump(mode="json") if train.method == "qlora" else None,
        "device": device.type,
        "precision": precision,
        "world_size": train.num_processes,
        "version": TRAINER_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _base_identity(model_dir: Path) -> dict[str, Any]:
    """The base model as both keys see it: its config text and its weight files' names and sizes."""
    return {
        "base_config": (model_dir / "config.json").read_text(encoding="utf-8"),
        "base_weights": sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.safetensors")),
    }


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint dirs, oldest first; tmp and unmarked (interrupted) dirs are removed."""
    good = []
    for d in sorted(run_dir.iterdir()) if run_dir.exists() else []:
        if not d.is_dir():
            continue
        if d.name.startswith(".tmp-") or (
            d.name.startswith(CHECKPOINT_PREFIX) and not (d / COMPLETE).exists()
        ):
            log.warning("removing interrupted checkpoint write %s", d)
            shutil.rmtree(d, ignore_errors=True)
        elif d.name.startswith(CHECKPOINT_PREFIX):
            good.append(d)
    return sorted(good, key=checkpoint_step)


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    elapsed: Callable[[], float],
    rng_states: list[dict[str, Any]] | None = None,
    adapter_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Atomic: write a tmp dir, fsync, COMPLETE marker, rename. `elapsed()` is stored as state.elapsed_s.

    `rng_states`: every rank's RNG state, rank order (default: this process's). `adapter_state` and
    `optimizer_state`: whole tensors gathered from sharded processes (default: read from the objects)."""
    step = state.step
    final = checkpoint_dir(run_dir, step)
    tmp = run_dir / f".tmp-{CHECKPOINT_PREFIX}{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp), state_dict=adapter_state)  # adapter_model.safetensors + adapter_config.json
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        for rank, rng in enumerate(rng_states or [rng_state()]):
            torch.save(rng, tmp / rng_file(rank))
        state.elapsed_s = elapsed()
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json(), indent=2))
        _fsync_tree(tmp)
        with (tmp / COMPLETE).open("w") as fh:  # written last: its presence means every file is on disk
            fh.write(f"{step}\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the last good checkpoint is untouched
        raise
    return final


def rotate(run_dir: Path, keep_last: int, best_step: int) -> None:
    """Remove complete checkpoints except the `keep_last` newest and the best one."""
    ckpts = complete_checkpoints(run_dir)
    keep = set(ckpts[-keep_last:])
    keep |= {c for c in ckpts if checkpoint_step(c) == best_step}
    for c in ckpts:
        if c not in keep:
            shutil.rmtree(c, ignore_errors=True)


@dataclass
class ShardedLoad:
    """How whole tensors from a checkpoint reach a sharded (fsdp) process's parameters and optimizer."""

    parameters: Callable[[dict[str, torch.Tensor]], None]
    optimizer: Callable[[dict[str, Any]], None]


def adapter_names(saved: dict[str, torch.Tensor], trainable: list[str], adapter: str = "default") -> dict[str, torch.Tensor]:
    """An adapter file's tensors under the model's parameter names (peft saves them without `.<adapter>`)."""
    out = {}
    for name in trainable:
        key = name.replace(f".{adapter}", "")
        if key not in saved:
            raise DataError(f"adapter file lacks {key} (the parameter {name}); delete the checkpoint and rerun")
        out[name] = saved[key]
    return out


def load_checkpoint(
    ck: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    rank: int = 0,
    sharded: ShardedLoad | None = None,
) -> TrainState:
    """Restore adapter weights, optimizer, scheduler, scaler and this rank's RNGs from `ck`; its state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(ck / "adapter_model.safetensors"), device=str(device))
    optim_state = torch.load(ck / "optimizer.pt", map_location=device, weights_only=False)
    if sharded is not None:
        sharded.parameters(weights)
        sharded.optimizer(optim_state)
    else:
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=False))
    if scaler is not None and (ck / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(ck / "scaler.pt", weights_only=False))
    rng = torch.load(ck / rng_file(rank), weights_only=False)
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return TrainState.from_json(json.loads((ck / "trainer_state.json").read_text()))


def resume_latest(
    run_dir: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    total_steps: int,
    rank: int = 0,
    sharded: ShardedLoad | None = None,
) -> TrainState | None:
    """Load the newest complete checkpoint of `run_dir` into the training objects; its state (None: none)."""
    ckpts = complete_checkpoints(run_dir)
    if not ckpts:
        return None
    ck = ckpts[-1]
    state = load_checkpoint(ck, model, optimizer, scheduler, scaler, device, rank, sharded)
    log.info(
        "resumed %s at step %d/%d (best val loss %s at step %d, %d bad evals)",
        ck,
        state.step,
        total_steps,
        "n/a" if math.isinf(state.best_val_loss) else f"{state.best_val_loss:.4f}",
        state.best_step,
        state.bad_evals,
    )
    return state


def export_adapter(best: Path, out_dir: Path, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """Checkpoint `best`'s adapter + tokenizer + supportlm_train.json (`meta`) -> out_dir (atomic replace)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(best / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
    # peft keeps target_modules as a set: its JSON order follows the process's string-hash seed, so the
    # same training wrote different bytes run to run. Sorted, the exported adapter is reproducible.
    config = json.loads((best / "adapter_config.json").read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    chat_template.save_tokenizer(tokenizer, tmp)  # no load-time keys: same bytes online or offline
    (tmp / "supportlm_train.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return out_dir


def rng_file(rank: int) -> str:
    """rng.pt for rank 0 (the one-process name), rng-rank<N>.pt for the others."""
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY on dirs
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
