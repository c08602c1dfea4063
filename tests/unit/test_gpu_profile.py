"""GPU profile without a GPU: the validated gpu params (the container plan: tests/unit/test_docker_plan.py)."""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_gpu_profile_params_validate(tmp_path):
    from supportlm.profiles import apply_profile

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    apply_profile("gpu", tmp_path / "params.yaml")
    from supportlm.config import load_params

    p = load_params(tmp_path / "params.yaml")
    assert p.profile == "gpu" and "7B" in p.base_model.base
