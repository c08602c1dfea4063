"""Ingest: load every source in params.ingest into one Record stream.

    dvc repro ingest
    python stages/ingest.py          # same code, outside DVC

Writes data/raw/records.jsonl, data/raw/rejected.jsonl (rows that could not become a Record, with reason),
data/raw/defects.jsonl (synthetic ground truth), reports/ingest.json.
"""

from supportlm.data.ingest import run_ingest
from supportlm.stage import stage_main


def main() -> None:
    stage_main("ingest", run_ingest)


if __name__ == "__main__":
    main()
