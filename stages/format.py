"""Format: apply the base model's chat template; token-length statistics.

    dvc repro format
    python stages/format.py          # same code, outside DVC

Writes data/formatted/{train,val,test}.jsonl, reports/format.json.
"""

from supportlm.data.format import run_format
from supportlm.stage import stage_main


def main() -> None:
    stage_main("format", run_format)


if __name__ == "__main__":
    main()
