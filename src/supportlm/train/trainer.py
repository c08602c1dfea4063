"""LoRA / QLoRA fine-tuning recipe: a plain torch loop over a peft model (torchtune's recipe shape).

    recipe = LoRAFinetuneRecipe(params.train, params.lora, model_dir=..., data_dir=..., checkpoints_root=...)
    recipe.setup()            # setup_data -> memory check -> setup_model -> setup_optimizer -> resume
    result = recipe.train()   # loss_step per micro-batch, eval / checkpoint / early stop per step
    recipe.export_adapter(Path("models/adapter"))
    benchmark_padded(recipe, params.train.baseline_steps)   # train/baseline.py
    recipe.cleanup()

Why a hand-written loop rather than HF Trainer / TRL: resume, early stopping and the logged numbers
have to be exact and testable (tests/unit/test_trainer.py pins the losses and checks that a run
killed with SIGKILL and resumed reproduces the uninterrupted run bit for bit on CPU). Every piece of
state is explicit here: adapter weights, AdamW moments, scheduler, grad scaler, RNG states, step,
best-so-far and the early-stopping counter; the data order is a pure function of (seed, epoch), so
the position in the data is just `step x gradient_accumulation_steps`.

This docstring is the recipe's reference (every knob, what it costs); it is why the file runs past
~500 lines while the code, one concern (the training loop and its state), is ~450.

Features (params.yaml `train:` and `lora:`):

- `train.method`: `lora` trains low-rank adapters on a frozen base in the train precision;
  `qlora` loads the base in 4-bit (bitsandbytes, `train.quant`: nf4, double quant, compute dtype)
  via `prepare_model_for_kbit_training`: ~4x less base-weight memory (a 7B base fits in ~5 GB), but
  every matmul dequantizes, so it is slower, and on CPU much slower. The adapter is the same format;
  `base_val_loss` is then the 4-bit base's. (On CPU, bitsandbytes' inference-only weight repacking is
  switched off: it silently breaks backward, see train/lora_model.py.)
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
  LM head runs only on supervised positions (see train/loss.py).
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
- Several processes (`train.num_processes`, launched by train/run.py under `accelerate launch`): DDP
  over the adapters, or FSDP2 sharding the whole model (`train.strategy`), each step's micro-batches
  shared out so the run does not depend on the count, rank 0 the only writer; see train/distributed.py.
- Logs: one JSONL line per optimizer step (step, loss, lr, tokens_per_s of useful tokens, peak_mem_mb
  = peak CUDA allocation or peak RSS, grad_norm, elapsed_s) and per eval (val_loss) in
  `<run dir>/log.jsonl`; a tqdm bar on a terminal; a log line every few steps
  ("step 120/400: loss 1.8342, lr 1.9e-04, grad norm 0.412, 412 ms, 3,210 tok/s").
- After training, `benchmark_padded` (train/baseline.py) runs `train.baseline_steps` steps of the
  naive padded batching (same rows, batch size, accumulation; lr 0 so the weights do not move) for
  the speedup figure.

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
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from supportlm.config import LoraParams, TrainParams
from supportlm.errors import DataError
from supportlm.io import write_json
from supportlm.train import checkpoints as ckpt
from supportlm.train.batching import Batch
from supportlm.train.checkpoints import COMPLETE, TrainState
from supportlm.train.device import (
    DTYPES,
    device_name,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
)
from supportlm.train.distributed import Dist
from supportlm.train.inputs import load_data
from supportlm.train.lora_model import decoder_layers, load_lora_model
from supportlm.train.loss import Head, StepLoss
from supportlm.train.memory import check_memory, oom_guard
from supportlm.train.result import TrainResult
from supportlm.train.run_log import RunLog

log = logging.getLogger("supportlm.train")


def _console_logger() -> logging.Logger:
    """The logger whose handler prints our lines (tqdm redirects that one, so nothing is doubled)."""
    logger: logging.Logger | None = log
    while logger is not None:
        if logger.handlers:
            return logger
        logger = logger.parent if logger.propagate else None
    return logging.getLogger()


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
        self.dist = Dist.start(train.num_processes, resolve_device(), train.strategy)  # one process unless launched
        self.device = self.dist.device
        self.precision = resolve_precision(train.precision, self.device)
        self.dtype = DTYPES[self.precision]
        self.resumed_from: int | None = None
        self.state = TrainState()
        self.base_val_loss = math.nan
        self._t0 = time.perf_counter()
        self.scaler: torch.amp.GradScaler | None = None
        self._head: Head | None = None  # set by setup_model
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
        md5 = [self.data_info["train_md5"], self.data_info["val_md5"]]
        self.run_key = ckpt.run_key(self.p, self.lora, md5, self.model_dir, self.device, self.precision)
        self.run_dir = self.checkpoints_root / self.run_key
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_log = RunLog(self.run_dir / "log.jsonl")  # written by rank 0 only
        longest = max(len(e) for e in self.train_examples)
        self.baseline_fits = check_memory(
            self.p, self.model_config, self.model_dir, self.precision, self.device, longest
        )
        self.setup_model()
        self.setup_optimizer()
        self.resume()

    def setup_data(self) -> None:
        """Read + subset the splits, tokenize with assistant-only labels, build the batch stream."""
        data = load_data(self.train_file, self.val_file, self.tokenizer, self.p)
        self.train_examples, self.val_examples = data.train_examples, data.val_examples
        self.stream, self.val_batches = data.stream, data.val_batches
        self.batches_per_epoch, self.total_steps = data.batches_per_epoch, data.total_steps
        self.data_info = data.info

    def setup_model(self) -> None:
        """Load the base (fp/bf16, or 4-bit for qlora), wrap it with LoRA adapters."""
        m = load_lora_model(self.model_dir, self.model_config, self.p, self.lora, self.device, self.precision)
        self.model, self.target_modules, self._head = m.model, m.target_modules, m.head
        self.trainable_params = m.trainable_params
        # the loss as one module: evaluation calls it directly, a training step through DDP when several processes
        self._loss = StepLoss(self.model, self._head, self.device, self._autocast)
        self.step_loss = self.dist.wrap(self._loss, decoder_layers(self.model))

    def setup_optimizer(self) -> None:
        """AdamW over the adapter params + the HF scheduler; a GradScaler for fp16."""
        from transformers import get_scheduler

        p = self.p
        self.trainable = [t for t in self.model.parameters() if t.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=p.learning_rate, weight_decay=p.weight_decay)
        self.warmup_steps = math.ceil(p.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            p.lr_scheduler,
            self.optimizer,
            num_warmup_steps=self.warmup_steps,
            num_training_steps=self.total_steps,
        )
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")

    # ------------------------------------------------------------ checkpoints and the run log

    def save_checkpoint(self) -> Path:
        """Atomic checkpoint of the current step (see train/checkpoints.py) by rank 0, then rotate old ones.

        The weights, optimizer and scheduler are the same on every rank; each rank's RNG state is not
        (its dropout masks), so all of them are gathered into the checkpoint."""
        rng_states = self.dist.gather(ckpt.rng_state())
        adapter = optimizer = None
        if self.dist.sharded:  # whole tensors first (collective), so the files are those of one process
            adapter = self.dist.full_tensors([(n, t) for n, t in self.model.named_parameters() if t.requires_grad])
            optimizer = self.dist.optimizer_state(self.step_loss, self.optimizer)
        final = ckpt.checkpoint_dir(self.run_dir, self.state.step)
        if self.dist.is_main:
            final = ckpt.save_checkpoint(
                self.run_dir, self.state, self.model, self.optimizer, self.scheduler, self.scaler, self._elapsed,
                rng_states, adapter_state=adapter, optimizer_state=optimizer,
            )  # fmt: skip
            ckpt.rotate(self.run_dir, self.p.save_total_limit, self.state.best_step)
        self.dist.barrier()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.state.step, final)
        return final

    def resume(self) -> None:
        """Load the newest complete checkpoint of this run key, if any; trim the log to it."""
        state = ckpt.resume_latest(
            self.run_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            self.device,
            self.total_steps,
            rank=self.dist.rank,
            sharded=self._sharded_loader() if self.dist.sharded else None,
        )
        self.state = state or TrainState(total_steps=self.total_steps, run_key=self.run_key)
        if state is not None:
            self.resumed_from = state.step
            self._t0 = time.perf_counter() - state.elapsed_s
        if self.dist.is_main:
            self.run_log.trim(self.state.step)
        self.dist.barrier()  # no rank reads the log before it is trimmed

    def _sharded_loader(self) -> ckpt.ShardedLoad:
        """How a checkpoint's whole tensors reach this process's shards (fsdp)."""
        trainable = [n for n, t in self.model.named_parameters() if t.requires_grad]
        return ckpt.ShardedLoad(
            parameters=lambda full: self.dist.load_parameters(self.model, ckpt.adapter_names(full, trainable)),
            optimizer=lambda state: self.dist.load_optimizer_state(self.step_loss, self.optimizer, state),
        )

    def best_checkpoint(self) -> Path:
        path = ckpt.checkpoint_dir(self.run_dir, self.state.best_step)
        if not (path / COMPLETE).exists():
            raise DataError(
                f"{path}: best checkpoint missing; delete {self.run_dir} and rerun the train stage"
            )
        return path

    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.run_log.write(record)
        if self.on_log is not None:
            self.on_log(record)

    def read_log(self) -> list[dict[str, Any]]:
        return self.run_log.read()

    # ------------------------------------------------------------ steps

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def loss_step(self, batch: Batch) -> torch.Tensor:
        """Summed cross-entropy over the batch's supervised tokens (see train/loss.py), outside DDP."""
        return self._loss(batch)

    @torch.no_grad()
    def evaluate(self, adapter: bool = True) -> float:
        """Token-mean val loss over the fixed val subset (adapter=False: the base model).

        Several processes share the val batches out and sum their totals."""
        self.model.eval()
        total, n = 0.0, 0
        ctx = contextlib.nullcontext() if adapter else self.model.disable_adapter()
        mine = self.dist.shard(self.val_batches)
        with ctx:
            for i in range(self.dist.passes(len(self.val_batches))):
                if i >= len(mine):  # fsdp: a spare pass, so every process gathers the same layers
                    self.loss_step(self.val_batches[0])
                    continue
                total += float(self.loss_step(mine[i]))
                n += mine[i].n_supervised
        self.model.train()
        total, n = self.dist.sum(total, n)
        return total / n

    def optimizer_step(
        self, batches: list[Batch], optimizer: torch.optim.Optimizer | None = None
    ) -> tuple[float, float]:
        """One step of `optimizer` (default: the recipe's) over `batches`, the accumulation group.

        Returns (loss, grad_norm): the loss is the mean over every supervised token of the group.
        Several processes each take their share of `batches` and scale by world / (the group's
        supervised tokens): DDP's mean of their gradients is then the whole group's gradient.
        """
        opt = self.optimizer if optimizer is None else optimizer
        n_sup = sum(b.n_supervised for b in batches)
        scale = n_sup / self.dist.world
        mine = self.dist.shard(batches)
        total = 0.0
        for i, batch in enumerate(mine):
            with self.dist.no_sync(self.step_loss, last=i == len(mine) - 1):
                loss = self.step_loss(batch) / scale
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            total += float(loss.detach())
        if self.dist.world > 1:
            (total,) = self.dist.sum(total)
            total /= self.dist.world
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        max_norm = self.p.max_grad_norm if self.p.max_grad_norm is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # fsdp: a DTensor
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return total, grad_norm

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    # ------------------------------------------------------------ train

    def measure_base(self) -> float:
        """Base-model val loss (adapter disabled), computed once per base model and val data.

        Cached under <checkpoints_root>/base_val_loss/<key>.json, the key holding only what the number
        depends on (not the LoRA or optimizer settings), so `dvc exp run -S lora.r=32` reuses it."""
        key = ckpt.base_loss_key(self.p, self.data_info["val_md5"], self.model_dir, self.device, self.precision)
        path = self.checkpoints_root / "base_val_loss" / f"{key}.json"
        cached = path.exists()  # every rank decides before rank 0 can write it (the eval is collective)
        t = time.perf_counter()
        if cached:
            self.base_val_loss = json.loads(path.read_text())["val_loss"]
        else:
            with oom_guard(self.p, self.state.step + 1):
                self.base_val_loss = self.evaluate(adapter=False)
            if self.dist.is_main:
                write_json(path, {"val_loss": self.base_val_loss, "val_rows": len(self.val_examples)})
        if not any(r.get("type") == "base" for r in self.read_log()):
            self._write_log({"type": "base", "step": 0, "val_loss": self.base_val_loss})
        log.info(
            "base model: val loss %.4f on %d rows (%s)",
            self.base_val_loss,
            len(self.val_examples),
            f"cached in {path.name}" if cached else f"{time.perf_counter() - t:.1f} s",
        )
        return self.base_val_loss

    def train(self) -> TrainResult | None:
        """Run (or finish) the training loop; the summary the stage report is built from (rank 0; others None)."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        p, st = self.p, self.state
        self.measure_base()
        accum = p.gradient_accumulation_steps
        log_every = max(1, min(10, p.eval_steps // 2))
        self.model.train()
        reset_peak_memory(self.device)
        bar = tqdm(
            total=self.total_steps,
            initial=st.step,
            unit="step",
            desc="train",
            disable=None if self.progress and self.dist.is_main else True,  # None: on a terminal, not in DVC/CI logs
            dynamic_ncols=True,
        )
        with logging_redirect_tqdm(loggers=[_console_logger()]), bar:
            while not st.finished and st.step < self.total_steps:
                batches = [self.stream[st.step * accum + k] for k in range(accum)]
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                with oom_guard(p, st.step + 1):
                    loss, grad_norm = self.optimizer_step(batches)
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
                        st.step,
                        self.total_steps,
                        loss,
                        lr,
                        grad_norm,
                        f"{dt * 1000:,.0f}",
                        f"{useful / dt:,.0f}",
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
        return self.result() if self.dist.is_main else None

    def _eval_and_early_stop(self) -> bool:
        st, es = self.state, self.p.early_stopping
        t = time.perf_counter()
        with oom_guard(self.p, st.step + 1):
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
                "type": "eval",
                "step": st.step,
                "val_loss": val,
                "best_val_loss": st.best_val_loss,
                "best_step": st.best_step,
                "bad_evals": st.bad_evals,
                "elapsed_s": round(self._elapsed(), 2),
            }
        )
        log.info(
            "eval step %d: val loss %.4f (base %.4f, best %.4f at step %d)%s, %.1f s",
            st.step,
            val,
            self.base_val_loss,
            st.best_val_loss,
            st.best_step,
            f"; early stop after {st.bad_evals} evals without improvement" if st.stopped_early else "",
            time.perf_counter() - t,
        )
        return improved

    def result(self) -> TrainResult:
        return TrainResult.summarize(
            self.state,
            self.read_log(),
            total_steps=self.total_steps,
            base_val_loss=self.base_val_loss,
            resumed_from=self.resumed_from,
            precision=self.precision,
            device=device_name(self.device),
            method=self.p.method,
            run_dir=str(self.run_dir),
            best_checkpoint=str(self.best_checkpoint()),
            data=self.data_info,
        )

    # ------------------------------------------------------------ outputs

    def export_adapter(self, out_dir: Path) -> Path:
        """Best checkpoint's adapter + tokenizer + supportlm_train.json -> out_dir (atomic replace)."""
        best = self.best_checkpoint()
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
        }
        return ckpt.export_adapter(best, out_dir, self.tokenizer, meta)

    def cleanup(self) -> None:
        for name in ("model", "optimizer", "scheduler"):
            if hasattr(self, name):
                delattr(self, name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.dist.close()
