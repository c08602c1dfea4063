"""Typed, validated params.yaml: one pydantic model per stage block plus a root `Params`.

Every model forbids unknown keys, so a misspelt knob fails the way nanoGPT's
"Unknown config key" does, before any stage does work. Errors name the dotted key
path, what is allowed and the value given. `load_params()` only parses: the stage
that writes a directory creates it.

It runs past the ~500-line guideline on purpose: it is the one schema of params.yaml, in the
file's order, with every default, bound and cross-field check (`supportlm params check` runs them
all); serving settings derive from `ServeParams` here rather than re-declaring it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from supportlm.errors import ConfigError

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- ingest


class SourceBase(Strict):
    name: str = Field(min_length=1)
    weight: Fraction = 1.0  # fraction of this source's rows taken (seeded sample)
    max_rows: Annotated[int, Field(gt=0)] | None = None



# ---------------------------------------------------------------- synthetic defects (ingest)

DEFECT_TYPES: tuple[str, ...] = (
    "exact_duplicate",
    "near_duplicate",
    "pii_email",
    "pii_phone",
    "pii_card",
    "markup",
    "mojibake",
    "empty_field",
    "too_long",
    "label_flip",
)
PII_TYPES: tuple[str, ...] = ("pii_email", "pii_phone", "pii_card")
# Defect families a record can carry at most one of (PII may ride along, see data/synthetic_defects.plan_defects).
EXCLUSIVE: tuple[str, ...] = (
    "exact_duplicate",
    "near_duplicate",
    "markup",
    "mojibake",
    "empty_field",
    "too_long",
    "label_flip",
)


class DefectRates(BaseModel):
    """Fraction of `n` rows that receive each defect (the count is round(rate * n))."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    exact_duplicate: float = Field(0.02, ge=0.0, le=0.2)
    near_duplicate: float = Field(0.02, ge=0.0, le=0.2)
    pii: float = Field(0.03, ge=0.0, le=0.2)  # split evenly between email / phone / card number
    markup: float = Field(0.03, ge=0.0, le=0.2)
    mojibake: float = Field(0.02, ge=0.0, le=0.2)
    empty_field: float = Field(0.01, ge=0.0, le=0.2)
    too_long: float = Field(0.005, ge=0.0, le=0.2)
    label_flip: float = Field(0.03, ge=0.0, le=0.2)

    def counts(self, n: int) -> dict[str, int]:
        """Exact number of rows per defect type for `n` rows (PII split email/phone/card)."""
        out = {name: round(getattr(self, name) * n) for name in EXCLUSIVE}
        base, extra = divmod(round(self.pii * n), 3)
        for k, name in enumerate(PII_TYPES):
            out[name] = base + (1 if k < extra else 0)
        return {name: out[name] for name in DEFECT_TYPES}


class SyntheticSource(SourceBase):
    type: Literal["synthetic"]
    rows: Annotated[int, Field(gt=0, le=5_000_000)] = 12_600
    kinds: dict[Literal["qa", "conversation", "ticket"], Probability] = {
        "qa": 0.7,
        "conversation": 0.15,
        "ticket": 0.15,
    }
    defects: DefectRates = DefectRates()


class BitextSource(SourceBase):
    """Bitext CSV: the 27K schema (flags,instruction,category,intent,response) or the sample's."""

    type: Literal["bitext"]
    path: str


class ColumnMap(Strict):
    """Which column holds what in a generic table (Kaggle-style ticket dumps)."""

    instruction: str
    response: str
    intent: str
    category: str | None = None  # derived from the intent when absent
    id: str | None = None
    conversation_id: str | None = None  # rows sharing it never cross splits


class TableSource(SourceBase):
    type: Literal["jsonl", "csv"]
    path: str
    columns: ColumnMap
    kind: Literal["qa", "conversation", "ticket"] = "qa"
    encoding: str = "utf-8"  # latin-1 / cp1252 exports: set it here


class HFSource(SourceBase):
    """HF `datasets`: a hub id (online only) or a local dataset dir / data file (offline)."""

    type: Literal["hf"]
    dataset: str
    split: str = "train"
    revision: str | None = None
    columns: ColumnMap


Source = Annotated[
    SyntheticSource | BitextSource | TableSource | HFSource, Field(discriminator="type")
]


class IngestParams(Strict):
    seed: int = 42
    sources: list[Source] = Field(min_length=1)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return sources


# ---------------------------------------------------------------- clean


class DedupParams(Strict):
    near_threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.9  # MinHash Jaccard; lower = more removed
    num_perm: Annotated[int, Field(ge=16, le=1024)] = 128  # more = more exact estimate, slower
    shingle_words: Annotated[int, Field(ge=1, le=10)] = 3


