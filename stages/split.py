"""Split: train/val/test stratified by intent, grouped so near-duplicates never cross splits.

    dvc repro split
    python stages/split.py          # same code, outside DVC

Writes data/processed/{train,val,test}.jsonl, reports/split.json.
"""

from supportlm.cli import stage_main


def main() -> None:
    stage_main("split")


if __name__ == "__main__":
    main()
