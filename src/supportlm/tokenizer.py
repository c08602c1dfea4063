"""The base model's tokenizer as every stage loads it: from models/base, never from a hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supportlm.errors import DataError


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    if not (Path(model_dir) / "tokenizer_config.json").exists():
        raise DataError(f"{model_dir}: no tokenizer here; run `dvc repro base_model` first")
    return AutoTokenizer.from_pretrained(str(model_dir))
