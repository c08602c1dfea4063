"""Serving settings: one schema (config.ServeParams + secrets), env names generated from it, precedence
env > params.yaml > defaults with explicit overrides over all, and errors that name where a value came from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from supportlm.config import ServeLimitsParams, ServeParams
from supportlm.errors import ConfigError
from supportlm.serve.settings import (
    ServeSettings,
    bundled_model_path,
    dump_with_secrets,
    env_names,
    load_settings,
    merge_overrides,
    resolve_model,
    secret_paths,
)

from .conftest import ROOT

# Every SUPPORTLM_* setting name that compose files, Dockerfiles, docs, scripts and tests use, and the field
# it must keep reaching. A renamed field breaks deployments; this list says which.
ALIASES: dict[str, tuple[str, ...]] = {
    "SUPPORTLM_API_KEYS": ("api_keys",),
    "SUPPORTLM_API_KEYS_FILE": ("api_keys_file",),
    "SUPPORTLM_ALLOW_ANONYMOUS": ("allow_anonymous",),
    "SUPPORTLM_HOST": ("host",),
    "SUPPORTLM_PORT": ("port",),
    "SUPPORTLM_DRAIN_TIMEOUT_S": ("drain_timeout_s",),
    "SUPPORTLM_DOCS": ("docs",),
    "SUPPORTLM_ENGINE_KIND": ("engine", "kind"),
    "SUPPORTLM_ENGINE_URL": ("engine", "url"),
    "SUPPORTLM_ENGINE_CMD": ("engine", "cmd"),
    "SUPPORTLM_ENGINE_API_KEY": ("engine", "api_key"),
    "SUPPORTLM_ENGINE_PORT": ("engine", "port"),
    "SUPPORTLM_ENGINE_TIMEOUT_S": ("engine", "timeout_s"),
    "SUPPORTLM_ENGINE_START_TIMEOUT_S": ("engine", "start_timeout_s"),
    "SUPPORTLM_ENGINE_HEALTH_INTERVAL_S": ("engine", "health_interval_s"),
    "SUPPORTLM_ENGINE_RESTART_BACKOFF_S": ("engine", "restart_backoff_s"),
    "SUPPORTLM_ENGINE_MAX_RESTARTS": ("engine", "max_restarts"),
    "SUPPORTLM_MODEL_PATH": ("model", "path"),
    "SUPPORTLM_MODEL_FALLBACK_BUNDLED": ("model", "fallback_bundled"),
    "SUPPORTLM_LLAMA_SERVER_BIN": ("llama", "server_bin"),
    "SUPPORTLM_LLAMA_PARALLEL": ("llama", "parallel"),
    "SUPPORTLM_LLAMA_THREADS": ("llama", "threads"),
    "SUPPORTLM_LLAMA_CTX_SIZE": ("llama", "ctx_size"),
    "SUPPORTLM_LLAMA_BATCH_SIZE": ("llama", "batch_size"),
    "SUPPORTLM_LLAMA_UBATCH_SIZE": ("llama", "ubatch_size"),
    "SUPPORTLM_LLAMA_LOOKUP_CACHE": ("llama", "lookup_cache"),
    "SUPPORTLM_LLAMA_EXTRA_ARGS": ("llama", "extra_args"),
    "SUPPORTLM_LIMITS_RATE_PER_S": ("limits", "rate_per_s"),
    "SUPPORTLM_LIMITS_BURST": ("limits", "burst"),
    "SUPPORTLM_LIMITS_MAX_CONCURRENCY": ("limits", "max_concurrency"),
    "SUPPORTLM_LIMITS_PER_KEY_CONCURRENCY": ("limits", "per_key_concurrency"),
    "SUPPORTLM_LIMITS_TOKEN_RATE_PER_S": ("limits", "token_rate_per_s"),
    "SUPPORTLM_LIMITS_AUTH_FAIL_BURST": ("limits", "auth_fail_burst"),
    "SUPPORTLM_LIMITS_MIN_KEY_LENGTH": ("limits", "min_key_length"),
    "SUPPORTLM_LIMITS_SEND_TIMEOUT_S": ("limits", "send_timeout_s"),
    "SUPPORTLM_LIMITS_MAX_CONNECTIONS": ("limits", "max_connections"),
    "SUPPORTLM_LIMITS_MAX_BODY_BYTES": ("limits", "max_body_bytes"),
    "SUPPORTLM_LIMITS_BACKEND": ("limits", "backend"),
    "SUPPORTLM_LIMITS_REDIS_URL": ("limits", "redis_url"),
    "SUPPORTLM_LOG_FILE": ("log", "file"),
    "SUPPORTLM_LOG_STDOUT": ("log", "stdout"),
    "SUPPORTLM_LOG_PROMPTS": ("log", "prompts"),
}
# SUPPORTLM_* variables that are not serving settings (llama.cpp build, images, compose, bench, tests)
NOT_SETTINGS = {
    "SUPPORTLM_CACHE", "SUPPORTLM_LLAMA_BIN", "SUPPORTLM_LLAMA_CPU", "SUPPORTLM_LLAMA_SDIST",
    "SUPPORTLM_BUNDLED_GGUF", "SUPPORTLM_GGUF", "SUPPORTLM_MODELS_DIR", "SUPPORTLM_BITEXT_SAMPLE",
    "SUPPORTLM_E2E_REPORT", "SUPPORTLM_SCREENSHOT",
}  # fmt: skip
NOT_SETTINGS_PREFIXES = ("SUPPORTLM_BENCH_",)  # the Locust user's knobs (bench/locustfile.py)
SCANNED = ["Makefile", "README.md", "params.yaml", "docker/*", "docs/*.md", "scripts/*", "stages/*.py",
           "src/**/*.py", "tests/**/*.py", "profiles/*.yaml"]  # fmt: skip
NAME_RE = re.compile(r"\bSUPPORTLM_[A-Z0-9_]*[A-Z0-9]\b")


# ---------------------------------------------------------------- one schema


def test_settings_are_serve_params_plus_secrets() -> None:
    assert issubclass(ServeSettings, ServeParams)
    s = load_settings(env={})
    secrets = {"api_keys", "api_keys_file", "allow_anonymous"}
    # defaults come from config.ServeParams alone: params.yaml without a serve block changes nothing
    public = s.model_dump(
        exclude={**dict.fromkeys(secrets, True), "engine": {"api_key"}, "limits": {"redis_url"}}
    )
    assert public == ServeParams().model_dump()
    assert set(ServeSettings.model_fields) - set(ServeParams.model_fields) == secrets
    assert sorted(secret_paths()) == [("api_keys",), ("engine", "api_key"), ("limits", "redis_url")]
    assert "redis_url" not in ServeLimitsParams.model_fields  # secrets never in params.yaml


def test_env_names_are_generated_and_unambiguous() -> None:
    names = env_names()
    leaves = sum(
        len(info.annotation.model_fields) if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        else 1
        for info in ServeSettings.model_fields.values()
    )  # fmt: skip
    assert len(names) == leaves == len(set(names.values()))  # one name per field, one field per name
    for name, path in names.items():
        assert name == "SUPPORTLM_" + "_".join(path).upper()

    class Block(BaseModel):
        url: str = ""

    class Clash(BaseModel):  # `engine.url` and a top-level `engine_url` would share SUPPORTLM_ENGINE_URL
        engine: Block = Block()
        engine_url: str = ""

    with pytest.raises(ValueError, match="SUPPORTLM_ENGINE_URL would name both engine.url and engine_url"):
        env_names(Clash)


@pytest.mark.parametrize(("name", "path"), sorted(ALIASES.items()))
def test_every_name_in_use_reaches_its_field(name: str, path: tuple[str, ...]) -> None:
    assert env_names()[name] == path


def _names_in_repo() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pattern in SCANNED:
        for f in ROOT.glob(pattern):
            if f.is_file():
                for name in NAME_RE.findall(f.read_text(encoding="utf-8", errors="replace")):
                    found.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_supportlm_name_in_the_repo_is_a_setting_or_known_not_to_be() -> None:
    found = _names_in_repo()
    assert {"SUPPORTLM_LIMITS_RATE_PER_S", "SUPPORTLM_API_KEYS", "SUPPORTLM_ENGINE_URL"} <= set(
        found
    )  # scanned
    unknown = {
        name: sorted(where)
        for name, where in found.items()
        if name not in ALIASES and name not in NOT_SETTINGS and not name.startswith(NOT_SETTINGS_PREFIXES)
    }
    assert not unknown, (
        f"SUPPORTLM_* names that reach no setting (typo? add to ALIASES or NOT_SETTINGS): {unknown}"
    )
    assert not NOT_SETTINGS & set(env_names()), "a name listed as not-a-setting now is one"


def test_the_deployment_docs_table_names_real_settings() -> None:
    """docs/deployment.md abbreviates: `SUPPORTLM_LIMITS_RATE_PER_S` / `_BURST` = SUPPORTLM_LIMITS_BURST."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `SUPPORTLM_")]
    assert len(rows) > 15
    for row in rows:
        first, *short = re.findall(r"`(SUPPORTLM_[A-Z0-9_]+|_[A-Z0-9_]+)`", row.split("|")[1])
        assert first in env_names(), row
        block = env_names()[first][0] if len(env_names()[first]) == 2 else ""
        for suffix in short:
            candidates = {f"SUPPORTLM_{block.upper()}{suffix}", f"SUPPORTLM{suffix}"}
            assert candidates & set(env_names()), (row, suffix)


