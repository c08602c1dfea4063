"""GPU check (issue 14): the project's own QLoRA, resume, merge, generation and bitsandbytes code on a
model with a real 7B architecture, in one run of about 5 minutes on one H200.

    python -m supportlm.gpu_check                # Mistral-7B shape on CUDA (scripts/gpu_check_device.sh)
    python -m supportlm.gpu_check --tiny         # a 2-layer, 64-wide Llama on CPU in seconds (the unit test)
    python -m supportlm.gpu_check --layers 1 --hidden 256 --intermediate 512 --heads 4 --kv-heads 2 \\
        --seq-len 128 --batch-size 2 --steps 6   # the full code path shrunk to fit a CPU
    make gpu-check [TINY=1]

Why random weights: a lent GPU has no network and no 7B checkpoint, and speed and memory depend on
the shapes (hidden 4096, 32 heads, vocab 32000), not on the values. The timed parts use
`--layers` (4) of the architecture's layers; the full depth (32) is built once for the memory
figures and the 7B generation speed. Tokenizer: a word-level one built in-process (no download)
whose vocabulary is exactly the config's; data: synthetic chat rows formatted by
`supportlm.data.format`, long enough that every row fills `--seq-len` tokens.

Steps (each timed with its peak memory; a failure is recorded with its error and the rest still run):

1. build: model dir (config + random bf16 weights on CUDA / fp32 on CPU + tokenizer), train/val rows.
2. qlora: `LoRAFinetuneRecipe`, method qlora, precision auto (bf16 on CUDA), gradient checkpointing,
   batch 8 x 1024 tokens, 20 steps; its final adapter is the reference for step 3.
3. resume: the same run in a child process, SIGKILLed once a checkpoint is complete and two more
   steps are logged, then resumed in a new child: it must reach the same final step, and its final
   LoRA B weights and losses must match the uninterrupted run (tolerance: exact on CPU, bf16 noise
   on CUDA; the difference between two uninterrupted runs at the kill step is recorded beside it).
4. merge: `supportlm.train.merge` (bf16 on the GPU); one merged weight is checked against W + s*B@A.
5. generate: `HFEngine` on the merged model at batch 1 and 8, exactly N new tokens (EOS masked).
6. bnb: `torch_quant.load` bnb_int8, bnb_nf4 and torchao_int4 (the 4-bit GPU format that replaced
   GPTQ), then a few tokens through `HFEngine`.
7. full_depth: the full-depth model built on the device in bf16: weight memory and generation speed,
   then saved and trained for a few QLoRA steps at batch 8 x 1024 (the 7B QLoRA memory and speed).

Writes reports/gpu/gpu_check.json (keys in DESIGN.md), gpu_check.md and logs/ (the child
processes' output); exits 1 when any step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("supportlm.gpu_check")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (= pad): SmolLM2's ChatML names
ROLES = ["system", "user", "assistant"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Published configs (hidden, intermediate, heads, kv heads, vocab, depth). rope_theta stays the
# library default: it changes no shape, and random weights make its value irrelevant.
SHAPES: dict[str, dict[str, Any]] = {
    "mistral-7b": {"arch": "mistral", "hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8,
                   "vocab": 32000, "depth": 32},  # Mistral-7B-Instruct-v0.2 (profiles/gpu.yaml's base)
    "llama2-7b": {"arch": "llama", "hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32,
                  "vocab": 32000, "depth": 32},
    "tiny": {"arch": "llama", "hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2,
             "vocab": 512, "depth": 4},
}  # fmt: skip


@dataclass
class CheckConfig:
    """What to run; the defaults are the full check (~5 min on one H200), `tiny()` the CPU test."""

    shape: str = "mistral-7b"
    hidden: int | None = None  # None = the shape's value (overrides exist to run the full path on CPU)
    intermediate: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    vocab: int | None = None
    layers: int = 4  # layers of the model used by the timed steps 2-6
    full_layers: int | None = None  # step 7's depth; None = the shape's depth, 0 = skip step 7
    batch_size: int = 8
    seq_len: int = 1024
    steps: int = 20
    save_steps: int = 5
    eval_steps: int = 10
    kill_at: int = 12  # the victim is killed once this step is logged (after the checkpoint at 10)
    learning_rate: float = 2e-4
    lora_r: int = 16
    gen_tokens: int = 128
    gen_batches: tuple[int, ...] = (1, 8)
    gen_repeats: int = 3  # median of this many timed generations per batch size (after one warm-up)
    prompt_tokens: int = 64
    bnb_tokens: int = 32
    full_steps: int = 3  # QLoRA steps at full depth (the first one warms up)
    budget_s: float = 330.0  # step 7's QLoRA part is skipped (reason recorded) when the run is past this
    child_timeout_s: float = 150.0
    threads: int | None = None  # torch CPU threads here and in the children; None = torch's default
    seed: int = 0
    out_dir: Path = Path("reports/gpu")
    work_dir: Path | None = None  # None = a temp dir, removed at the end
    keep_work: bool = False

    @classmethod
    def tiny(cls, **kw: Any) -> CheckConfig:
        """CPU: 2 layers x 64 wide, vocab 512, batch 2 x 64 tokens, 4 steps; ~40 s on 2 cores."""
        base = {
            "shape": "tiny", "layers": 2, "full_layers": None, "batch_size": 2, "seq_len": 64, "steps": 4,
            "save_steps": 2, "eval_steps": 2, "kill_at": 3, "learning_rate": 1e-2, "lora_r": 8, "gen_tokens": 12,
            "gen_repeats": 1, "prompt_tokens": 16, "bnb_tokens": 4, "full_steps": 1, "child_timeout_s": 120.0,
            "threads": 1,  # 64-wide matrices gain nothing from a 2nd thread; on a busy box it spins (2x slower)
            "out_dir": Path("reports/gpu/tiny"),  # never over the GPU results in reports/gpu/
        }
        return cls(**(base | kw))

    def dims(self, layers: int) -> dict[str, Any]:
        s = SHAPES[self.shape]
        return {
            "arch": s["arch"],
            "hidden": self.hidden or s["hidden"],
            "intermediate": self.intermediate or s["intermediate"],
            "heads": self.heads or s["heads"],
            "kv_heads": self.kv_heads or s["kv_heads"],
            "vocab": self.vocab or s["vocab"],
            "layers": layers,
        }

    @property
    def depth(self) -> int:
        return SHAPES[self.shape]["depth"] if self.full_layers is None else self.full_layers


# ---------------------------------------------------------------- model, tokenizer, data


def build_tokenizer(vocab_size: int) -> Any:
    """Word-level tokenizer with exactly `vocab_size` ids: ChatML specials, role names, `w0`, `w1`, ...

    Word level (split on whitespace, specials matched first) keeps every chat-template prefix a token
    prefix, which the trainer's assistant-only labels rely on.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(SPECIALS) - len(ROLES))]
    vocab = {t: i for i, t in enumerate(SPECIALS + ROLES + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=SPECIALS[0], bos_token=SPECIALS[1], eos_token=SPECIALS[2],
        pad_token=SPECIALS[2],
    )
    fast.chat_template = CHATML
    if len(fast) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(fast)} ids, the config {vocab_size}")
    return fast