class LabelParams(Strict):
    enabled: bool = True  # needs the optional `labels` extra (cleanlab, AGPL-3.0)
    action: Literal["flag", "drop", "relabel"] = "flag"
    folds: Annotated[int, Field(ge=2, le=20)] = 5


class CleanParams(Strict):
    seed: int = 42
    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    strip_markup: bool = True
    mask_pii: bool = True
    max_tokens: Annotated[int, Field(ge=16)] = 1024  # whole example; longer rows are quarantined
    dedup: DedupParams = DedupParams()
    labels: LabelParams = LabelParams()


# ---------------------------------------------------------------- split


class SplitParams(Strict):
    seed: int = 42
    train: Fraction = 0.8
    val: Fraction = 0.1
    test: Fraction = 0.1
    group_threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.8  # near-dups above it share a split

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split.train + split.val + split.test must be 1.0. Given: "
                f"{self.train} + {self.val} + {self.test} = {total:g}"
            )
        return self


# ---------------------------------------------------------------- base model / format / quality


class BaseModelParams(Strict):
    base: str = "bundled:smollm2-135m-instruct"  # or a local HF dir, or a hub id (online)
    gguf_file: str | None = None  # for a local dir holding a .gguf
    revision: str | None = None  # hub ids: a commit sha (the presets in train/base_model.py carry theirs)
    chat_template: str | None = None  # a Jinja file instead of the model's own (template-less models get one)


class FormatParams(Strict):
    system_prompt: str = Field(
        default=(
            "You are a helpful, concise customer-support assistant. Keep placeholders "
            "such as {{Order Number}} exactly as written."
        ),
        min_length=1,
    )
    max_length: Annotated[int, Field(ge=32, le=32768)] = 512  # tokens; longer examples are truncated


class QualityParams(Strict):
    drift_alert: Annotated[float, Field(gt=0, le=1)] = 0.1  # Jensen-Shannon distance that counts as drift
    top_confusions: Annotated[int, Field(ge=1, le=100)] = 10


# ---------------------------------------------------------------- train


class LoraParams(Strict):
    """Top-level `lora:` block so `dvc exp run -S lora.r=32` works."""

    r: Annotated[int, Field(ge=1, le=1024)] = 16  # higher = more capacity, more memory
    alpha: Annotated[float, Field(gt=0)] = 32  # usually 2 x r
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    # auto = every attention + MLP projection of the architecture (llama/mistral/gemma/qwen: q,k,v,o,
    # gate,up,down); an explicit list is checked against the model's module names before training
    target_modules: Literal["auto"] | Annotated[list[str], Field(min_length=1)] = "auto"


