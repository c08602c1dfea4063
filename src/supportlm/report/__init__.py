"""The report stage: reports/index.{md,html} from the stages' JSON files (see report/run.py)."""
