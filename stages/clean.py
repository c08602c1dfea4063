"""Clean: repair, mask PII, limit length, deduplicate and check labels without losing a row.

    dvc repro clean
    python stages/clean.py          # same code, outside DVC

Writes data/interim/clean.jsonl, data/interim/quarantine.jsonl (every dropped row + reason),
data/interim/changes.jsonl, data/interim/label_issues.jsonl, reports/clean.json.
"""

from supportlm.data.clean import run_clean
from supportlm.stage import stage_main


def main() -> None:
    stage_main("clean", run_clean)


if __name__ == "__main__":
    main()
