"""Test tiers (one folder each):

    pytest tests/unit          # fast, in-memory rows, no model (< 1 s per test)
    pytest tests/data          # the real Bitext sample in ../shared/data (or $SUPPORTLM_BITEXT_SAMPLE)
    pytest tests/integration   # DVC graph on the smoke profile, dvc push/pull (local + S3 via moto_server)
    make test                  # all of the above except tests marked `gpu` (what CI runs)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bitext_sample_path() -> Path | None:
    env = os.environ.get("SUPPORTLM_BITEXT_SAMPLE")
    # ../shared/data beside the checkout, or a shared/ next to any ancestor (a CI clone nested deeper)
    near = [parent / "shared/data/bitext_customer_support_sample.csv.gz" for parent in ROOT.parents]
    for cand in ([Path(env)] if env else []) + near:
        if cand.exists():
            return cand
    return None


@pytest.fixture
def bitext_sample() -> Path:
    path = bitext_sample_path()
    if path is None:
        pytest.skip("Bitext sample not found (../shared/data or $SUPPORTLM_BITEXT_SAMPLE)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    for item in items:
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
