"""LoRA / QLoRA fine-tuning recipe: a plain torch loop over a peft model (torchtune's recipe shape).

    recipe = LoRAFinetuneRecipe(params.train, params.lora, model_dir=..., data_dir=..., checkpoints_root=...)
    recipe.setup()            # setup_data -> memory check -> setup_model -> setup_optimizer -> resume
    result = recipe.train()   # loss_step per micro-batch, eval / checkpoint / early stop per step
    recipe.export_adapter(Path("models/adapter"))
    recipe.benchmark_padded(params.train.baseline_steps)
    recipe.cleanup()

Why a hand-written loop rather than HF Trainer / TRL: resume, early stopping and the logged numbers
have to be exact and testable (tests/unit/test_trainer.py pins the losses and checks that a run
killed with SIGKILL and resumed reproduces the uninterrupted run bit for bit on CPU). Every piece of
state is explicit here: adapter weights, AdamW moments, scheduler, grad scaler, RNG states, step,
best-so-far and the early-stopping counter; the data order is a pure function of (seed, epoch), so
the position in the data is just `step x gradient_accumulation_steps`.

Features (params.yaml `train:` and `lora:`):

- `train.method`: `lora` trains low-rank adapters on a frozen base in the train precision;
  `qlora` loads the base in 4-bit (bitsandbytes, `train.quant`: nf4, double quant, compute dtype)
  via `prepare_model_for_kbit_training`: ~4x less base-weight memory (a 7B base fits in ~5 GB), but
  every matmul dequantizes, so it is slower, and on CPU much slower. The adapter is the same format;
  `base_val_loss` is then the 4-bit base's. (On CPU, bitsandbytes' inference-only weight repacking is
  switched off: it silently breaks backward, see `_disable_bnb_cpu_inference_packing`.)
- `lora.r` / `lora.alpha` / `lora.dropout`: capacity vs memory (r=16 on SmolLM2-135M: 4.9M trainable
  params, 3.5%). `lora.target_modules: auto` = every attention + MLP projection of the architecture
  (llama/mistral/gemma/qwen: q,k,v,o,gate,up,down; phi, phi3, gpt2, falcon have their own names;
  unknown architectures: every linear layer but the LM head).
- `train.batching`: grouped (default; length-grouped dynamic padding), packed (max_length rows,
  block-diagonal attention from position_ids) or padded (naive). See train/batching.py. Measured on
  SmolLM2-135M, r=16, fp32, batch 4, 1 CPU thread (CPU-time throughput, formatted synthetic split):
  grouped ~103 useful tok/s (2% padding), packed ~91, padded ~39 (65% padding): grouped = ~2.6x.
- Total batch = batch_size x gradient_accumulation_steps rows; the loss is the mean over every
  supervised (assistant) token of the whole accumulated batch, not a mean of micro-batch means. The
  LM head runs only on supervised positions (see `loss_step`).
- Memory (same setup, peak RSS): ~7 GB for grouped 4-row batches, ~10.7 GB for the padded 4 x 512
  baseline; activations dominate (the model is 0.54 GB), so batch_size x length is the lever.
- `train.gradient_checkpointing`: recompute activations during backward: activation memory drops
  from ~L layers' worth to ~1, at ~30% more compute per step.
- `train.precision: auto`: bf16 on CUDA GPUs that support it, fp16 (+ dynamic loss scaling) on older
  GPUs, fp32 on CPU (bf16 on CPU is allowed but usually slower). The resolved value is recorded.
- `train.lr_scheduler` cosine / linear / constant / constant_with_warmup, `warmup_ratio` of the
  total steps; `train.max_steps` > 0 overrides `train.epochs`; `train.max_grad_norm` clips.
- Eval every `train.eval_steps` (and at the last step) on the same seeded `train.val_rows` subset
  used for `base_val_loss` (the adapter disabled, before training). A new best val loss is always
  checkpointed; otherwise every `train.save_steps`; `train.save_total_limit` newest + the best are kept.
- Early stopping: `train.early_stopping.patience` evaluations without beating the best val loss by
  more than `min_delta` stop the run; the exported adapter is the best step, not the last.
- Resume: checkpoints live in `<checkpoints_root>/<run_key>/` where run_key hashes the train + lora
  params that change the trajectory, the data files, the base model config and the device/precision.
  A rerun continues from the newest complete checkpoint; a changed config starts a fresh run dir.
  Writes are atomic (tmp dir, fsync, `COMPLETE` marker, rename); tmp or unmarked dirs are removed.
- Logs: one JSONL line per optimizer step (step, loss, lr, tokens_per_s of useful tokens, peak_mem_mb
  = peak CUDA allocation or peak RSS, grad_norm, elapsed_s) and per eval (val_loss) in
  `<run dir>/log.jsonl`; a tqdm bar on a terminal; a log line every few steps
  ("step 120/400: loss 1.8342, lr 1.9e-04, grad norm 0.412, 412 ms, 3,210 tok/s").
- After training, `benchmark_padded` runs `train.baseline_steps` steps of the naive padded batching
  (same rows, batch size, accumulation; lr 0 so the weights do not move) for the speedup figure.

Raises:

- DataError: `data/formatted/{train,val}.jsonl` missing (run `dvc repro format`), empty, or not JSONL;
  no row with an assistant token left after `train.max_length` truncation.
- ConfigError: `lora.target_modules` names a module the model does not have (the message lists the
  available names); `train.precision=fp16` or `bf16` unavailable on this device; a batch estimated
  not to fit in memory (`train.batch_size` x `train.max_length`; lower them, or set
  `train.gradient_checkpointing=true` / `train.method=qlora`); CUDA out of memory during a step (same
  advice).
- MissingDependencyError: `train.method=qlora` without bitsandbytes installed.
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
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supportlm import chat_template
from supportlm.config import LoraParams, TrainParams
from supportlm.errors import ConfigError, DataError, MissingDependencyError
from supportlm.lineage import file_md5, peak_rss_mb
from supportlm.train.batching import (
    IGNORE_INDEX,
    Batch,
    BatchStream,
    fixed_batches,
    steps_for,
    tokenize_rows,
)

log = logging.getLogger("supportlm.train")

TRAINER_VERSION = 1  # bump when a code change makes old checkpoints unsafe to resume
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE = "COMPLETE"

# Projection names per architecture (`config.model_type`) for lora.target_modules=auto.
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
AUTO_TARGETS: dict[str, list[str]] = {
    **{
        t: _LLAMA_LIKE
        for t in ("llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3", "olmo2")
    },
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
# Params that do not change the training trajectory: changing them must not start a new run.
_NOT_IN_RUN_KEY = {"tracking", "baseline_steps", "save_total_limit", "save_steps"}


# ---------------------------------------------------------------- small helpers


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataError(f"{path}: not found; run `dvc repro format` (or `supportlm format`) first")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                raise DataError(f"{path}:{n}: a formatted row needs a `messages` list; rerun `dvc repro format`")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows; check the split/format stages (reports/format.json)")
    return rows


def seeded_subset(rows: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """n rows sampled with a fixed seed, kept in file order (None or n >= len = all rows)."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(f"supportlm-subset-{seed}").sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def resolve_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 (CUDA with bf16), fp16 (older CUDA), fp32 (CPU). Explicit values are checked."""
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU (fp16 autocast + loss scaling); use fp32 or auto on CPU")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.precision=bf16: {torch.cuda.get_device_name()} has no bf16 support; use fp16 or auto"
        )
    return precision


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size since the last reset (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return peak_rss_mb()


def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak counter so a phase reports its own peak (Linux: clear_refs 5 resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _console_logger() -> logging.Logger:
    """The logger whose handler prints our lines (tqdm redirects that one, so nothing is doubled)."""
    logger: logging.Logger | None = log
    while logger is not None:
        if logger.handlers:
            return logger
        logger = logger.parent if logger.propagate else None
    return logging.getLogger()


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


def _disable_bnb_cpu_inference_packing(model: torch.nn.Module) -> None:
    """Keep bitsandbytes 4-bit weights in the trainable layout on CPU.

    bitsandbytes 0.50 repacks a Linear4bit's weight for its AVX512-BF16 CPU kernel the first time
    it runs in eval mode without grad (our base / val evaluations) and never unpacks it; training
    then goes through `gemv_4bit`, which has no autograd kernel, so gradients stop flowing through
    the frozen base layers (some LoRA grads become None). tests/unit/test_trainer.py checks the
    QLoRA gradients against a dequantized-base LoRA model after an eval.
    """
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names (`q_proj`) of every linear-like module: what lora.target_modules may name."""
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_target_modules(model: torch.nn.Module, lora: LoraParams) -> list[str]:
    """`auto` -> the architecture's projections; explicit names are checked (ConfigError lists the valid ones)."""
    available = linear_module_names(model)
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    if lora.target_modules == "auto":
        wanted = [n for n in AUTO_TARGETS.get(model_type, []) if n in available]
        if not wanted:  # unknown architecture: every linear layer except the output head
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            heads = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head and head is not None}
            wanted = [n for n in available if n not in heads | {"lm_head"}]
        return wanted
    bad = [n for n in lora.target_modules if n not in available]
    if bad:
        raise ConfigError(
            f"lora.target_modules: {', '.join(f'`{b}`' for b in bad)} not found in this {model_type} model "
            f"({type(model).__name__}). Available linear modules: {available}. Or use `auto`."
        )
    return list(lora.target_modules)


def estimate_step_bytes(config: Any, batch_size: int, seq_len: int, precision: str, checkpointing: bool) -> int:
    """Rough estimate of the memory one micro-batch needs (activations kept for backward + logits).

    A transformer layer keeps ~34 x hidden 16-bit values per token for backward (Korthikanti et al.
    2022, https://arxiv.org/abs/2205.05198, table 2); LoRA adds a dropout copy of each adapted
    input. Calibrated on SmolLM2-135M, LoRA r=16 on every projection, fp32, CPU: the padded 4 x 512
    baseline peaked at ~4.6 MB per token over the weights = ~(48 x hidden + 6 x intermediate) values
    per token and layer. Gradient checkpointing keeps each layer's input plus one layer's full set.
    The logits (tokens x vocab) are held ~3 times (fp32 logits, log-softmax, gradient).
    """
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1024)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 24)
    vocab = getattr(config, "vocab_size", 32000)
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    per_value = 2 if precision in ("bf16", "fp16") else 4
    tokens = batch_size * seq_len
    per_layer = tokens * (48 * hidden + 6 * inter) * per_value
    acts = tokens * hidden * per_value * layers + per_layer if checkpointing else per_layer * layers
    logits = tokens * vocab * 4 * 3
    return int(acts + logits)


