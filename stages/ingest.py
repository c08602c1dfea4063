"""Ingest: load every source in params.ingest into one Record stream.

    dvc repro ingest
    python stages/ingest.py          # same code, outside DVC

Writes data/raw/records.jsonl, data/raw/rejected.jsonl (rows that could not become a Record, with reason),
data/raw/defects.jsonl (synthetic ground truth), reports/ingest.json.
"""

from supportlm.cli import stage_main


def main() -> None:
    stage_main("ingest")


if __name__ == "__main__":
    main()
