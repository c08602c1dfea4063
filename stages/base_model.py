"""Base model: resolve params.base_model.base into a plain HF model dir.

    dvc repro base_model
    python stages/base_model.py          # same code, outside DVC

Writes models/base/ (safetensors weights, tokenizer, chat template, generation config).
"""

from supportlm.stage import stage_main
from supportlm.train.base_model import run_base_model


def main() -> None:
    stage_main("base_model", run_base_model)


if __name__ == "__main__":
    main()