class QuantParams(Strict):
    """bitsandbytes 4-bit base for QLoRA (train.method=qlora)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True  # quantize the quantization constants too: ~0.4 bit/param saved
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto = the train precision


class EarlyStopping(Strict):
    patience: Annotated[int, Field(ge=1)] = 3  # evaluations without improvement before stopping
    min_delta: Annotated[float, Field(ge=0)] = 0.0  # an eval must beat the best val loss by more than this


class TrainParams(Strict):
    """The `train:` block. CPU defaults fit the whole stage in ~8-9 min on 2 idle cores (SmolLM2-135M, r=16):
    320 rows x ~188 tokens = 60K tokens / ~170 useful tok/s = ~6 min of steps, + 5 evals of 32 val rows
    (~17 s each), + one padded baseline step (~25 s), + load/MLflow (~30 s). GPU hosts: profiles/gpu.yaml.
    """

    seed: int = 42
    method: Literal["lora", "qlora"] = "lora"  # qlora = 4-bit base (bitsandbytes): ~4x less base memory, slower
    quant: QuantParams = QuantParams()
    train_rows: Annotated[int, Field(ge=1)] | None = 320  # seeded subset of the train split (CPU budget); None = all
    val_rows: Annotated[int, Field(ge=1)] | None = 32  # seeded val subset: base loss + every eval use the same rows
    max_length: Annotated[int, Field(ge=32, le=32768)] = 512  # tokens per example; longer ones are truncated
    # grouped = length-grouped batches padded to their longest row (default); packed = examples laid end to
    # end in max_length rows (block-diagonal attention via position_ids); padded = naive, pad to max_length
    batching: Literal["grouped", "packed", "padded"] = "grouped"
    epochs: Annotated[float, Field(gt=0)] = 1.0  # 320 rows / (4 x 2) = 40 optimizer steps
    max_steps: Annotated[int, Field(ge=-1)] = -1  # > 0 overrides epochs
    batch_size: Annotated[int, Field(ge=1)] = 4  # rows per micro-batch (packed: rows of max_length tokens)
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = 2  # effective batch = 4 x 2 = 8 rows/step
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-4  # short CPU run; 2e-4 for long (GPU) runs
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.05  # of the total steps (40 -> 2 warmup steps)
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] | None = 1.0  # clip; None = no clipping (norm still logged)
    gradient_checkpointing: bool = False  # recompute activations in backward: far less memory, ~30% slower
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto = bf16 (CUDA, Ampere+), fp16 (older), fp32 (CPU)
    eval_steps: Annotated[int, Field(ge=1)] = 10  # optimizer steps between val evaluations (and the last step)
    save_steps: Annotated[int, Field(ge=1)] = 10  # optimizer steps between checkpoints (a new best is always saved)
    save_total_limit: Annotated[int, Field(ge=1)] = 2  # newest checkpoints kept, plus the best one
    early_stopping: EarlyStopping = EarlyStopping()
    tracking: Literal["mlflow", "wandb", "none"] = "mlflow"
    baseline_steps: Annotated[int, Field(ge=0)] = 1  # optimizer steps of naive padded batching (speed ratio); 0 = skip
    # processes training together (one per GPU; gloo processes on a CPU-only host). Each step's
    # gradient_accumulation_steps micro-batches are dealt out to them, so the run does not depend on the count
    num_processes: Annotated[int, Field(ge=1)] = 1
    # how several processes hold the model: ddp keeps a whole copy in each and averages the adapters'
    # gradients; fsdp (torch FSDP2, each decoder layer sharded) splits every weight across them, so a base
    # too large for one GPU fits. Same trajectory either way (tested on 2 gloo processes)
    strategy: Literal["ddp", "fsdp"] = "ddp"

    @model_validator(mode="after")
    def _every_process_gets_a_micro_batch(self) -> TrainParams:
        if self.num_processes > self.gradient_accumulation_steps:
            raise ValueError(
                f"train.num_processes ({self.num_processes}) > train.gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}): a step's micro-batches are shared out to the processes, "
                "so each needs at least one; raise gradient_accumulation_steps (the global batch is "
                "batch_size x gradient_accumulation_steps rows whatever the process count)"
            )
        if self.strategy == "fsdp" and self.gradient_accumulation_steps % self.num_processes:
            raise ValueError(
                f"train.strategy=fsdp needs train.gradient_accumulation_steps ({self.gradient_accumulation_steps}) "
                f"to be a multiple of train.num_processes ({self.num_processes}): FSDP gathers each layer's "
                "weights from every process for every forward pass, so all processes must run the same number"
            )
        if self.strategy == "fsdp" and self.method == "qlora":
            raise ValueError(
                "train.strategy=fsdp with train.method=qlora is not supported: sharding bitsandbytes 4-bit weights "
                "needs bnb_4bit_quant_storage set to the compute dtype and CUDA, and was not tested here; use "
                "strategy: ddp (the 4-bit base is replicated, ~5 GB per GPU for 7B) or method: lora"
            )
        return self


# ---------------------------------------------------------------- merge / evaluate / quantize


class MergeParams(Strict):
    """Fold the LoRA adapter into the base weights (models/merged): one plain HF model for eval + GGUF."""

    # fp32 on CPU (135M: 0.54 GB, exact merge); bfloat16 halves the files for 7B (the GGUF export reads
    # it as is); a QLoRA adapter is always merged into the de-quantized base, never the 4-bit one
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_shard_size: str = "2GB"  # safetensors shard size; smaller = more files, less peak RAM when loading


class EvaluateParams(Strict):
    """Base vs fine-tuned on a seeded, intent-stratified sample of the test split."""

    seed: int = 42
    # 2 models x (rows x max_new_tokens decode + rows x ~170 tokens perplexity) is the CPU time:
    # 64 rows x 112 tokens = ~5 min on 2 idle cores; more rows = tighter per-intent numbers (27 intents)
    sample_rows: Annotated[int, Field(ge=1)] | None = 64  # None = the whole test split (GPU host)
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 112  # reference replies: ~80 words = ~110 tokens
    batch_size: Annotated[int, Field(ge=1)] = 16  # left-padded generation batch; larger = faster, more RAM
    max_prompt_tokens: Annotated[int, Field(ge=16)] = 768  # longer prompts keep their last tokens
    examples: Annotated[int, Field(ge=0, le=50)] = 5  # side-by-side examples in reports/eval.md
    repetition_ngram: Annotated[int, Field(ge=1, le=8)] = 3  # n of the repeated-n-gram rate
    degenerate_repetition: Annotated[float, Field(gt=0, le=1)] = 0.5  # repeated-n-gram rate that counts as degenerate
    classifier_rows: Annotated[int, Field(ge=50)] | None = None  # train rows for the intent classifier; None = all
    human_eval_rows: Annotated[int, Field(ge=0)] = 40  # rows in the blind A/B sheet (0 = no sheet)
    # torch CPU threads; None = auto: the cores other processes leave idle (all on an idle box, 1 on a
    # busy 2-core one, where 2 threads made each decode step ~20x slower: see inference.threads.resolve_threads)
    threads: Annotated[int, Field(ge=1)] | None = None


class ImatrixParams(Strict):
    """Calibrated variants: llama-imatrix on the training replies, then llama-quantize --imatrix per type."""

    # each becomes variant `<type>-imat` beside the uncalibrated ones; [] = no importance matrix
    types: list[Literal["q4_k_m", "q4_0", "iq4_nl", "iq4_xs", "q5_k_m", "q3_k_m", "q2_k"]] = [
        "q4_k_m",
        "q4_0",
        "iq4_nl",  # non-linear 4-bit, 32-value blocks: fits SmolLM2's 576-wide rows (iq4_xs needs 256)
    ]
    chunks: Annotated[int, Field(ge=1)] = 64  # windows of `ctx` tokens of the training replies (~32K tokens)
    ctx: Annotated[int, Field(ge=64)] = 512


class KldParams(Strict):
    """llama-perplexity --kl-divergence of every GGUF variant against f16 on held-out test replies."""

    chunks: Annotated[int, Field(ge=1)] = 12  # each scores ctx/2 tokens; f16's log-probs take ~100 KB per token
    ctx: Annotated[int, Field(ge=64)] = 512

    @model_validator(mode="after")
    def _enough(self) -> KldParams:
        scored = self.chunks * (self.ctx - 1 - self.ctx // 2)
        if scored < 100:
            raise ValueError(f"quantize.kld scores {scored} tokens (chunks x (ctx/2 - 1)); llama-perplexity prints "
                             "no KL-divergence statistics under 100: raise chunks or ctx")  # fmt: skip
        return self


class QuantizeParams(Strict):
    """GGUF (llama.cpp) and torch (bitsandbytes / torchao) variants of models/merged, scored on one test slice."""

    seed: int = 42
    gguf_types: list[Literal["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k", "iq4_nl", "iq4_xs"]] = [
        "q8_0",  # ~8.5 bit/weight: near-lossless
        "q4_k_m",  # ~4.8 bit/weight: the usual serving default
        "q4_0",  # ~4.5 bit/weight: simplest 4-bit, fastest on old CPUs, a bit less accurate
    ]
    imatrix: ImatrixParams = ImatrixParams()
    kld: KldParams = KldParams()
    # llama-lookup-create on the training replies -> models/gguf/lookup-static.bin, and llama-lookup-stats'
    # draft acceptance on held-out replies; the bench measures what serving with it buys
    lookup_cache: bool = True
    # torchao_int4 needs CUDA (skipped with the reason recorded on CPU); bitsandbytes int8 and nf4 run on CPU
    # in 0.50 (~1 min each here, slower per token than llama.cpp); drop them from the list to save that time.
    # (GPTQ was replaced by torchao_int4: gptqmodel needs nvcc to install; see torch_quant.py)
    torch_variants: list[Literal["bnb_int8", "bnb_nf4", "torchao_int4"]] = ["bnb_int8", "bnb_nf4", "torchao_int4"]
    # GGUF variants (fast) are scored on eval_rows, the HF fp32 reference and torch variants (slow on CPU) on the
    # first reference_rows of the same sample; each is compared with f16 on the rows both answered
    eval_rows: Annotated[int, Field(ge=2)] = 128
    reference_rows: Annotated[int, Field(ge=2)] = 32
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    speed_prompts: Annotated[int, Field(ge=1)] = 2  # HF variants: decode tok/s = median over this many prompts
    n_ctx: Annotated[int, Field(ge=128)] = 1024  # llama.cpp context; must hold prompt + reply
    threads: Annotated[int, Field(ge=1)] | None = None  # torch + llama.cpp; None = auto (as evaluate.threads)
    size_reduction_target: Annotated[float, Field(gt=0, lt=1)] = 0.5  # the served variant vs f16
    # the serving rule's gate (supportlm.quantize.select): a variant is eligible when its ROUGE-L interval
    # vs f16 lies above -this many points (0-100 scale)
    rouge_drop_target: Annotated[float, Field(ge=0)] = 2.0
    speed_tie: Annotated[float, Field(ge=0, lt=1)] = 0.05  # eligible variants this close to the fastest tie

    @model_validator(mode="after")
    def _rows(self) -> QuantizeParams:
        if self.reference_rows > self.eval_rows:
            raise ValueError(f"quantize.reference_rows ({self.reference_rows}) must be <= quantize.eval_rows "
                             f"({self.eval_rows}): the reference rows are the first of the eval slice")  # fmt: skip
        return self


# ---------------------------------------------------------------- serve
# The one schema of the serving settings: supportlm.serve.settings.ServeSettings *is* a ServeParams plus the
# secrets (API keys, the engine's key, the Redis URL), which live in env/files only, never here. Every
# default, bound and cross-field check is below; env SUPPORTLM_<BLOCK>_<KEY> (SUPPORTLM_<KEY> for a top-level
# key) overrides `serve.<block>.<key>`, the name generated from these models (serve.settings.env_names).


class ServeEngineParams(Strict):
    kind: Literal["llamacpp", "tgi", "vllm", "openai"] = "llamacpp"  # llamacpp = embedded llama-server
    url: str | None = None  # external engine (TGI/vLLM); None = `supportlm serve` starts llama-server itself
    # a command serve() starts and supervises instead of llama-server; {host} {port} {model} {ctx} {parallel}
    # {threads} filled in
    cmd: str | None = None
    model: str | None = None  # model name sent upstream; None = the kind's default / vLLM's /v1/models
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8081
    # the whole upstream call (non-streamed) / the longest gap between stream chunks -> 504
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    start_timeout_s: Annotated[float, Field(gt=0)] = 180.0  # model load before serve() gives up
    health_interval_s: Annotated[float, Field(gt=0)] = 2.0  # readiness probe period
    retry_after_s: Annotated[int, Field(ge=1)] = 2  # Retry-After while the engine is down
    restart_backoff_s: Annotated[float, Field(gt=0)] = 1.0  # doubles per crash ...
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0  # ... up to this
    max_restarts: Annotated[int, Field(ge=0)] = 5  # consecutive restarts that die within a minute, then stop

    @model_validator(mode="after")
    def _startable(self) -> ServeEngineParams:
        if self.kind != "llamacpp" and not (self.url or self.cmd):
            raise ValueError(
                f"serve.engine.kind={self.kind} needs serve.engine.url (SUPPORTLM_ENGINE_URL: an engine you "
                "run) or serve.engine.cmd (SUPPORTLM_ENGINE_CMD: a command serve() starts); only llamacpp is "
                "started by default"
            )
        return self


class ServeModelParams(Strict):
    path: Path = Path("models/gguf/model-served.gguf")  # the variant the quantize stage's rule chose
    fallback_bundled: bool = True  # serve the bundled SmolLM2 GGUF when `path` is absent (said in /readyz)
    served_name: str = "supportlm"  # `model` in responses; requests may name it or omit it


class ServeLlamaParams(Strict):
    server_bin: Path | None = None  # None = supportlm.llamacpp.tool("llama-server") (built once, cached)
    threads: Annotated[int, Field(ge=1)] | None = None  # None = all cores
    ctx_size: Annotated[int, Field(ge=128)] = 2048  # tokens per slot; llama-server gets ctx_size x parallel
    parallel: Annotated[int, Field(ge=1, le=256)] = 4  # slots decoded together: more throughput, slower each
    batch_size: Annotated[int, Field(ge=1)] = 512  # -b: prompt tokens per decode call
    ubatch_size: Annotated[int, Field(ge=1)] = 512  # -ub: <= batch_size; lower = less memory
    # lookup decoding: draft from the n-gram cache of the training replies beside the model file
    # (lookup-static.bin, the quantize stage's) with --spec-type ngram-cache; the bench measures what it buys
    lookup_cache: bool = False
    extra_args: list[str] = []  # appended verbatim (a JSON list in env)

    @model_validator(mode="after")
    def _ubatch(self) -> ServeLlamaParams:
        if self.ubatch_size > self.batch_size:
            raise ValueError(
                f"serve.llama.ubatch_size ({self.ubatch_size}) must be <= serve.llama.batch_size "
                f"({self.batch_size}): the physical batch is a slice of the logical one"
            )
        return self


class ServeLimitsParams(Strict):
    max_concurrency: Annotated[int, Field(ge=1)] = 8  # requests in the engine at once (>= llama.parallel)
    max_queue: Annotated[int, Field(ge=0)] = 32  # waiting beyond that -> 503 + Retry-After
    queue_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    rate_per_s: Annotated[float, Field(ge=0)] = 2.0  # token-bucket refill per API key (requests/s)
    burst: Annotated[int, Field(ge=1)] = 20  # bucket size per key
    max_body_bytes: Annotated[int, Field(ge=1024)] = 262144  # 413 above this
    max_prompt_chars: Annotated[int, Field(ge=1)] = 8000  # all message contents together (~4 chars/token)
    max_tokens: Annotated[int, Field(ge=1)] = 2048  # upper bound of max_tokens (the context size)
    default_max_tokens: Annotated[int, Field(ge=1)] = 256  # when a request gives none; <= max_tokens
    max_messages: Annotated[int, Field(ge=1)] = 64
    # fair sharing between keys (supportlm.serve.scheduler): a key alone may hold per_key_concurrency slots
    # (null = all: work-conserving); while several keys are busy each holds max_concurrency // busy keys
    per_key_concurrency: Annotated[int, Field(ge=1)] | None = None
    # waiting places one key may take; a full queue sheds the key with the most waiting
    per_key_queue: Annotated[int, Field(ge=1)] = 8
    fair_window_s: Annotated[float, Field(ge=0)] = 10.0  # a key counts as busy this long after its last one
    # slots each key may hold while other keys are busy; null = an equal split (max_concurrency // busy keys)
    shared_concurrency: Annotated[int, Field(ge=1)] | None = None
    # token budget per key: prompt estimate (chars/4) + max_tokens charged up front, unused tokens refunded
    token_rate_per_s: Annotated[float, Field(gt=0)] | None = 1000.0  # refill; null = no token budget
    token_burst: Annotated[int, Field(ge=1)] = 65536  # bucket size: >= prompt + max_tokens of the largest
    # failed authentications per client address: 429 once spent, and only the first one a minute is logged
    auth_fail_burst: Annotated[int, Field(ge=1)] = 20
    auth_fail_rate_per_s: Annotated[float, Field(gt=0)] = 0.2
    min_key_length: Annotated[int, Field(ge=1)] = 16  # shorter API keys are refused at startup
    # slow clients: a stream write that waits longer than send_timeout_s, or a stream older than max_stream_s, ends
    send_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # a refused request (rate, token budget, full queue, failed-auth throttle) is answered after
    # min(refusal_delay_s, Retry-After): a client that ignores Retry-After cannot spin (nginx limit_req delays too)
    refusal_delay_s: Annotated[float, Field(ge=0, le=10)] = 1.0
    max_stream_s: Annotated[float, Field(gt=0)] = 600.0
    max_connections: Annotated[int, Field(ge=1)] = 512  # uvicorn limit_concurrency: 503 beyond it
    keep_alive_s: Annotated[float, Field(gt=0)] = 5.0  # idle keep-alive connections are closed after this
    # where the request-rate, token and failed-auth buckets live: memory (this process) | redis (shared by
    # replicas; in-flight caps stay per replica). The Redis URL may hold a password: it is a secret, given
    # in env SUPPORTLM_LIMITS_REDIS_URL only
    backend: Literal["memory", "redis"] = "memory"

    @model_validator(mode="after")
    def _affordable(self) -> ServeLimitsParams:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"serve.limits.default_max_tokens ({self.default_max_tokens}) must be <= "
                f"serve.limits.max_tokens ({self.max_tokens}); lower the default or raise max_tokens"
            )
        if self.token_rate_per_s is not None and self.token_burst < self.max_tokens:
            raise ValueError(
                f"serve.limits.token_burst ({self.token_burst}) must be >= serve.limits.max_tokens "
                f"({self.max_tokens}): a request allowed max_tokens could never be afforded; raise "
                "token_burst or set token_rate_per_s: null (no token budget)"
            )
        return self


class ServeLogParams(Strict):
    file: Path | None = None  # JSON request log (size-rotated); stdout gets it too unless stdout: false
    max_bytes: Annotated[int, Field(ge=1024)] = 10485760
    backups: Annotated[int, Field(ge=0)] = 5
    prompts: bool = False  # log prompts/replies, PII-masked
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    stdout: bool = True  # the request log on stdout


class ServeParams(Strict):
    host: str = "127.0.0.1"  # 0.0.0.0 in containers
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    drain_timeout_s: Annotated[float, Field(gt=0)] = 30.0  # SIGTERM: in-flight requests get this long
    # the operator's system message: always first; a client's system text follows it
    system_prompt: str | None = None
    docs: bool = False  # /docs and /redoc (their JS loads from a CDN); /openapi.json is always served
    engine: ServeEngineParams = ServeEngineParams()
    model: ServeModelParams = ServeModelParams()
    llama: ServeLlamaParams = ServeLlamaParams()
    limits: ServeLimitsParams = ServeLimitsParams()
    log: ServeLogParams = ServeLogParams()


# ---------------------------------------------------------------- bench / report


class BenchTargets(Strict):
    """Goals marked met/missed in reports/bench.json. The first three are the seed's (7B on a GPU host)."""

    ms_per_100_tokens: Annotated[float, Field(gt=0)] = 500.0  # gateway, concurrency 1, p50: below this
    rps: Annotated[float, Field(gt=0)] = 10.0  # gateway, best level: above this
    size_reduction: Annotated[float, Field(gt=0, lt=1)] = 0.5  # primary variant vs f16: above this
    gateway_overhead: Annotated[float, Field(ge=0)] = 0.05  # gateway vs engine p50 latency at concurrency 1
    batch_speedup: Annotated[float, Field(gt=0)] = 2.0  # tokens/s at concurrency 8 vs 1 (gateway)
    bandwidth_fraction: Annotated[float, Field(gt=0, le=1)] = 0.7  # decode tok/s vs the copy-bandwidth bound
    # fixed work at the top bench.fixed level: gateway tokens/s over engine-direct tokens/s, at least this
    gateway_throughput_ratio: Annotated[float, Field(gt=0, le=1)] = 0.95


