"""Typed, validated params.yaml: one pydantic model per stage block plus a root `Params`.

Every model forbids unknown keys, so a misspelt knob fails the way nanoGPT's
"Unknown config key" does, before any stage does work. Errors name the dotted key
path, what is allowed and the value given. `load_params()` only parses: the stage
that writes a directory creates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from supportlm.data.synthetic import DefectRates
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
    target_modules: Literal["auto"] | list[str] = "auto"  # auto = all attention + MLP projections


class QuantParams(Strict):
    """bitsandbytes 4-bit base for QLoRA."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class EarlyStopping(Strict):
    patience: Annotated[int, Field(ge=1)] = 3  # evaluations without improvement before stopping
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class TrainParams(Strict):
    seed: int = 42
    method: Literal["lora", "qlora"] = "lora"
    quant: QuantParams = QuantParams()
    train_rows: Annotated[int, Field(ge=1)] | None = None  # subset of the train split (CPU budget); None = all
    val_rows: Annotated[int, Field(ge=1)] | None = 200  # val subset for the periodic eval
    max_length: Annotated[int, Field(ge=32, le=32768)] = 512
    packing: bool = True  # pack examples into full-length rows: little padding waste
    epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: Annotated[int, Field(ge=1)] = 4
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = 2  # effective batch = batch_size x this
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-4
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.05
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    gradient_checkpointing: bool = False  # saves activation memory, costs ~30% speed
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    eval_steps: Annotated[int, Field(ge=1)] = 20
    save_steps: Annotated[int, Field(ge=1)] = 20
    save_total_limit: Annotated[int, Field(ge=1)] = 2
    early_stopping: EarlyStopping = EarlyStopping()
    tracking: Literal["mlflow", "wandb", "none"] = "mlflow"
    baseline_steps: Annotated[int, Field(ge=0)] = 4  # naive padded baseline steps for the speed ratio

    @model_validator(mode="after")
    def _checkpoints_align(self) -> TrainParams:
        if self.save_steps % self.eval_steps:
            raise ValueError(
                f"train.save_steps must be a multiple of train.eval_steps (best-checkpoint tracking). "
                f"Given: save_steps={self.save_steps}, eval_steps={self.eval_steps}"
            )
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