def param_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) or sum(
        p.stat().st_size for p in Path(model_dir).glob("*.bin")
    )


# ---------------------------------------------------------------- state


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


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    best_step: int
    best_val_loss: float
    base_val_loss: float
    stopped_early: bool
    resumed_from: int | None
    tokens_per_s: float
    padding_waste: float
    peak_mem_mb: float
    train_seconds: float
    precision: str
    device: str
    method: str
    run_dir: str
    best_checkpoint: str
    train_curve: list[dict[str, float]] = field(default_factory=list)
    val_curve: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the recipe


class LoRAFinetuneRecipe:
    """LoRA / QLoRA on a causal LM with assistant-only loss. See the module docstring for every knob.

    Args:
        train: the `train:` params block.
        lora: the `lora:` params block.
        model_dir: HF base model dir (config, weights, tokenizer with a chat template).
        data_dir: dir holding the formatted `train.jsonl` and `val.jsonl`.
        checkpoints_root: parent of the per-run checkpoint dirs (`<root>/<run_key>/`).
        progress: show a tqdm bar.
        on_log: called with every JSONL record (train step, eval, base) as it is written.
        on_checkpoint: called with (step, path) after a checkpoint is complete (tests use it to kill).
    """

    def __init__(
        self,
        train: TrainParams,
        lora: LoraParams,
        *,
        model_dir: Path,
        data_dir: Path,
        checkpoints_root: Path,
        progress: bool = True,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
    ) -> None:
        self.p, self.lora = train, lora
        self.model_dir, self.data_dir = Path(model_dir), Path(data_dir)
        self.checkpoints_root = Path(checkpoints_root)
        self.progress, self.on_log, self.on_checkpoint = progress, on_log, on_checkpoint
        if not (self.model_dir / "config.json").exists():
            raise DataError(f"{self.model_dir}: no config.json; run `dvc repro base_model` first")
        self.train_file, self.val_file = self.data_dir / "train.jsonl", self.data_dir / "val.jsonl"
        for f in (self.train_file, self.val_file):
            if not f.exists():
                raise DataError(f"{f}: not found; run `dvc repro format` (or `supportlm format`) first")
        self.device = resolve_device()
        self.precision = resolve_precision(train.precision, self.device)
        self.dtype = DTYPES[self.precision]
        self.resumed_from: int | None = None
        self.state = TrainState()
        self.base_val_loss = math.nan
        self._t0 = time.perf_counter()
        self.scaler: torch.amp.GradScaler | None = None
        self._head: tuple[torch.nn.Module, torch.nn.Module] | None = None  # set by setup_model
        self.baseline_fits = True  # set by check_memory

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        """setup_data -> run dir -> memory check -> setup_model -> setup_optimizer -> resume."""
        from transformers import AutoConfig

        from supportlm.tokenizer import load_tokenizer

        self.model_config = AutoConfig.from_pretrained(str(self.model_dir))
        self.tokenizer = load_tokenizer(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.setup_data()
        self.run_key = self.compute_run_key()
        self.run_dir = self.checkpoints_root / self.run_key
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / "log.jsonl"
        self.check_memory()
        self.setup_model()
        self.setup_optimizer()
        self.resume()

    def setup_data(self) -> None:
        """Read + subset the splits, tokenize with assistant-only labels, build the batch stream."""
        p = self.p
        train_rows = seeded_subset(read_jsonl_rows(self.train_file), p.train_rows, p.seed)
        val_rows = seeded_subset(read_jsonl_rows(self.val_file), p.val_rows, p.seed)
        self.train_examples, train_stats = tokenize_rows(train_rows, self.tokenizer, p.max_length)
        self.val_examples, val_stats = tokenize_rows(val_rows, self.tokenizer, p.max_length)
        for ex, f in ((self.train_examples, self.train_file), (self.val_examples, self.val_file)):
            if not ex:
                raise DataError(
                    f"{f}: no row keeps an assistant token within train.max_length={p.max_length}; "
                    "raise train.max_length or check the format stage"
                )
        pad = self.tokenizer.pad_token_id
        self.stream = BatchStream(self.train_examples, p.batching, p.batch_size, p.max_length, pad, p.seed)
        self.val_batches = fixed_batches(self.val_examples, p.batch_size * 2, pad, p.max_length)
        self.batches_per_epoch = self.stream.batches_per_epoch
        self.total_steps = steps_for(self.batches_per_epoch, p.gradient_accumulation_steps, p.epochs, p.max_steps)
        self.data_info = {
            "train_file": str(self.train_file),
            "val_file": str(self.val_file),
            "train_md5": file_md5(self.train_file),
            "val_md5": file_md5(self.val_file),
            "train": train_stats,
            "val": val_stats,
            "train_tokens": sum(len(e) for e in self.train_examples),
            "train_supervised_tokens": sum(e.n_supervised for e in self.train_examples),
            "val_supervised_tokens": sum(e.n_supervised for e in self.val_examples),
            "micro_batches_per_epoch": self.batches_per_epoch,
        }
        log.info(
            "data: %s train rows (%s tokens, %s supervised), %s val rows; %s micro-batches/epoch, "
            "%s optimizer steps (batch %d x accumulation %d = %d rows/step, %s batching)",
            f"{len(self.train_examples):,}", f"{self.data_info['train_tokens']:,}",
            f"{self.data_info['train_supervised_tokens']:,}", f"{len(self.val_examples):,}",
            f"{self.batches_per_epoch:,}", f"{self.total_steps:,}", p.batch_size,
            p.gradient_accumulation_steps, p.batch_size * p.gradient_accumulation_steps, p.batching,
        )

    def compute_run_key(self) -> str:
        """Hash of what determines the trajectory: params, data, base model, device, code version."""
        train = {k: v for k, v in self.p.model_dump(mode="json").items() if k not in _NOT_IN_RUN_KEY}
        weights = sorted((p.name, p.stat().st_size) for p in self.model_dir.glob("*.safetensors"))
        key = {
            "train": train,
            "lora": self.lora.model_dump(mode="json"),
            "data": [self.data_info["train_md5"], self.data_info["val_md5"]],
            "base_config": (self.model_dir / "config.json").read_text(encoding="utf-8"),
            "base_weights": weights,
            "device": self.device.type,
            "precision": self.precision,
            "version": TRAINER_VERSION,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def check_memory(self) -> None:
        """Fail before loading weights when the widest micro-batch cannot fit (ConfigError with the fix).

        The padded baseline (widest batches: batch_size x max_length) is only a benchmark: when it
        would not fit, it is skipped with a warning instead of failing the stage.
        """
        p = self.p
        longest = max(len(e) for e in self.train_examples)
        seq = p.max_length if p.batching in ("packed", "padded") else min(longest, p.max_length)
        stored = 4 if str(getattr(self.model_config, "dtype", "float32")).endswith("float32") else 2
        n_params = param_bytes(self.model_dir) / stored
        weights = int(n_params * (0.5 if p.method == "qlora" else DTYPES[self.precision].itemsize))

        def need(width: int) -> int:
            return weights + estimate_step_bytes(
                self.model_config, p.batch_size, width, self.precision, p.gradient_checkpointing
            )

        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info()
            where = f"GPU ({torch.cuda.get_device_name()}, {free / 2**30:.1f} GiB free)"
        else:
            import psutil

            free = psutil.virtual_memory().available
            where = f"RAM ({free / 2**30:.1f} GiB available)"
        log.info(
            "memory estimate: %.2f GiB for a %d x %d micro-batch incl. weights (padded baseline %.2f GiB); %s",
            need(seq) / 2**30, p.batch_size, seq, need(p.max_length) / 2**30, where,
        )
        if need(seq) > 0.9 * free:
            raise ConfigError(
                f"a micro-batch of train.batch_size={p.batch_size} x {seq} tokens needs ~{need(seq) / 2**30:.1f} GiB "
                f"but the {where} cannot hold it: lower train.batch_size (raise train.gradient_accumulation_steps "
                f"to keep the effective batch), lower train.max_length, or set train.gradient_checkpointing=true"
                + ("" if p.method == "qlora" else " / train.method=qlora")
            )
        self.baseline_fits = need(p.max_length) <= 0.9 * free
        if p.baseline_steps and not self.baseline_fits:
            log.warning("padded baseline (%d x %d tokens) would not fit in the %s: it will be skipped",
                        p.batch_size, p.max_length, where)

    def setup_model(self) -> None:
        """Load the base (fp/bf16, or 4-bit for qlora), wrap it with LoRA adapters."""
        # bitsandbytes' CPU backend warns about an optional kernels package on import; not actionable.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        p, lora = self.p, self.lora
        # Validate target modules on a weightless (meta) model: no time wasted loading a 7B base.
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(self.model_config)
        targets = resolve_target_modules(skeleton, lora)
        del skeleton

        kwargs: dict[str, Any] = {"dtype": self.dtype if self.precision != "fp16" else torch.float16}
        if p.method == "qlora":
            kwargs["quantization_config"] = self._bnb_config()
            kwargs["device_map"] = {"": self.device.index or 0} if self.device.type == "cuda" else {"": "cpu"}
        model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), **kwargs)
        if p.method == "lora":
            model.to(self.device)
        model.config.use_cache = False
        if p.method == "qlora":
            _disable_bnb_cpu_inference_packing(model)
        gc_kwargs = {"use_reentrant": False}
        if p.method == "qlora":
            from peft import prepare_model_for_kbit_training

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=p.gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs
                )
        elif p.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(p.seed)  # LoRA A init + dropout stream; a resume restores both from the checkpoint
        with warnings.catch_warnings():  # peft calls transformers' deprecated is_gradient_checkpointing
            warnings.simplefilter("ignore", FutureWarning)
            self.model = get_peft_model(model, config)  # adapters in fp32 (peft autocast_adapter_dtype)
        self.target_modules = targets
        self._head = self._split_head()
        trainable = sum(t.numel() for t in self.model.parameters() if t.requires_grad)
        total = sum(t.numel() for t in self.model.parameters())
        self.trainable_params = trainable
        log.info(
            "model: %s %s, %s on %s (%s), targets %s: %s trainable params of %s (%.2f%%)",
            self.model_config.model_type, p.method, self.precision, self.device.type,
            f"{torch.get_num_threads()} thread(s)" if self.device.type == "cpu" else torch.cuda.get_device_name(),
            ",".join(targets), f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1),
        )

    def _bnb_config(self) -> Any:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "train.method=qlora needs bitsandbytes: pip install -e '.[train]' (or set train.method=lora)"
            ) from None
        from transformers import BitsAndBytesConfig

        q = self.p.quant
        compute = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
            q.compute_dtype, self.dtype
        )
        if self.device.type == "cpu":
            log.warning("train.method=qlora on CPU: bitsandbytes dequantizes every matmul; expect a slow run")
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=compute,
        )

    def setup_optimizer(self) -> None:
        """AdamW over the adapter params + the HF scheduler; a GradScaler for fp16."""
        from transformers import get_scheduler

        p = self.p
        self.trainable = [t for t in self.model.parameters() if t.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=p.learning_rate, weight_decay=p.weight_decay)
        self.warmup_steps = math.ceil(p.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            p.lr_scheduler, self.optimizer, num_warmup_steps=self.warmup_steps, num_training_steps=self.total_steps
        )
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")

    # ------------------------------------------------------------ checkpoints

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint dirs, oldest first; tmp and unmarked (interrupted) dirs are removed."""
        good = []
        for d in sorted(self.run_dir.iterdir()) if self.run_dir.exists() else []:
            if not d.is_dir():
                continue
            if d.name.startswith(".tmp-") or (d.name.startswith(CHECKPOINT_PREFIX) and not (d / COMPLETE).exists()):
                log.warning("removing interrupted checkpoint write %s", d)
                shutil.rmtree(d, ignore_errors=True)
            elif d.name.startswith(CHECKPOINT_PREFIX):
                good.append(d)
        return sorted(good, key=lambda d: int(d.name[len(CHECKPOINT_PREFIX) :]))

    def save_checkpoint(self) -> Path:
        """Atomic: write a tmp dir, fsync, COMPLETE marker, rename; then rotate old checkpoints."""
        step = self.state.step
        final = self.run_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
        tmp = self.run_dir / f".tmp-{CHECKPOINT_PREFIX}{step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            self.model.save_pretrained(str(tmp))  # adapter_model.safetensors + adapter_config.json
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), tmp / "scaler.pt")
            torch.save(self._rng_state(), tmp / "rng.pt")
            self.state.elapsed_s = self._elapsed()
            (tmp / "trainer_state.json").write_text(json.dumps(self.state.to_json(), indent=2))
            _fsync_tree(tmp)
            with (tmp / COMPLETE).open("w") as fh:  # written last: its presence means every file is on disk
                fh.write(f"{step}\n")
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            _fsync_dir(self.run_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the last good checkpoint is untouched
            raise
        self._rotate()
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, final)
        return final

    def _rotate(self) -> None:
        ckpts = self.complete_checkpoints()
        keep = set(ckpts[-self.p.save_total_limit :])
        keep |= {c for c in ckpts if int(c.name[len(CHECKPOINT_PREFIX) :]) == self.state.best_step}
        for c in ckpts:
            if c not in keep:
                shutil.rmtree(c, ignore_errors=True)

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }

    def resume(self) -> None:
        """Load the newest complete checkpoint of this run key, if any; trim the log to it."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        ckpts = self.complete_checkpoints()
        self.state = TrainState(total_steps=self.total_steps, run_key=self.run_key)
        if not ckpts:
            self._trim_log(0)
            return
        ck = ckpts[-1]
        set_peft_model_state_dict(self.model, load_file(str(ck / "adapter_model.safetensors"), device=str(self.device)))
        self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location=self.device, weights_only=False))
        self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=False))
        if self.scaler is not None and (ck / "scaler.pt").exists():
            self.scaler.load_state_dict(torch.load(ck / "scaler.pt", weights_only=False))
        rng = torch.load(ck / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.state = TrainState.from_json(json.loads((ck / "trainer_state.json").read_text()))
        self.resumed_from = self.state.step
        self._t0 = time.perf_counter() - self.state.elapsed_s
        self._trim_log(self.state.step)
        log.info(
            "resumed %s at step %d/%d (best val loss %s at step %d, %d bad evals)",
            ck, self.state.step, self.total_steps,
            "n/a" if math.isinf(self.state.best_val_loss) else f"{self.state.best_val_loss:.4f}",
            self.state.best_step, self.state.bad_evals,
        )

    def _trim_log(self, step: int) -> None:
        """Drop log lines past the resumed step (written by the killed process after its checkpoint)."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if rec.get("type") == "base" or rec.get("step", 0) <= step:
                kept.append(line)
        tmp = self.log_path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.log_path)

    def _write_log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # ------------------------------------------------------------ steps

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def loss_step(self, batch: Batch) -> torch.Tensor:
        """Summed cross-entropy over the batch's supervised tokens (caller divides by the step's count).

        The LM head runs only on positions whose next token is supervised: ~36% of the tokens of a
        support conversation are system/user/pad, and the head (hidden x vocab, 576 x 49,152 for
        SmolLM2) plus the (tokens, vocab) fp32 logits are a large share of a small model's step.
        Falls back to the model's own forward where the causal-LM class post-processes logits.
        """
        inputs = batch.model_inputs(self.device)
        labels = batch.labels.to(self.device)
        targets = labels[:, 1:]  # token t predicts t+1
        with self._autocast():
            if self._head is None:
                logits = self.model(**inputs, use_cache=False).logits[:, :-1]  # (B, T-1, V)
                return torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                    ignore_index=IGNORE_INDEX, reduction="sum",
                )
            backbone, head = self._head
            hidden = backbone(**inputs, use_cache=False).last_hidden_state  # (B, T, H)
            keep = targets != IGNORE_INDEX  # (B, T-1)
            logits = head(hidden[:, :-1][keep])  # (N supervised, V)
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")

    def _split_head(self) -> tuple[torch.nn.Module, torch.nn.Module] | None:
        """(backbone, lm_head) of the peft-wrapped causal LM when its logits are a plain head(hidden)."""
        base = self.model.get_base_model()
        backbone = getattr(base, getattr(base, "base_model_prefix", ""), None)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        cfg = base.config
        post_processed = any(
            getattr(cfg, k, None) not in (None, 1.0)
            for k in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
        )
        if backbone is None or head is None or post_processed:
            log.info("LM head: full logits (model forward post-processes them)")
            return None
        return backbone, head

    @torch.no_grad()
    def evaluate(self, adapter: bool = True) -> float:
        """Token-mean val loss over the fixed val subset (adapter=False: the base model)."""
        self.model.eval()
        total, n = 0.0, 0
        ctx = contextlib.nullcontext() if adapter else self.model.disable_adapter()
        with ctx:
            for batch in self.val_batches:
                total += float(self.loss_step(batch))
                n += batch.n_supervised
        self.model.train()
        return total / n

    def _optimizer_step(self, batches: list[Batch]) -> tuple[float, float]:
        """One optimizer step over `batches` (the accumulation group); returns (loss, grad_norm)."""
        n_sup = sum(b.n_supervised for b in batches)
        total = 0.0
        for batch in batches:
            loss = self.loss_step(batch) / n_sup
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.p.max_grad_norm if self.p.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    @contextlib.contextmanager
    def _oom_guard(self) -> Iterator[None]:
        p = self.p
        advice = (
            f"with train.batch_size={p.batch_size}, train.max_length={p.max_length}: lower train.batch_size "
            f"(raise train.gradient_accumulation_steps to keep the effective batch), lower train.max_length, "
            f"or set train.gradient_checkpointing=true" + ("" if p.method == "qlora" else " / train.method=qlora")
        )
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(f"CUDA out of memory at step {self.state.step + 1} {advice}") from None
        except RuntimeError as exc:
            if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
                raise ConfigError(f"out of RAM at step {self.state.step + 1} {advice}") from None
            raise

    # ------------------------------------------------------------ train

    def measure_base(self) -> float:
        """Base-model val loss (adapter disabled), cached in the run dir so a resume does not redo it."""
        path = self.run_dir / "base_val_loss.json"
        if path.exists() and any(r.get("type") == "base" for r in self.read_log()):
            self.base_val_loss = json.loads(path.read_text())["val_loss"]
            return self.base_val_loss
        t = time.perf_counter()
        with self._oom_guard():
            self.base_val_loss = self.evaluate(adapter=False)
        path.write_text(json.dumps({"val_loss": self.base_val_loss}))
        self._write_log({"type": "base", "step": 0, "val_loss": self.base_val_loss})
        log.info(
            "base model: val loss %.4f on %d rows (%.1f s)",
            self.base_val_loss, len(self.val_examples), time.perf_counter() - t,
        )
        return self.base_val_loss

    def train(self) -> TrainResult:
        """Run (or finish) the training loop; returns the summary the stage report is built from."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        p, st = self.p, self.state
        self.measure_base()
        accum = p.gradient_accumulation_steps
        log_every = max(1, min(10, p.eval_steps // 2))
        self.model.train()
        reset_peak_memory(self.device)
        bar = tqdm(
            total=self.total_steps, initial=st.step, unit="step", desc="train",
            disable=None if self.progress else True,  # None: shown on a terminal, off in DVC/CI logs
            dynamic_ncols=True,
        )
        with logging_redirect_tqdm(loggers=[_console_logger()]), bar:
            while not st.finished and st.step < self.total_steps:
                batches = [self.stream[st.step * accum + k] for k in range(accum)]
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                with self._oom_guard():
                    loss, grad_norm = self._optimizer_step(batches)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                st.step += 1
                useful = sum(b.useful_tokens for b in batches)
                st.useful_tokens += useful
                st.pad_tokens += sum(b.pad_tokens for b in batches)
                st.train_seconds += dt
                rec = {
                    "type": "train",
                    "step": st.step,
                    "epoch": round(self.stream.epoch_of(st.step * accum - 1), 4),
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_s": round(useful / dt, 1),
                    "useful_tokens": useful,
                    "pad_tokens": sum(b.pad_tokens for b in batches),
                    "step_ms": round(dt * 1000, 1),
                    "peak_mem_mb": peak_memory_mb(self.device),
                    "elapsed_s": round(self._elapsed(), 2),
                }
                self._write_log(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{useful / dt:,.0f}")
                if st.step % log_every == 0 or st.step == 1:
                    log.info(
                        "step %d/%d: loss %.4f, lr %.2e, grad norm %.3f, %s ms, %s tok/s",
                        st.step, self.total_steps, loss, lr, grad_norm, f"{dt * 1000:,.0f}", f"{useful / dt:,.0f}",
                    )
                last = st.step >= self.total_steps
                improved = False
                if st.step % p.eval_steps == 0 or last:
                    improved = self._eval_and_early_stop()
                if st.stopped_early:
                    last = True
                st.finished = last
                if improved or st.step % p.save_steps == 0 or last:
                    self.save_checkpoint()
        return self.result()

    def _eval_and_early_stop(self) -> bool:
        st, es = self.state, self.p.early_stopping
        t = time.perf_counter()
        with self._oom_guard():
            val = self.evaluate()
        improved = val < st.best_val_loss - es.min_delta
        if improved:
            st.best_val_loss, st.best_step, st.bad_evals = val, st.step, 0
        else:
            st.bad_evals += 1
            if st.bad_evals >= es.patience:
                st.stopped_early = True
        self._write_log(
            {
                "type": "eval", "step": st.step, "val_loss": val, "best_val_loss": st.best_val_loss,
                "best_step": st.best_step, "bad_evals": st.bad_evals, "elapsed_s": round(self._elapsed(), 2),
            }
        )
        log.info(
            "eval step %d: val loss %.4f (base %.4f, best %.4f at step %d)%s, %.1f s",
            st.step, val, self.base_val_loss, st.best_val_loss, st.best_step,
            f"; early stop after {st.bad_evals} evals without improvement" if st.stopped_early else "",
            time.perf_counter() - t,
        )
        return improved

    def best_checkpoint(self) -> Path:
        path = self.run_dir / f"{CHECKPOINT_PREFIX}{self.state.best_step:06d}"
        if not (path / COMPLETE).exists():
            raise DataError(f"{path}: best checkpoint missing; delete {self.run_dir} and rerun the train stage")
        return path

    def result(self) -> TrainResult:
        st = self.state
        records = self.read_log()
        total_tokens = st.useful_tokens + st.pad_tokens
        return TrainResult(
            steps=st.step,
            total_steps=self.total_steps,
            best_step=st.best_step,
            best_val_loss=st.best_val_loss,
            base_val_loss=self.base_val_loss,
            stopped_early=st.stopped_early,
            resumed_from=self.resumed_from,
            tokens_per_s=round(st.useful_tokens / st.train_seconds, 1) if st.train_seconds else 0.0,
            padding_waste=round(st.pad_tokens / total_tokens, 4) if total_tokens else 0.0,
            peak_mem_mb=max([r["peak_mem_mb"] for r in records if r.get("type") == "train"] or [0.0]),
            train_seconds=round(st.train_seconds, 2),
            precision=self.precision,
            device=self.device_name(),
            method=self.p.method,
            run_dir=str(self.run_dir),
            best_checkpoint=str(self.best_checkpoint()),
            train_curve=[{"step": r["step"], "loss": r["loss"]} for r in records if r.get("type") == "train"],
            val_curve=[{"step": r["step"], "val_loss": r["val_loss"]} for r in records if r.get("type") == "eval"],
            data=self.data_info,
        )

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name()})"
        return f"cpu ({torch.get_num_threads()} thread(s))"

    # ------------------------------------------------------------ outputs

    def export_adapter(self, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
        """Best checkpoint's adapter + tokenizer + supportlm_train.json -> out_dir (atomic replace)."""
        best = self.best_checkpoint()
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(best / name, tmp / name)
        chat_template.save_tokenizer(self.tokenizer, tmp)  # no load-time keys: same bytes online or offline
        meta = {
            "best_step": self.state.best_step,
            "best_val_loss": self.state.best_val_loss,
            "base_val_loss": self.base_val_loss,
            "steps": self.state.step,
            "stopped_early": self.state.stopped_early,
            "method": self.p.method,
            "precision": self.precision,
            "target_modules": self.target_modules,
            "base_model": str(self.model_dir),
            "base_model_type": self.model_config.model_type,
            "run_key": self.run_key,
            "params": {"train": self.p.model_dump(mode="json"), "lora": self.lora.model_dump(mode="json")},
            **(extra or {}),
        }
        (tmp / "supportlm_train.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.replace(out_dir)
        return out_dir

    def benchmark_padded(self, steps: int) -> dict[str, Any]:
        """Naive baseline: `steps` optimizer steps of padded batches, same batch size and accumulation.

        Runs after training on a frozen copy of the optimizer setting (AdamW with lr=0), so the
        weights do not move; measures useful tokens/s, padding waste and peak memory of the phase.
        """
        if steps <= 0:
            return {}
        if not self.baseline_fits:
            return {"baseline_skipped": "estimated not to fit in memory"}
        p = self.p
        stream = BatchStream(
            self.train_examples, "padded", p.batch_size, p.max_length, self.tokenizer.pad_token_id, p.seed
        )
        saved_opt = self.optimizer
        self.optimizer = torch.optim.AdamW(self.trainable, lr=0.0, weight_decay=0.0)
        useful = pad = 0
        seconds = 0.0
        reset_peak_memory(self.device)
        self.model.train()
        try:
            for s in range(steps):
                batches = [stream[s * p.gradient_accumulation_steps + k] for k in range(p.gradient_accumulation_steps)]
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                try:
                    with self._oom_guard():
                        self._optimizer_step(batches)
                except ConfigError as exc:  # out of memory: the benchmark must not fail a finished run
                    log.warning("padded baseline skipped: %s", exc)
                    self.optimizer.zero_grad(set_to_none=True)
                    return {"baseline_skipped": "out of memory"}
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - t
                useful += sum(b.useful_tokens for b in batches)
                pad += sum(b.pad_tokens for b in batches)
        finally:
            self.optimizer = saved_opt
        out = {
            "baseline_steps": steps,
            "baseline_tokens_per_s": round(useful / seconds, 1),
            "baseline_padding_waste": round(pad / (useful + pad), 4),
            "baseline_peak_mem_mb": peak_memory_mb(self.device),
            "baseline_seconds": round(seconds, 2),
        }
        log.info(
            "padded baseline: %d steps, %s useful tok/s, padding waste %.1f%%, peak %s MB",
            steps, f"{out['baseline_tokens_per_s']:,.0f}", 100 * out["baseline_padding_waste"],
            f"{out['baseline_peak_mem_mb']:,.0f}",
        )
        return out

    def cleanup(self) -> None:
        for name in ("model", "optimizer", "scheduler"):
            if hasattr(self, name):
                delattr(self, name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