class BenchTuningParams(Strict):
    """engine_tuning: what each llama.cpp knob buys on this box (llama-bench + short llama-server runs)."""

    enabled: bool = True  # ~1.5 min on 2 cores; false skips it (bench.md then has no tuning table)
    threads: list[Annotated[int, Field(ge=1)]] = [1, 2]  # decode threads tried (llama-bench tg)
    ubatch: list[Annotated[int, Field(ge=1)]] = [128, 512]  # prompt-processing ubatch sizes tried (llama-bench pp)
    # llama-server --spec-type values tried against `none` (no draft model needed: n-gram lookup)
    spec_types: list[str] = ["ngram-simple", "ngram-cache"]
    requests: Annotated[int, Field(ge=1)] = 6  # greedy requests per server config (same prompts for each)


class BenchFixedParams(Strict):
    """bench/fixed_load.py: identical work through the gateway and straight at the engine (fixed prompts,
    exactly max_new_tokens per reply via ignore_eos), in interleaved round pairs: the gateway's cost."""

    enabled: bool = True  # managed llama.cpp only (an external engine may not honour ignore_eos)
    levels: list[Annotated[int, Field(ge=1)]] = [1, 8]  # users; 1 = the latency figure, the top = the ratio
    pairs: Annotated[int, Field(ge=1)] = 8  # engine/gateway round pairs per level (ABBA order)
    requests_per_user: Annotated[int, Field(ge=1)] = 4  # per round
    prompts: Annotated[int, Field(ge=1)] = 8  # the first N of the bench's seeded prompt sample
    profile: bool = True  # py-spy samples the gateway over one more round at the top level
    profile_rate_hz: Annotated[int, Field(ge=1, le=1000)] = 200