# ---------------------------------------------------------------- precedence


def test_env_beats_params_and_overrides_beat_both() -> None:
    params = ServeParams.model_validate({"port": 9000, "limits": {"burst": 5, "rate_per_s": 3.0},
                                         "llama": {"parallel": 2}})  # fmt: skip
    env = {"SUPPORTLM_LIMITS_BURST": "50", "SUPPORTLM_API_KEYS": "a:b", "SUPPORTLM_GGUF": "not ours",
           "supportlm_llama_ctx_size": "1024"}  # fmt: skip
    s = load_settings(params, env=env, host="0.0.0.0", limits={"rate_per_s": 4.0})
    assert (s.port, s.limits.burst, s.limits.rate_per_s, s.llama.parallel, s.host) == (
        9000,
        50,
        4.0,
        2,
        "0.0.0.0",
    )
    assert s.llama.ctx_size == 1024  # names are case-insensitive, as pydantic-settings' were
    assert s.limits.max_queue == ServeLimitsParams().max_queue  # untouched keys keep params/defaults
    assert s.api_keys is not None and s.api_keys.get_secret_value() == "a:b"
    assert "a:b" not in repr(s)  # secrets stay hidden
    assert load_settings(env={"SUPPORTLM_LLAMA_EXTRA_ARGS": '["--flash-attn", "auto"]'}).llama.extra_args == [
        "--flash-attn",
        "auto",
    ]


