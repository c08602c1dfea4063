"""Profiles overlay params.yaml (comments kept) and cpu.yaml restores the defaults exactly."""

import shutil
from pathlib import Path

import pytest
import yaml

from supportlm.config import load_params
from supportlm.errors import ConfigError
from supportlm.lineage import flatten
from supportlm.profiles import apply_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    return tmp_path


@pytest.mark.parametrize("name", ["gpu", "smoke"])
def test_profile_round_trip_restores_params_byte_for_byte(project, name):
    original = (project / "params.yaml").read_text()
    changed = apply_profile(name, project / "params.yaml")
    assert "profile" in changed and len(changed) > 1
    merged = load_params(project / "params.yaml")  # the merged file validates
    assert merged.profile == name
    assert "# supportlm pipeline parameters" in (project / "params.yaml").read_text()  # comments kept
    apply_profile("cpu", project / "params.yaml")
    assert (project / "params.yaml").read_text() == original


PROFILES = ("cpu", "gpu", "smoke")


@pytest.mark.parametrize("first", PROFILES)
@pytest.mark.parametrize("then", PROFILES)
def test_a_profile_gives_the_same_params_whatever_was_applied_before(project, tmp_path, first, then):
    """`make all PROFILE=gpu` after a smoke run must not keep smoke's values for keys gpu.yaml does not set."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(project / "params.yaml", fresh / "params.yaml")
    shutil.copytree(project / "profiles", fresh / "profiles")
    apply_profile(then, fresh / "params.yaml")
    apply_profile(first, project / "params.yaml")
    apply_profile(then, project / "params.yaml")
    assert (project / "params.yaml").read_text() == (fresh / "params.yaml").read_text()
    if (first, then) == ("smoke", "gpu"):
        assert load_params(project / "params.yaml").train.max_steps == -1  # not smoke's 2 steps


@pytest.mark.parametrize("name", PROFILES)
def test_the_gateway_admits_every_user_the_bench_sends(project, name):
    """The bench drives the gateway at up to max(bench.concurrency) users: none may be turned away (503) by the
    gateway's own queue; with an external batching engine (TGI) none may even wait in it."""
    apply_profile(name, project / "params.yaml")
    p = load_params(project / "params.yaml")
    users, limits = max(p.bench.concurrency), p.serve.limits
    assert limits.max_concurrency + limits.max_queue >= users, (name, users, limits)
    if p.serve.engine.kind != "llamacpp":
        assert limits.max_concurrency >= users, (name, users, limits)


def test_cpu_profile_covers_every_key_other_profiles_set():
    cpu = set(flatten(yaml.safe_load((ROOT / "profiles/cpu.yaml").read_text())))
    for other in ROOT.glob("profiles/*.yaml"):
        keys = set(flatten(yaml.safe_load(other.read_text())))
        assert keys <= cpu, f"{other.name} sets {sorted(keys - cpu)} that cpu.yaml cannot restore"


def test_bad_overlay_never_writes(project):
    (project / "profiles/broken.yaml").write_text("clean:\n  max_tokens: -1\n")
    before = (project / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"clean\.max_tokens"):
        apply_profile("broken", project / "params.yaml")
    assert (project / "params.yaml").read_text() == before
    with pytest.raises(ConfigError, match="Known profiles"):
        apply_profile("nope", project / "params.yaml")


def test_gpus_set_on_top_of_a_profile_and_cpu_resets_it(project):
    """`make all PROFILE=gpu GPUS=4` = the gpu overlay + train.num_processes=4; cpu afterwards restores 1."""
    original = (project / "params.yaml").read_text()
    changed = apply_profile("gpu", project / "params.yaml", ["train.num_processes=4"])
    assert "train.num_processes" in changed
    p = load_params(project / "params.yaml")
    assert p.train.num_processes == 4 and p.train.gradient_accumulation_steps >= 4
    with pytest.raises(ConfigError, match="train.num_processes"):  # more processes than micro-batches per step
        apply_profile("cpu", project / "params.yaml", ["train.num_processes=4"])
    with pytest.raises(ConfigError, match="BLOCK.KEY=VALUE"):
        apply_profile("cpu", project / "params.yaml", ["num_processes"])
    apply_profile("cpu", project / "params.yaml")
    assert (project / "params.yaml").read_text() == original
    # FSDP=1 (the Makefile sets LoRA with it: QLoRA is not sharded); the cpu profile puts ddp back
    apply_profile("gpu", project / "params.yaml", ["train.num_processes=4", "train.strategy=fsdp", "train.method=lora"])
    assert load_params(project / "params.yaml").train.strategy == "fsdp"
    apply_profile("cpu", project / "params.yaml")
    assert (project / "params.yaml").read_text() == original
