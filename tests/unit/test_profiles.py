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