def test_overrides_merge_key_by_key_and_secrets_survive_a_round_trip() -> None:
    assert merge_overrides({"limits": {"burst": 1}, "port": 1}, {"limits": {"rate_per_s": 2.0}}) == {
        "limits": {"burst": 1, "rate_per_s": 2.0},
        "port": 1,
    }
    env = {"SUPPORTLM_ENGINE_API_KEY": "upstream-secret", "SUPPORTLM_LIMITS_BACKEND": "redis",
           "SUPPORTLM_LIMITS_REDIS_URL": "redis://:pw@db:6379/0", "SUPPORTLM_API_KEYS": "a:sk-0123456789abcdef"}  # fmt: skip
    s = load_settings(env=env)
    data = dump_with_secrets(s)
    assert data["engine"]["api_key"] == "upstream-secret" and data["limits"]["redis_url"].startswith(
        "redis://:pw@"
    )
    assert load_settings(env={}, **data) == s  # what the bench's serve child rebuilds


# ---------------------------------------------------------------- errors


def test_bad_env_is_a_config_error_that_names_the_variable_and_hides_secrets() -> None:
    env = {
        "SUPPORTLM_LIMITS_BURST": "lots",
        "SUPPORTLM_API_KEYS": "id:sk-very-secret",
        "SUPPORTLM_ENGINE_KIND": "tgi",
    }
    with pytest.raises(ConfigError) as exc:
        load_settings(env=env)
    text = str(exc.value)
    assert "SUPPORTLM_LIMITS_BURST: Input should be a valid integer" in text and "'lots'" in text
    env["SUPPORTLM_LIMITS_BURST"] = "5"
    with pytest.raises(ConfigError) as exc:
        load_settings(env=env)
    assert "serve.engine.kind=tgi needs serve.engine.url (SUPPORTLM_ENGINE_URL" in str(exc.value)
    assert "(set by SUPPORTLM_ENGINE_KIND)" in str(exc.value)
    assert "sk-very-secret" not in str(exc.value)
    with pytest.raises(
        ConfigError, match=r"serve\.api_keys: Input should be a valid string\. Given: \(hidden\)"
    ):
        load_settings(env={}, api_keys=12345)
    with pytest.raises(ConfigError, match="SUPPORTLM_LLAMA_EXTRA_ARGS: must be JSON"):
        load_settings(env={"SUPPORTLM_LLAMA_EXTRA_ARGS": "--flash-attn auto"})


