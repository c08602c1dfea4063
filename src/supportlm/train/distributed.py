"""Several processes training one adapter: accelerate's process group and DDP, and the launcher the stage uses.

Why this shape: the recipe keeps one trajectory whatever the process count. Each optimizer step's
`gradient_accumulation_steps` micro-batches are dealt round-robin to the processes (so
`num_processes` must not exceed it); each process scales its summed loss by world / (supervised
tokens of the whole step), and DDP's gradient mean then equals the one-process gradient. The step loss
and the val sums and token counts are all-reduced; only rank 0 writes checkpoints, logs, MLflow and
reports. The
run is therefore the same run on 1, 2 or 8 processes, up to the order of floating-point sums.

`train.strategy: fsdp` shards the model instead of replicating it (torch's FSDP2 `fully_shard`, each
decoder layer a unit, the rest at the root): the same gradient mean, reduce-scattered. Every forward
pass gathers a layer's weights from all processes, so every process runs the same number of them (the
val batches are padded out with passes whose loss is dropped), and a checkpoint gathers the adapter
weights and optimizer state into whole tensors first (the files are then those of one process).

Launch: `train.num_processes: N` in params.yaml; the train stage then starts itself under
`accelerate launch --multi_gpu --num_processes N` (torchrun underneath: NCCL on GPUs, gloo on a CPU-only
host) and waits. Started by hand under `accelerate launch`, the recipe joins that process group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from supportlm.config import Params
from supportlm.errors import ConfigError
from supportlm.runtime import ChildCrashed, describe_exit


def launched_world_size() -> int:
    """The process count of the group this process was started in (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Dist:
    """This process's place in the group; `accelerator` is None for a single process."""

    accelerator: Any
    rank: int
    world: int
    device: torch.device
    strategy: str = "ddp"

    @classmethod
    def start(cls, num_processes: int, device: torch.device, strategy: str = "ddp") -> Dist:
        """Join the launched group (accelerate picks NCCL or gloo and the device); check it has N processes."""
        world = launched_world_size()
        if world != num_processes:
            raise ConfigError(
                f"train.num_processes={num_processes} but this process was launched in a group of {world}: "
                f"run the train stage (it launches itself), or `accelerate launch --num_processes "
                f"{num_processes}` with the same value"
            )
        if world == 1:
            return cls(None, 0, 1, device)
        from accelerate import Accelerator

        acc = Accelerator(cpu=device.type == "cpu")
        if acc.process_index != 0:  # one voice: the other ranks say only what goes wrong
            logging.getLogger("supportlm").setLevel(logging.WARNING)
        # accelerate names the CPU "cpu:0", which safetensors refuses as a load target
        return cls(acc, acc.process_index, acc.num_processes, device if device.type == "cpu" else acc.device, strategy)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.accelerator is not None and self.strategy == "fsdp"

    def wrap(self, module: torch.nn.Module, layers: list[torch.nn.Module]) -> torch.nn.Module:
        """DDP around `module` (its trainable parameters' gradients are averaged across processes), or
        with fsdp: each of `layers` and then the rest of `module` sharded in place (FSDP2)."""
        if self.accelerator is None:
            return module
        if not self.sharded:
            return self.accelerator.prepare_model(module)
        from torch.distributed.fsdp import fully_shard

        if not layers:
            raise ConfigError("train.strategy=fsdp: the model names no decoder layer class (_no_split_modules) to shard")
        kind = type(layers[0]).__name__
        for layer in layers:
            fully_shard(layer)
        logging.getLogger("supportlm.train").info("fsdp: %d %s and the rest sharded over %d processes", len(layers), kind, self.world)
        return fully_shard(module)

    def no_sync(self, module: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce (reduce-scatter with fsdp) on every micro-batch of a step but the last."""
        if self.accelerator is None:
            return contextlib.nullcontext()
        if self.sharded:
            module.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last else self.accelerator.no_sync(module)

    def shard(self, items: list[Any]) -> list[Any]:
        """This process's share of a step's micro-batches (round-robin)."""
        return items[self.rank :: self.world]

    def passes(self, n_items: int) -> int:
        """Forward passes this process runs over a shared-out list of `n_items`: its share, or with fsdp
        the largest share (each pass is collective, so a process with fewer items runs spare ones)."""
        return -(-n_items // self.world) if self.sharded else len(range(self.rank, n_items, self.world))

    def optimizer_state(self, root: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """fsdp: the optimizer's state as whole tensors keyed by parameter name (every process calls it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(root, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, root: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """fsdp: `optimizer_state`'s whole tensors sharded back into the optimizer (every process calls it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(root, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))

    def load_parameters(self, module: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
        """fsdp: whole tensors copied into `module`'s sharded parameters of the same names (every process)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, strict=False))

    def full_tensors(self, named: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Whole CPU copies of `named` tensors: fsdp shards gathered (every process must call this), others
        as they are."""
        out = {}
        for name, t in named:
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            out[name] = full.detach().cpu()
        return out

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (float64)."""
        if self.accelerator is None:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return [float(x) for x in self.accelerator.reduce(t, reduction="sum")]

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order (any picklable value)."""
        if self.accelerator is None:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group (a rank that exits without it makes torch warn of a leak)."""
        if self.accelerator is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------- the launcher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_EXITCODE = re.compile(r"exitcode\s*:\s*(-?\d+)")
_RANK = re.compile(r"rank\s*:\s*(\d+)")
# a rank's exception line as torchrun prefixes it: "[rank1]: ValueError: ..." (not its traceback lines)
_RANK_ERROR = re.compile(r"^\[rank(\d+)\]: (?!\s|Traceback|\^)(.+)$")


def launch(num_processes: int, params: Params, root: Path) -> dict[str, Any]:
    """Run the train stage in `num_processes` processes under `accelerate launch`; rank 0's report.

    Every rank reads the same params (written to a temp file) and project root. A rank that dies is
    reported with its signal and what it means, as torchrun saw it."""
    with tempfile.TemporaryDirectory(prefix="supportlm-train-") as tmp:
        params_file = Path(tmp) / "params.json"
        params_file.write_text(params.model_dump_json(), encoding="utf-8")
        report_file = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "supportlm.train.rank",
            str(params_file), str(root), str(report_file),
        ]  # fmt: skip
        env = {
            **os.environ,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads(num_processes))),
        }
        tail: deque[str] = deque(maxlen=40)
        rank_errors: dict[str, str] = {}
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
        assert proc.stderr is not None
        for line in proc.stderr:  # shown as it comes; the end and each rank's exception kept for the error
            sys.stderr.write(line)
            tail.append(line)
            if m := _RANK_ERROR.match(line.rstrip()):
                rank_errors[m.group(1)] = m.group(2)
        rc = proc.wait()
        if rc != 0:
            raise launch_error(num_processes, rc, "".join(tail), rank_errors)
        return json.loads(report_file.read_text(encoding="utf-8"))


def _threads(num_processes: int) -> int:
    """Torch threads per process on a CPU host: the cores shared out (GPU ranks need few)."""
    return max(1, (os.cpu_count() or 1) // num_processes)


def launch_error(n: int, rc: int, tail: str, rank_errors: dict[str, str] | None = None) -> Exception:
    """The failed rank's exit as torchrun reports it (a signal keeps its name and meaning), led by the
    exception each rank raised, if any (torchrun's own summary only says "exit 1")."""
    codes = [int(c) for c in _EXITCODE.findall(tail)]
    ranks = _RANK.findall(tail)
    what = f"accelerate launch (train, {n} processes)" + (f", rank {ranks[-1]}" if ranks else "")
    code = next((c for c in reversed(codes) if c != 0), rc)
    if code < 0:
        return ChildCrashed(what, code, tail)
    raised = "".join(f"\n  rank {r}: {e}" for r, e in sorted((rank_errors or {}).items()))
    return ConfigError(
        f"{what} failed: {describe_exit(code)}."
        + (f" Raised:{raised}" if raised else f" Its last lines:\n{tail.strip()}")
    )