class BenchParams(Strict):
    """Headless Locust against the gateway and the engine directly, plus the bandwidth bound."""

    seed: int = 42
    # the variant swept over every concurrency level: `served` = the quantize stage's rule (models/gguf/served.json)
    primary: str = "served"
    # other models/gguf/model-<name>.gguf variants, each measured at `variant_concurrency` (missing = skipped)
    variants: list[str] = ["q8_0", "q4_0", "f16"]
    concurrency: list[Annotated[int, Field(ge=1)]] = [1, 4, 8, 16]  # Locust users per level (gateway)
    engine_concurrency: list[Annotated[int, Field(ge=1)]] = [1, 8]  # engine direct: gateway overhead
    variant_concurrency: list[Annotated[int, Field(ge=1)]] = [1, 8]
    level_seconds: Annotated[float, Field(gt=0, le=600)] = 20.0  # Locust run time per level
    variant_seconds: Annotated[float, Field(gt=0, le=600)] = 12.0
    stop_timeout_s: Annotated[float, Field(gt=0)] = 60.0  # in-flight requests finish after the run time
    warmup_requests: Annotated[int, Field(ge=0)] = 3
    # interleaved engine/gateway pairs of the Locust prompts, ~2.5 s each (0 = skip; bench.fixed measures the
    # same overhead with fixed output lengths and wins in the targets)
    overhead_pairs: Annotated[int, Field(ge=0)] = 0
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 100
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0  # greedy: both targets do the same work per prompt
    prompts: Annotated[int, Field(ge=1)] = 200  # seeded sample of the test split (conversation up to last user turn)
    threads: Annotated[int, Field(ge=1)] | None = None  # llama.cpp threads; None = serve.llama.threads
    bandwidth_mb: Annotated[int, Field(ge=16)] = 256  # numpy copy buffer; >> L3 so DRAM is measured
    bandwidth_repeats: Annotated[int, Field(ge=1)] = 10  # best of N: a neighbour's job only ever slows a copy down
    decode_tokens: Annotated[int, Field(ge=8)] = 64  # llama-bench -p 0 -n N (single-stream decode)
    decode_repeats: Annotated[int, Field(ge=1)] = 3
    fallback_bundled: bool = True  # no models/gguf yet: bundled SmolLM2 GGUF + llama-quantize'd copies
    tuning: BenchTuningParams = BenchTuningParams()
    fixed: BenchFixedParams = BenchFixedParams()
    targets: BenchTargets = BenchTargets()

    @model_validator(mode="after")
    def _levels(self) -> BenchParams:
        if 1 not in self.concurrency or 1 not in self.engine_concurrency:
            raise ValueError(
                "bench.concurrency and bench.engine_concurrency must both include 1 (single stream: latency "
                f"target, gateway overhead). Given: {self.concurrency}, {self.engine_concurrency}"
            )
        return self


