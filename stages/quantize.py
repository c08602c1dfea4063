"""Quantize: models/merged -> GGUF f16 + q8_0/q4_k_m/q4_0 (+ bitsandbytes/GPTQ where possible), scored alike.

    dvc repro quantize
    python stages/quantize.py       # same code, outside DVC

Writes models/gguf/model-*.gguf, reports/quantization.json (`variants`, `targets`, `skipped`),
reports/quantization.md and reports/plots/quantize/size_accuracy_speed.png.
"""

from supportlm.quantize.run import run_quantize
from supportlm.stage import stage_main


def main() -> None:
    stage_main("quantize", run_quantize)


if __name__ == "__main__":
    main()