def model_config(dims: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import LlamaConfig, MistralConfig

    common = {
        "vocab_size": dims["vocab"], "hidden_size": dims["hidden"], "intermediate_size": dims["intermediate"],
        "num_hidden_layers": dims["layers"], "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"], "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if dims["arch"] == "mistral":
        return MistralConfig(**common, max_position_embeddings=32768, sliding_window=None)
    return LlamaConfig(**common, max_position_embeddings=4096)


def build_model(config: Any, device: str, dtype: Any, seed: int) -> Any:
    """Random weights initialised on `device` directly (a 7B in bf16 on a GPU takes seconds)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def save_model_dir(model: Any, tokenizer: Any, out: Path) -> Path:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def synthetic_messages(rng: random.Random, n_words: int, user_words: int, reply_words: int) -> list[dict[str, str]]:
    """System + user + assistant turns of Zipf-distributed words (learnable: a few words dominate)."""
    weights = [1.0 / (k + 1) ** 1.1 for k in range(min(n_words, 256))]

    def text(n: int) -> str:
        return " ".join(f"w{k}" for k in rng.choices(range(len(weights)), weights=weights, k=n))

    return [
        {"role": "system", "content": text(8)},
        {"role": "user", "content": text(user_words)},
        {"role": "assistant", "content": text(reply_words)},
    ]


def write_rows(data_dir: Path, tokenizer: Any, cfg: CheckConfig, n_words: int) -> dict[str, Any]:
    """data_dir/{train,val}.jsonl in the data/formatted schema (made by data.format.format_split).

    Every row is longer than seq_len (user seq_len/8 words, reply seq_len words), so each micro-batch
    is exactly batch_size x seq_len tokens after truncation; train has one epoch of `steps` batches.
    """
    from supportlm.config import FormatParams
    from supportlm.data.format import format_split
    from supportlm.data.schema import Record, write_jsonl

    stats = {}
    fp = FormatParams(max_length=cfg.seq_len)
    for split, n, seed in (("train", cfg.batch_size * cfg.steps, cfg.seed + 1), ("val", cfg.batch_size, cfg.seed + 2)):
        rng = random.Random(f"gpu-check-{split}-{seed}")
        records = [
            Record(
                id=f"{split}-{i:05d}", source="gpu_check", kind="qa", intent="track_order", category="ORDER",
                messages=synthetic_messages(rng, n_words, max(cfg.seq_len // 8, 4), cfg.seq_len),
            )
            for i in range(n)
        ]
        rows, stats[split] = format_split(records, tokenizer, fp)
        write_jsonl(data_dir / f"{split}.jsonl", rows)
    return stats


# ---------------------------------------------------------------- measuring


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def free_memory() -> None:
    gc.collect()
    if _cuda():
        import torch

        torch.cuda.empty_cache()


def allocated_mb() -> float | None:
    if not _cuda():
        return None
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1)


def device_info() -> dict[str, Any]:
    import torch

    from supportlm.runtime import cpu_info

    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu.get("model"), "cpu_cores": cpu.get("cores"), "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "name": torch.cuda.get_device_name(0),
            "total_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"sm_{props.major}{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
            "count": torch.cuda.device_count(),
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            )
            info["driver"] = out.stdout.strip().splitlines()[0]
    return info


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers",
                 "pydantic", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Run:
    """One check: its config, its places, and what a step hands to later ones."""

    cfg: CheckConfig
    work: Path
    cuda: bool
    info: dict[str, Any]
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    steps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> ok, seconds, error
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> the step's numbers
    tokenizer: Any = None
    ref_result: dict[str, Any] | None = None  # the uninterrupted QLoRA run, for the resume comparison
    prompts: list[list[int]] = dataclasses.field(default_factory=list)

    model_dir = property(lambda self: self.work / "base")
    data_dir = property(lambda self: self.work / "data")
    adapter_dir = property(lambda self: self.work / "adapter")
    merged_dir = property(lambda self: self.work / "merged")
    log_dir = property(lambda self: Path(self.cfg.out_dir) / "logs")

    @property
    def dev(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def save_dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.cuda else torch.float32

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_step(run: Run, name: str, fn: Callable[[Run], dict[str, Any]], needs: tuple[str, ...] = ()) -> None:
    """fn(run) -> its numbers (a `failed` key marks a failed check); an exception is recorded, never raised."""
    from supportlm.train.trainer import peak_memory_mb, reset_peak_memory, resolve_device

    device = resolve_device()
    rec: dict[str, Any] = {"ok": False, "seconds": 0.0}
    run.steps[name] = rec
    missing = [n for n in needs if not run.steps.get(n, {}).get("ok")]
    if missing:
        rec["error"] = f"not run: needs {', '.join(missing)} (failed or not run)"
        log.warning("[%6.1f s] %s: %s", run.elapsed(), name, rec["error"])
        return
    log.info("[%6.1f s] %s: start", run.elapsed(), name)
    free_memory()
    reset_peak_memory(device)
    t = time.perf_counter()
    try:
        out = fn(run) or {}
        run.results[name] = out
        rec["ok"] = not out.get("failed")
        if out.get("failed"):
            rec["error"] = out["failed"]
    except Exception as exc:  # noqa: BLE001 - one failed step must not stop the others
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        rec["traceback"] = traceback.format_exc()[-4000:]
        log.error("%s failed:\n%s", name, rec["traceback"])
    rec["seconds"] = round(time.perf_counter() - t, 2)
    rec["peak_mem_mb"] = peak_memory_mb(device)
    free_memory()
    log.info(
        "[%6.1f s] %s: %s in %.1f s, peak %s MB%s", run.elapsed(), name, "ok" if rec["ok"] else "FAILED",
        rec["seconds"], f"{rec['peak_mem_mb']:,.0f}", "" if rec["ok"] else f" ({rec['error'][:300]})",
    )


# ---------------------------------------------------------------- training (in process and in children)


def train_params(cfg: CheckConfig, steps: int) -> tuple[Any, Any]:
    """TrainParams / LoraParams of the check: QLoRA, precision auto, grad checkpointing, 1 epoch = `steps`."""
    from supportlm.config import EarlyStopping, LoraParams, TrainParams

    train = TrainParams(
        seed=cfg.seed, method="qlora", train_rows=None, val_rows=None, max_length=cfg.seq_len, batching="grouped",
        epochs=1.0, max_steps=steps, batch_size=cfg.batch_size, gradient_accumulation_steps=1,
        learning_rate=cfg.learning_rate, lr_scheduler="cosine", warmup_ratio=0.0, gradient_checkpointing=True,
        precision="auto", eval_steps=cfg.eval_steps, save_steps=cfg.save_steps, save_total_limit=100,
        early_stopping=EarlyStopping(patience=10_000), tracking="none", baseline_steps=0,
    )
    return train, LoraParams(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.05)


def run_recipe(train: Any, lora: Any, model_dir: Path, data_dir: Path, ckpt_root: Path,
               on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """setup -> train -> result, with load time and the memory held once the 4-bit model is loaded."""
    import torch

    from supportlm.train.trainer import LoRAFinetuneRecipe

    t = time.perf_counter()
    recipe = LoRAFinetuneRecipe(
        train, lora, model_dir=model_dir, data_dir=data_dir, checkpoints_root=ckpt_root, progress=False, on_log=on_log
    )
    recipe.setup()
    setup_s = time.perf_counter() - t
    loaded_mb = allocated_mb()
    result = dataclasses.asdict(recipe.train())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_log = [r for r in recipe.read_log() if r.get("type") == "train"]
    result |= {
        "setup_s": round(setup_s, 2),
        "loaded_mem_mb": loaded_mb,
        "trainable_params": recipe.trainable_params,
        "steady_tokens_per_s": median([r["tokens_per_s"] for r in train_log[1:]]),  # step 1 warms kernels up
        "step_ms_median": median([r["step_ms"] for r in train_log[1:]] or [r["step_ms"] for r in train_log]),
        "tokens_per_step": train_log[-1]["useful_tokens"] + train_log[-1]["pad_tokens"] if train_log else None,
    }
    recipe.cleanup()
    del recipe
    free_memory()
    return result


def child_main(spec_path: Path) -> int:
    """A training child: run the recipe from a spec file; optionally block (to be killed) at a step."""
    import torch

    from supportlm.config import LoraParams, TrainParams

    spec = json.loads(Path(spec_path).read_text())
    block_at, marker = spec.get("block_at"), spec.get("marker")
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])

    def on_log(rec: dict[str, Any]) -> None:
        if block_at and rec.get("type") == "train" and rec.get("step") == block_at:
            Path(marker).write_text(str(block_at))
            log.info("child: step %d logged; waiting for SIGKILL", block_at)
            time.sleep(3600)

    result = run_recipe(
        TrainParams.model_validate(spec["train"]), LoraParams.model_validate(spec["lora"]), Path(spec["model_dir"]),
        Path(spec["data_dir"]), Path(spec["ckpt_root"]), on_log=on_log,
    )
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


def median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def spawn_child(run: Run, spec: dict[str, Any], name: str) -> tuple[subprocess.Popen, Path]:
    """`python -m supportlm.gpu_check --child SPEC`, its output in <out_dir>/logs/<name>.log."""
    spec_path = run.work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, default=str))
    log_dir = run.log_dir
    env = dict(os.environ) | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if run.cfg.threads:
        env["OMP_NUM_THREADS"] = str(run.cfg.threads)
    src = str(Path(__file__).resolve().parents[1])  # the dir holding the supportlm package
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportlm.gpu_check", "--child", str(spec_path)],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )
    return proc, log_path


def tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def complete_checkpoints(root: Path) -> list[int]:
    from supportlm.train.trainer import CHECKPOINT_PREFIX, COMPLETE

    return sorted(int(p.parent.name[len(CHECKPOINT_PREFIX):]) for p in root.glob(f"*/{CHECKPOINT_PREFIX}*/{COMPLETE}"))


def lora_b_rel_diff(a_dir: Path, b_dir: Path) -> float:
    """||B_a - B_b|| / ||B_b|| over every lora_B matrix (zero at init, so all of it was learned)."""
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / "adapter_model.safetensors")), load_file(str(b_dir / "adapter_model.safetensors"))
    keys = sorted(k for k in b if "lora_B" in k)
    if not keys or set(keys) - set(a):
        raise RuntimeError(f"{a_dir} and {b_dir}: adapters hold different lora_B tensors")
    num = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in keys)
    den = sum(float(b[k].float().pow(2).sum()) for k in keys)
    return (num / den) ** 0.5 if den else float(num > 0)


# ---------------------------------------------------------------- the steps


def step_build(run: Run) -> dict[str, Any]:
    """Tokenizer, random-weight model dir (`--layers` layers), train/val rows."""
    cfg, dims = run.cfg, run.cfg.dims(run.cfg.layers)
    t = time.perf_counter()
    run.tokenizer = tok = build_tokenizer(dims["vocab"])
    config = model_config(dims, tok)
    model = build_model(config, run.dev, run.save_dtype, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    save_model_dir(model, tok, run.model_dir)
    save_s = time.perf_counter() - t
    del model
    t = time.perf_counter()
    data = write_rows(run.data_dir, tok, cfg, dims["vocab"] - len(SPECIALS) - len(ROLES))
    return {
        "architecture": config.architectures[0] if config.architectures else type(config).__name__,
        "params": n_params, "dtype": str(run.save_dtype).replace("torch.", ""), "init_s": round(init_s, 2),
        "save_s": round(save_s, 2), "size_bytes": sum(f.stat().st_size for f in run.model_dir.glob("*.safetensors")),
        "data_s": round(time.perf_counter() - t, 2),
        "data": {k: {"rows": v["rows"], "tokens_mean": v["tokens_mean"], "truncated_rows": v["truncated_rows"]}
                 for k, v in data.items()},
    }


def step_qlora(run: Run) -> dict[str, Any]:
    """The uninterrupted QLoRA run; its last adapter is what merge folds in and resume is compared with."""
    from supportlm.train.trainer import CHECKPOINT_PREFIX

    cfg = run.cfg
    train, lora = train_params(cfg, cfg.steps)
    res = run.ref_result = run_recipe(train, lora, run.model_dir, run.data_dir, run.work / "ckpt-ref")
    last = Path(res["run_dir"]) / f"{CHECKPOINT_PREFIX}{res['steps']:06d}"
    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(last / name, run.adapter_dir / name)
    run.tokenizer.save_pretrained(run.adapter_dir)
    losses = [r["loss"] for r in res["train_curve"]]
    ok = res["steps"] == cfg.steps and all(math.isfinite(x) for x in losses)
    return {
        **_train_numbers(res, run.cuda), "total_steps": res["total_steps"], "precision": res["precision"],
        "method": res["method"], "gradient_checkpointing": True, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
        "base_val_loss": res["base_val_loss"],
        "final_val_loss": res["val_curve"][-1]["val_loss"] if res["val_curve"] else None,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "failed": None if ok else f"ran {res['steps']} of {cfg.steps} steps, losses {losses}",
    }


def _train_numbers(res: dict[str, Any], cuda: bool) -> dict[str, Any]:
    return {
        "steps": res["steps"], "tokens_per_step": res["tokens_per_step"], "tokens_per_s": res["tokens_per_s"],
        "steady_tokens_per_s": res["steady_tokens_per_s"], "step_ms_median": res["step_ms_median"],
        "peak_vram_mb": res["peak_mem_mb"] if cuda else None, "peak_rss_mb": None if cuda else res["peak_mem_mb"],
        "loaded_mem_mb": res["loaded_mem_mb"], "setup_s": res["setup_s"], "train_s": res["train_seconds"],
        "trainable_params": res["trainable_params"], "losses": [round(r["loss"], 5) for r in res["train_curve"]],
    }


def step_resume(run: Run) -> dict[str, Any]:
    """Kill a training child with SIGKILL past a complete checkpoint, resume in a new child, compare."""
    from supportlm.runtime import describe_exit

    cfg = run.cfg
    train, lora = train_params(cfg, cfg.steps)
    root = run.work / "ckpt-resume"
    shutil.rmtree(root, ignore_errors=True)
    spec = {
        "train": train.model_dump(mode="json"), "lora": lora.model_dump(mode="json"), "model_dir": str(run.model_dir),
        "data_dir": str(run.data_dir), "ckpt_root": str(root), "result": str(run.work / "resume.result.json"),
        "threads": cfg.threads,
    }
    out = kill_child(run, spec, root)
    t = time.perf_counter()
    child, child_log = spawn_child(run, spec, "resume_resumed")
    try:
        rc = child.wait(timeout=cfg.child_timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise TimeoutError(f"the resumed run did not finish in {cfg.child_timeout_s:.0f} s") from None
    if rc != 0:
        raise RuntimeError(f"the resumed run {describe_exit(rc)}:\n{tail(child_log)}")
    res = json.loads(Path(spec["result"]).read_text())
    out |= {
        "resumed_from": res["resumed_from"], "final_step": res["steps"], "total_steps": res["total_steps"],
        "resumed_s": round(time.perf_counter() - t, 2), "resumed_setup_s": res["setup_s"],
    }
    problems = []
    if out["victim_rc"] != -signal.SIGKILL:
        problems.append(f"victim {out['victim_exit']}, not SIGKILL")
    if not res["resumed_from"]:
        problems.append("the second run did not resume from a checkpoint")
    if res["steps"] != cfg.steps:
        problems.append(f"resumed run ended at step {res['steps']}, expected {cfg.steps}")
    if run.ref_result is None:
        out["comparison"] = "none: the qlora step (the reference) failed"
    else:
        out |= compare_runs(res, run.ref_result, cfg.steps, run.cuda)
        problems += out.pop("problems")
    out["failed"] = "; ".join(problems) or None
    return out


def kill_child(run: Run, spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """Start the victim, wait until it logs step kill_at (past a complete checkpoint), SIGKILL it."""
    from supportlm.runtime import describe_exit

    cfg = run.cfg
    marker = run.work / "victim.blocked"
    marker.unlink(missing_ok=True)
    t = time.perf_counter()
    victim, victim_log = spawn_child(run, spec | {"block_at": cfg.kill_at, "marker": str(marker)}, "resume_victim")
    deadline = time.monotonic() + cfg.child_timeout_s
    try:
        while not marker.exists():
            if victim.poll() is not None:
                raise RuntimeError(
                    f"the victim {describe_exit(victim.returncode)} before step {cfg.kill_at}:\n{tail(victim_log)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the victim did not reach step {cfg.kill_at} in {cfg.child_timeout_s:.0f} s")
            time.sleep(0.05)
        at_kill = complete_checkpoints(root)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    logged = sum(ln.count('"type": "train"') for p in root.glob("*/log.jsonl") for ln in p.read_text().splitlines())
    log.info("victim %s after logging step %d; complete checkpoints %s",
             describe_exit(victim.returncode), cfg.kill_at, at_kill)
    if not at_kill:
        raise RuntimeError(f"no complete checkpoint before step {cfg.kill_at}: lower --save-steps")
    killed = victim.returncode == -signal.SIGKILL
    return {
        "victim_exit": "killed by SIGKILL (sent by the check)" if killed else describe_exit(victim.returncode),
        "victim_rc": victim.returncode,
        "killed_after_step": cfg.kill_at, "checkpoints_at_kill": at_kill, "train_lines_logged_at_kill": logged,
        "victim_s": round(time.perf_counter() - t, 2),
    }


def compare_runs(res: dict[str, Any], ref: dict[str, Any], steps: int, cuda: bool) -> dict[str, Any]:
    """Resumed vs uninterrupted: losses step by step and the final lora_B weights.

    Tolerances: CPU kernels are deterministic, so the runs must agree exactly (1e-5 leaves room for
    nothing but printing). On CUDA, bf16 autocast and non-deterministic backward kernels (atomics in
    the attention backward) make two uninterrupted runs differ slightly: 2e-2 on a loss of ~10 and 5%
    relative on lora_B, or 3x the difference measured between the two uninterrupted runs up to the
    resume step (the noise floor, recorded) where that is larger. A resume that restored the wrong
    data position or optimizer state moves lora_B by O(1) relative.
    """
    from supportlm.train.trainer import CHECKPOINT_PREFIX

    tol_loss, tol_b = (2e-2, 5e-2) if cuda else (1e-5, 1e-5)
    k = res["resumed_from"] or 0
    ref_loss = {r["step"]: r["loss"] for r in ref["train_curve"]}
    got = {r["step"]: r["loss"] for r in res["train_curve"]}
    before = [abs(got[s] - ref_loss[s]) for s in got if s <= k and s in ref_loss]
    after = [abs(got[s] - ref_loss[s]) for s in got if s > k and s in ref_loss]
    ref_run, new_run = Path(ref["run_dir"]), Path(res["run_dir"])
    at_k, last = f"{CHECKPOINT_PREFIX}{k:06d}", f"{CHECKPOINT_PREFIX}{steps:06d}"
    floor = lora_b_rel_diff(new_run / at_k, ref_run / at_k) if (ref_run / at_k).exists() else None
    final = lora_b_rel_diff(new_run / last, ref_run / last)
    if cuda:
        tol_loss = max(tol_loss, 3 * max(before, default=0.0))
        tol_b = max(tol_b, 3 * (floor or 0.0))
    problems = []
    if not after or max(after) > tol_loss:
        problems.append(f"loss after resume differs by {max(after, default=math.nan):.3g} (tolerance {tol_loss})")
    if final > tol_b:
        problems.append(f"final lora_B differs by {final:.3g} relative (tolerance {tol_b})")
    return {
        "loss_max_abs_diff_before_kill": max(before, default=None),
        "loss_max_abs_diff_after_resume": max(after, default=None), "loss_tolerance": tol_loss,
        "lora_b_rel_diff_at_resume_step": floor, "lora_b_rel_diff_final": final, "lora_b_tolerance": tol_b,
        "bitwise_equal": bool(after) and max(after) == 0.0 and final == 0.0, "problems": problems,
    }


def step_merge(run: Run) -> dict[str, Any]:
    """supportlm.train.merge (bf16 on the GPU, fp32 on CPU), then one weight checked by hand."""
    from supportlm.train.merge import merge

    dtype = "bfloat16" if run.cuda else "float32"
    info = merge(run.model_dir, run.adapter_dir, run.merged_dir, dtype=dtype)
    return {**info, **check_merged_weight(run.model_dir, run.adapter_dir, run.merged_dir, dtype)}


def step_generate(run: Run) -> dict[str, Any]:
    """HFEngine.load on the merged dir (bf16 on CUDA), exactly gen_tokens new tokens at each batch size."""
    from supportlm.inference.engines import HFEngine

    t = time.perf_counter()
    engine = HFEngine.load(run.merged_dir)
    load_s = time.perf_counter() - t
    run.prompts = val_prompts(engine, run.data_dir, run.cfg)
    rows = time_generation(engine, run.prompts, run.cfg)
    param = next(engine.model.parameters())
    return {
        "rows": rows, "load_s": round(load_s, 2), "dtype": str(param.dtype).replace("torch.", ""),
        "device": str(param.device),
        "failed": None if all(r["exact_tokens"] for r in rows) else "a generation did not give exactly N tokens",
    }


def step_bnb(run: Run) -> dict[str, Any]:
    """torch_quant.load bnb_int8 / bnb_nf4 / torchao_int4 (merged model, else the base), a few tokens via HFEngine."""
    from supportlm.inference.engines import HFEngine
    from supportlm.quantize import torch_quant

    src = run.merged_dir if (run.merged_dir / "config.json").exists() else run.model_dir
    n = run.cfg.bnb_tokens
    rows = []
    for name in ("bnb_int8", "bnb_nf4", "torchao_int4"):
        row: dict[str, Any] = {"name": name, "ok": False, "ms_per_100_tokens": None}
        try:
            model, qinfo = torch_quant.load(name, src)
            engine = HFEngine(model, run.tokenizer, name=name)
            prompt = (run.prompts or val_prompts(engine, run.data_dir, run.cfg))[:1]
            engine.generate_ids(prompt, 2, 1, min_new_tokens=2)  # warm-up
            gen = engine.generate_ids(prompt, n, 1, min_new_tokens=n)[0]
            row |= {
                "ok": gen.completion_tokens == n, "new_tokens": gen.completion_tokens,
                "ms_per_100_tokens": round(gen.seconds * 1000 * 100 / max(gen.completion_tokens, 1), 1),
                "tokens_per_s": round(gen.completion_tokens / gen.seconds, 1),
                **{k: qinfo[k] for k in ("format", "device", "load_s", "size_bytes", "memory_footprint_bytes")},
            }
            del model, engine
        except torch_quant.Skip as why:
            row["skipped"] = str(why)
        except Exception as exc:  # noqa: BLE001 - the other variant still runs
            row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            log.error("%s failed:\n%s", name, traceback.format_exc())
        free_memory()
        log.info("%s: %s", name, {k: v for k, v in row.items() if k != "name"})
        rows.append(row)
    # on CPU a variant bitsandbytes cannot run is a recorded skip; on CUDA every variant must work
    bad = [r for r in rows if not r["ok"] and (run.cuda or not r.get("skipped"))]
    return {
        "rows": rows, "model": src.name,
        "failed": "; ".join(f"{r['name']}: {r.get('error') or r.get('skipped') or 'wrong token count'}" for r in bad)
        or None,
    }


def step_full_depth(run: Run) -> dict[str, Any]:
    """The full-depth model: bf16 weight memory and generation, then (time allowing) QLoRA steps."""
    from supportlm.inference.engines import HFEngine

    cfg = run.cfg
    config = model_config(cfg.dims(cfg.depth), run.tokenizer)
    t = time.perf_counter()
    model = build_model(config, run.dev, run.save_dtype, cfg.seed)
    out: dict[str, Any] = {
        "layers": cfg.depth, "params": sum(p.numel() for p in model.parameters()),
        "init_s": round(time.perf_counter() - t, 2), "weights_mem_mb": allocated_mb(),
        "weights_dtype": str(run.save_dtype).replace("torch.", ""),
    }
    engine = HFEngine(model, run.tokenizer, name=f"{cfg.shape}-full")
    out["generate"] = time_generation(engine, run.prompts or val_prompts(engine, run.data_dir, cfg), cfg)
    if cfg.full_steps <= 0 or run.elapsed() > cfg.budget_s:
        why = "full_steps=0" if cfg.full_steps <= 0 else f"time budget: {run.elapsed():.0f} s > {cfg.budget_s:.0f} s"
        out["qlora"] = {"skipped": why}
        log.warning("full-depth QLoRA skipped: %s", why)
        out["failed"] = None if cfg.full_steps <= 0 else f"full-depth QLoRA not run: {why}"
        return out
    full_dir = run.work / "full"
    t = time.perf_counter()
    save_model_dir(model, run.tokenizer, full_dir)
    out["save_s"] = round(time.perf_counter() - t, 2)
    out["size_bytes"] = sum(f.stat().st_size for f in full_dir.glob("*.safetensors"))
    del engine, model
    free_memory()
    train, lora = train_params(cfg, cfg.full_steps)
    train = train.model_copy(update={"eval_steps": 10_000, "save_steps": 10_000})  # one eval + save, at the end
    res = run_recipe(train, lora, full_dir, run.data_dir, run.work / "ckpt-full")
    out["qlora"] = _train_numbers(res, run.cuda)
    if not cfg.keep_work:
        shutil.rmtree(full_dir, ignore_errors=True)
    out["failed"] = None if res["steps"] == cfg.full_steps else f"ran {res['steps']} of {cfg.full_steps} steps"
    return out


STEPS: list[tuple[str, Callable[[Run], dict[str, Any]], tuple[str, ...]]] = [
    ("build", step_build, ()),
    ("qlora", step_qlora, ("build",)),
    ("resume", step_resume, ("build",)),
    ("merge", step_merge, ("qlora",)),
    ("generate", step_generate, ("merge",)),
    ("bnb", step_bnb, ("build",)),
    ("full_depth", step_full_depth, ("build",)),
]


def run_check(cfg: CheckConfig) -> dict[str, Any]:
    """Run every step; gpu_check.json + .md under cfg.out_dir are rewritten after each one (a run cut
    short by a timeout still leaves the steps it finished). Returns the report."""
    import torch

    from supportlm.errors import ConfigError
    from supportlm.train.trainer import resolve_device

    cuda = resolve_device().type == "cuda"
    if not cuda and cfg.shape != "tiny" and cfg.hidden is None:
        raise ConfigError(
            f"the {cfg.shape} check needs a CUDA GPU (hidden 4096 on a CPU would take hours): on CPU use --tiny, "
            "or shrink the model (--hidden 256 --intermediate 512 --heads 4 --kv-heads 2 --layers 1 ...)"
        )
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="supportlm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(cfg=cfg, work=work, cuda=cuda, info=device_info())
    shutil.rmtree(run.log_dir, ignore_errors=True)
    log.info(
        "gpu check: %s shape, %d layers (full depth %d), batch %d x %d, %d steps on %s; work dir %s",
        cfg.shape, cfg.layers, cfg.depth, cfg.batch_size, cfg.seq_len, cfg.steps, run.info.get("name", "cpu"), work,
    )
    report: dict[str, Any] = {}
    try:
        for name, fn, needs in STEPS:
            if name == "full_depth" and cfg.depth <= 0:
                continue
            run_step(run, name, fn, needs)
            if name == "bnb" and not cfg.keep_work:  # free the disk before the full-depth model is written
                for d in (run.merged_dir, run.model_dir, work / "ckpt-resume", work / "ckpt-ref"):
                    shutil.rmtree(d, ignore_errors=True)
            report = write_report(run)
    finally:
        torch.set_num_threads(threads)
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    log.info("[%6.1f s] wrote %s: %s", run.elapsed(), Path(cfg.out_dir) / "gpu_check.json",
             "every step ok" if report["ok"] else f"FAILED: {', '.join(report['failed'])}")
    return report


def write_report(run: Run) -> dict[str, Any]:
    from supportlm.lineage import write_json

    report = assemble(run)
    out_dir = Path(run.cfg.out_dir)
    write_json(out_dir / "gpu_check.json", report)
    (out_dir / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    return report


def check_merged_weight(base_dir: Path, adapter_dir: Path, merged_dir: Path, dtype: str) -> dict[str, Any]:
    """One merged projection against W + (alpha/r) * B @ A computed here in fp32 (then cast)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    ad = load_file(str(adapter_dir / "adapter_model.safetensors"))
    key_a = min(k for k in ad if k.endswith("q_proj.lora_A.weight"))
    name = key_a.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")

    def tensor(d: Path, key: str) -> torch.Tensor:
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), "pt") as fh:
                if key in fh.keys():  # noqa: SIM118 - safe_open has no __contains__
                    return fh.get_tensor(key).float()
        raise KeyError(f"{key} not in {d}")

    w = tensor(base_dir, name)
    delta = scale * ad[key_a.replace("lora_A", "lora_B")].float() @ ad[key_a].float()
    expected = (w + delta).to(getattr(torch, dtype)).float()
    got = tensor(merged_dir, name)
    err = float((got - expected).abs().max())
    # bf16: W and W + delta are each rounded once (8-bit mantissa) -> allow 2 ulps of the largest value
    tol = 1e-5 if dtype == "float32" else 2 * 2.0**-7 * float(expected.abs().max())
    changed = float((got - w).abs().max())
    return {
        "checked_weight": name, "delta_max": float(delta.abs().max()), "changed_max": changed,
        "max_abs_err": err, "tolerance": tol,
        "failed": None if err <= tol and changed > 0 else
        f"merged {name}: off by {err:.3g} (tolerance {tol:.3g}), changed by {changed:.3g}",
    }