class FairnessParams(Strict):
    """`fairness` stage: one abusive and one polite API key through the gateway and llama-server."""

    seconds: Annotated[float, Field(gt=0, le=600)] = 60.0  # the polite key's phases (alone, under the flood)
    short_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0  # throughput phases and the unfair stack
    abuser_clients: Annotated[int, Field(ge=1, le=256)] = 48  # connections at full speed; > max_concurrency + max_queue
    abuser_max_tokens: Annotated[int, Field(ge=1)] = 512
    abuser_retry_s: Annotated[float, Field(ge=0)] = 0.25  # a refused abuser request is retried after this
    polite_rps: Annotated[float, Field(gt=0, le=10)] = 1.0
    polite_max_tokens: Annotated[int, Field(ge=1)] = 32
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    p95_ratio_target: Annotated[float, Field(gt=1)] = 3.0  # polite p95 under the flood vs alone: at most this


class ReportParams(Strict):
    """reports/index.{md,html}: rendered from the stages' JSON files only."""

    title: str = "supportlm pipeline report"
    embed_images: bool = True  # index.html carries plots as data URIs (one self-contained file)
    max_rows: Annotated[int, Field(ge=1)] = 20  # longest table (sweep trials, bench runs) before truncating


SweepValue = bool | int | float | str | None