def test_bad_params_value_names_the_serve_key() -> None:
    with pytest.raises(
        ConfigError, match=r"serve\.limits\.burst: Input should be greater than or equal to 1"
    ):
        load_settings({"limits": {"burst": 0}}, env={})
    with pytest.raises(ConfigError, match=r"serve\.limits\.bogus: unknown setting"):
        load_settings(env={}, limits={"bogus": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"engine": {"kind": "tgi"}}, "serve.engine.kind=tgi needs serve.engine.url"),
        ({"limits": {"default_max_tokens": 4096}}, "serve.limits.default_max_tokens (4096) must be <= serve.limits.max_tokens (2048)"),
        ({"limits": {"max_tokens": 100000}}, "serve.limits.token_burst (65536) must be >= serve.limits.max_tokens (100000)"),
        ({"llama": {"ubatch_size": 1024}}, "serve.llama.ubatch_size (1024) must be <= serve.llama.batch_size (512)"),
        ({"limits": {"backend": "redis"}}, "serve.limits.backend=redis needs SUPPORTLM_LIMITS_REDIS_URL"),
    ],
)  # fmt: skip
def test_cross_field_checks(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env={}, **overrides)
    assert message in str(exc.value)


def test_cross_field_checks_pass_when_fixed() -> None:
    s = load_settings(env={}, engine={"kind": "vllm", "url": "http://gpu-box:8000/"})
    assert not s.manages_engine and s.engine_base_url == "http://gpu-box:8000"
    assert (
        load_settings(env={}, limits={"max_tokens": 100000, "token_rate_per_s": None}).limits.max_tokens
        == 100000
    )
    assert load_settings(env={}, engine={"kind": "tgi", "cmd": "tgi --port {port}"}).manages_engine


@pytest.mark.parametrize(
    ("serve", "keys"),
    [
        ({"limits": {"max_tokens": 128, "default_max_tokens": 256}}, ["serve.limits.default_max_tokens", "serve.limits.max_tokens"]),
        ({"llama": {"batch_size": 64, "ubatch_size": 128}}, ["serve.llama.ubatch_size", "serve.llama.batch_size"]),
        ({"engine": {"kind": "vllm", "url": None}}, ["serve.engine.kind=vllm", "serve.engine.url", "serve.engine.cmd"]),
    ],
)  # fmt: skip
def test_params_check_runs_the_cross_field_checks(tmp_path: Path, serve: dict, keys: list[str]) -> None:
    """`supportlm params check` (what `make` and CI run first) fails on a combination only serving needs."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for block, values in serve.items():
        raw["serve"].setdefault(block, {}).update(values)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "supportlm.cli", "params", "check", "--params", str(bad)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("SUPPORTLM_")},
                               "COLUMNS": "400"})  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = " ".join(proc.stderr.split())
    for key in keys:
        assert key in out, out


# ---------------------------------------------------------------- the served model


def test_model_falls_back_to_the_bundled_gguf(tmp_path: Path) -> None:
    bundled = bundled_model_path()
    assert bundled is not None and bundled.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    missing = load_settings(env={}, model={"path": tmp_path / "nope.gguf"})
    assert resolve_model(missing) == (bundled, "bundled")
    real = tmp_path / "model-q4_k_m.gguf"
    real.write_bytes(b"GGUF")
    assert resolve_model(load_settings(env={}, model={"path": real})) == (real, "configured")
    with pytest.raises(ConfigError, match="model not found"):
        resolve_model(
            load_settings(env={}, model={"path": tmp_path / "nope.gguf", "fallback_bundled": False})
        )


# ---------------------------------------------------------------- the bench's settings


def test_bench_builds_settings_the_same_way_and_takes_only_secrets_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench.stack.bench_settings goes through load_settings like `supportlm serve`; what it measures is
    params.yaml's serve block (its report says so), so only the secrets come from env."""
    from supportlm.bench.stack import bench_settings

    monkeypatch.setenv("SUPPORTLM_LLAMA_PARALLEL", "3")  # a developer's leftover: must not change the bench
    monkeypatch.setenv("SUPPORTLM_ENGINE_API_KEY", "upstream-secret")
    params = ServeParams.model_validate(
        {"llama": {"parallel": 2, "extra_args": ["-fa"]}, "limits": {"max_queue": 4}}
    )
    s = bench_settings(params, Path("/m.gguf"), threads=1, slot_dir=Path("/slots"), max_level=16,
                       limits={"rate_per_s": 5.0})  # fmt: skip
    assert isinstance(s, ServeSettings)
    assert (s.llama.parallel, s.llama.threads, s.model.path, s.model.fallback_bundled) == (
        2,
        1,
        Path("/m.gguf"),
        False,
    )
    assert s.llama.extra_args == ["-fa", "--slot-save-path", "/slots", "--cache-ram", "0"]
    assert (s.limits.max_queue, s.limits.per_key_queue, s.limits.burst) == (16, 16, 1_000_000)
    assert s.limits.rate_per_s == 5.0  # the caller's override wins over the bench's own
    assert s.engine.api_key is not None and s.engine.api_key.get_secret_value() == "upstream-secret"
    assert s.engine.kind == "llamacpp" and s.manages_engine and s.host == "127.0.0.1"