def val_prompts(engine: Any, data_dir: Path, cfg: CheckConfig) -> list[list[int]]:
    """max(gen_batches) prompts of exactly prompt_tokens tokens (the last ones of system + user)."""
    rows = [json.loads(ln) for ln in (data_dir / "val.jsonl").read_text().splitlines() if ln.strip()]
    n = max(cfg.gen_batches)
    out = [engine.prompt_ids(r["messages"][:2], cfg.prompt_tokens) for r in (rows * n)[:n]]
    return out


def time_generation(engine: Any, prompts: list[list[int]], cfg: CheckConfig) -> list[dict[str, Any]]:
    """Per batch size: median wall time of exactly gen_tokens new tokens (prefill included)."""
    n = cfg.gen_tokens
    engine.generate_ids(prompts[:1], 4, 1, min_new_tokens=4)  # warm-up: kernels, allocator, caches
    rows = []
    for b in cfg.gen_batches:
        times, counts = [], []
        for _ in range(cfg.gen_repeats):
            gens = engine.generate_ids(prompts[:b], n, b, min_new_tokens=n)
            times.append(gens[0].seconds)
            counts += [g.completion_tokens for g in gens]
        dt = sorted(times)[len(times) // 2]
        rows.append({
            "batch": b, "new_tokens": n, "prompt_tokens": len(prompts[0]),
            "ms_per_100_tokens": round(dt * 1000 * 100 / n, 1), "tokens_per_s": round(b * n / dt, 1),
            "seconds": [round(x, 4) for x in times], "exact_tokens": all(c == n for c in counts),
        })
        log.info("generate batch %d: %s ms per 100 tokens, %s tokens/s", b, rows[-1]["ms_per_100_tokens"],
                 rows[-1]["tokens_per_s"])
    return rows


# ---------------------------------------------------------------- report


def assemble(run: Run) -> dict[str, Any]:
    """gpu_check.json: DESIGN.md's keys (device, model_shape, qlora, generate, bnb) + every step's details."""
    cfg, r, info = run.cfg, run.results, run.info
    build, q, full = r.get("build", {}), r.get("qlora", {}), r.get("full_depth", {})
    failed = [n for n, s in run.steps.items() if not s["ok"]]
    dims = cfg.dims(cfg.layers)
    return {
        "device": info.get("name") or f"cpu ({info.get('cpu')}, {info.get('cpu_cores')} cores)",
        "device_info": info,
        "versions": versions(),
        "mode": "tiny" if cfg.shape == "tiny" else "full",
        "model_shape": {
            "name": cfg.shape, "architecture": build.get("architecture"),
            **{k: v for k, v in dims.items() if k != "layers"}, "layers_timed": cfg.layers, "layers_full": cfg.depth,
            "params_timed": build.get("params"), "params_full": full.get("params"),
            "weights": "random, seeded, built from the config",
        },
        "qlora": {
            **{k: q.get(k) for k in ("tokens_per_s", "steady_tokens_per_s", "peak_vram_mb", "peak_rss_mb", "steps",
                                     "step_ms_median", "loaded_mem_mb", "precision", "first_loss", "last_loss")},
            "resumed": bool(run.steps.get("resume", {}).get("ok")),
            "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "layers": cfg.layers,
            "full_depth": full.get("qlora"),
        },
        "generate": [{**g, "layers": cfg.layers, "model": "merged (HFEngine.load)"}
                     for g in r.get("generate", {}).get("rows", [])]
        + [{**g, "layers": cfg.depth, "model": f"full depth, {full.get('weights_dtype')}"}
           for g in full.get("generate", [])],
        "bnb": r.get("bnb", {}).get("rows", []),
        "resume": r.get("resume"),
        "merge": r.get("merge"),
        "details": {k: r.get(k) for k in ("build", "qlora", "generate", "full_depth")},
        "steps": run.steps,
        "failed": failed,
        "ok": not failed,
        "wall_s": round(run.elapsed(), 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }


def markdown(rep: dict[str, Any]) -> str:
    """gpu_check.md: every step's status, then QLoRA, resume, generation and bitsandbytes numbers."""

    def f(v: Any, spec: str = ",.1f") -> str:
        return "n/a" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)

    def row(*cells: Any) -> str:
        return "| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |"

    s, q, v = rep["model_shape"], rep["qlora"], rep["versions"]
    res, full_q = rep.get("resume") or {}, q.get("full_depth") or {}
    lines = [
        "# GPU check",
        "",
        (f"{rep['device']}; torch {v['torch']} (CUDA {rep['device_info'].get('torch_cuda')}), transformers "
         f"{v['transformers']}, peft {v['peft']}, bitsandbytes {v['bitsandbytes']}. Model: {s['name']} shape "
         f"({s['architecture']}, hidden {s['hidden']}, vocab {s['vocab']}), random weights: {s['layers_timed']} "
         f"layers for the timed steps, {s['layers_full']} for the full-depth rows. Wall time {f(rep['wall_s'])} s."),
        "",
        row("step", "ok", "seconds", "peak MB", "note"),
        row("---", "---", "---", "---", "---"),
        *[row(n, "yes" if st["ok"] else "NO", f(st["seconds"]), f(st.get("peak_mem_mb"), ",.0f"),
              (st.get("error") or "")[:160]) for n, st in rep["steps"].items()],
        "",
        row("QLoRA, bf16 compute on CUDA, grad checkpointing", "layers", "steps", "tokens/s (after step 1)",
            "step ms", "peak VRAM MB"),
        row("---", "---", "---", "---", "---", "---"),
        row(f"batch {q['batch_size']} x {q['seq_len']}", q["layers"], f(q["steps"], "d"),
            f(q["steady_tokens_per_s"]), f(q["step_ms_median"]), f(q["peak_vram_mb"], ",.0f")),
    ]
    if full_q.get("steps"):
        lines.append(row(f"batch {q['batch_size']} x {q['seq_len']}", s["layers_full"], full_q["steps"],
                         f(full_q["steady_tokens_per_s"]), f(full_q["step_ms_median"]),
                         f(full_q["peak_vram_mb"], ",.0f")))
    elif full_q.get("skipped"):
        lines.append(row("full depth", s["layers_full"], "skipped", full_q["skipped"], "", ""))
    if res:
        lines += [
            "",
            (f"Kill and resume: the training child was {res.get('victim_exit', 'n/a')} after logging step "
             f"{res.get('killed_after_step')}; the next one resumed from step {res.get('resumed_from')} and ended at "
             f"{res.get('final_step')} of {res.get('total_steps')}. Loss difference to the uninterrupted run after "
             f"the resume: {f(res.get('loss_max_abs_diff_after_resume'), '.3g')} (tolerance "
             f"{f(res.get('loss_tolerance'), '.3g')}); final lora_B relative difference "
             f"{f(res.get('lora_b_rel_diff_final'), '.3g')} (tolerance {f(res.get('lora_b_tolerance'), '.3g')}; "
             f"two uninterrupted runs at the resume step: {f(res.get('lora_b_rel_diff_at_resume_step'), '.3g')})."),
        ]
    lines += [
        "",
        row("generation (greedy, exactly N new tokens)", "layers", "batch", "ms per 100 tokens", "tokens/s"),
        row("---", "---", "---", "---", "---"),
        *[row(g["model"], g["layers"], g["batch"], f(g["ms_per_100_tokens"]), f(g["tokens_per_s"]))
          for g in rep["generate"]],
        *[row(b["name"] + ("" if b["ok"] else f" ({b.get('skipped') or b.get('error') or 'wrong count'})"[:160]),
              s["layers_timed"], 1, f(b.get("ms_per_100_tokens")), f(b.get("tokens_per_s"))) for b in rep["bnb"]],
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry


def parse_args(argv: list[str] | None = None) -> tuple[CheckConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m supportlm.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized check (2-layer 64-wide Llama, seconds)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--shape", choices=sorted(SHAPES))
    for name in ("hidden", "intermediate", "heads", "kv-heads", "vocab", "layers", "full-layers", "batch-size",
                 "seq-len", "steps", "save-steps", "eval-steps", "kill-at", "gen-tokens", "gen-repeats",
                 "prompt-tokens", "bnb-tokens", "full-steps", "seed", "lora-r", "threads"):
        ap.add_argument(f"--{name}", type=int)
    ap.add_argument("--learning-rate", type=float)
    ap.add_argument("--child-timeout-s", type=float)
    ap.add_argument("--budget-s", type=float, help="skip the full-depth QLoRA steps when the run is past this")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--keep-work", action="store_true", default=None)
    ns = ap.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(CheckConfig)}
    over = {k: v for k, v in vars(ns).items() if k in fields and v is not None}
    return (CheckConfig.tiny(**over) if ns.tiny else CheckConfig(**over)), ns


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a network the device does not have
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout, force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(Exception):  # "Loading weights" bars would bury the progress lines in the device log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    cfg, ns = parse_args(argv)
    if ns.child:
        return child_main(ns.child)
    from supportlm.errors import SupportLMError

    try:
        report = run_check(cfg)
    except SupportLMError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