class SweepParams(Strict):
    """`make sweep`: one `dvc exp run --queue -S ...` per trial over train/lora keys, then `--run-all`.

    Every trial key must be a `train.*` or `lora.*` key; each trial's values are validated against the
    train/lora models before anything is queued (a typo fails the sweep, not trial 5).
    """

    method: Literal["grid", "random"] = "random"  # grid = every combination; random = `trials` seeded draws
    trials: Annotated[int, Field(ge=1, le=200)] = 6  # random only (grid runs the whole product)
    seed: int = 42
    jobs: Annotated[int, Field(ge=1, le=32)] = 1  # queue workers; 1 on a 2-core box (trials share the cores)
    timeout_s: Annotated[float, Field(gt=0)] = 3600.0  # the whole `--run-all`; the rest is marked timed out
    space: Annotated[dict[str, Annotated[list[SweepValue], Field(min_length=1)]], Field(min_length=1)] = {
        "train.learning_rate": [0.0002, 0.0005, 0.001],
        "train.lr_scheduler": ["cosine", "linear", "constant_with_warmup"],
        "train.batch_size": [2, 4],
        "lora.r": [8, 16, 32],
        "lora.alpha": [16, 32, 64],
        "train.epochs": [1.0, 2.0],
    }
    fixed: dict[str, SweepValue] = {}  # applied to every trial (a shorter run so the sweep fits its budget)

    @model_validator(mode="after")
    def _keys(self) -> SweepParams:
        for where, keys in (("space", self.space), ("fixed", self.fixed)):
            for key in keys:
                block, _, rest = key.partition(".")
                if block not in ("train", "lora") or not rest:
                    raise ValueError(
                        f"sweep.{where}: `{key}` is not a train.* or lora.* key (only the train stage is swept)"
                    )
        overlap = sorted(set(self.space) & set(self.fixed))
        if overlap:
            raise ValueError(f"sweep: {overlap} both searched (space) and fixed; keep each key in one place")
        return self


