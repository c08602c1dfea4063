"""Merge: fold the LoRA/QLoRA adapter into the (de-quantized) base weights.

    dvc repro merge
    python stages/merge.py          # same code, outside DVC

Reads models/base/ and models/adapter/; writes models/merged/ (HF safetensors + tokenizer +
chat template + generation config + supportlm_merge.json), atomically.
"""

from supportlm.stage import stage_main
from supportlm.train.merge import run_merge


def main() -> None:
    stage_main("merge", run_merge)


if __name__ == "__main__":
    main()
