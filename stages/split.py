"""Split: train/val/test stratified by intent, grouped so near-duplicates never cross splits.

    dvc repro split
    python stages/split.py          # same code, outside DVC

Writes data/processed/{train,val,test}.jsonl, reports/split.json.
"""

from supportlm.data.split import run_split
from supportlm.stage import stage_main


def main() -> None:
    stage_main("split", run_split)


if __name__ == "__main__":
    main()