class Params(Strict):
    profile: str = "cpu"
    ingest: IngestParams
    clean: CleanParams = CleanParams()
    split: SplitParams = SplitParams()
    base_model: BaseModelParams = BaseModelParams()
    format: FormatParams = FormatParams()
    quality: QualityParams = QualityParams()
    train: TrainParams = TrainParams()
    lora: LoraParams = LoraParams()
    serve: ServeParams = ServeParams()
    merge: MergeParams = MergeParams()
    evaluate: EvaluateParams = EvaluateParams()
    quantize: QuantizeParams = QuantizeParams()
    bench: BenchParams = BenchParams()
    fairness: FairnessParams = FairnessParams()
    report: ReportParams = ReportParams()
    sweep: SweepParams = SweepParams()


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid value(s)"]
    for err in exc.errors()[:10]:
        # drop pydantic's union/discriminator tags ("synthetic", "function-after[...]") from the path
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        path = ".".join(loc) or "(root)"
        given = err.get("input")
        given_s = repr(given)
        if len(given_s) > 80:
            given_s = given_s[:77] + "..."
        if err["type"] == "extra_forbidden":
            lines.append(f"  - `{path}`: unknown key (typo? see params.yaml comments for allowed keys)")
        elif err["type"] == "value_error" and isinstance(given, dict):  # a cross-field check: its message names the keys
            lines.append(f"  - `{path}`: {str(err['msg']).removeprefix('Value error, ')}")
        else:
            lines.append(f"  - `{path}`: {err['msg']}. Given: {given_s}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise ConfigError naming every bad key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of stage blocks, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run from the project root, or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw or {}, str(path))
