"""Evaluate: base vs fine-tuned (merged) on a seeded, intent-stratified test sample.

    dvc repro evaluate
    python stages/evaluate.py       # same code, outside DVC

Writes reports/eval.json (metrics: `base`, `finetuned`, per intent / slice), reports/eval.md,
reports/plots/eval/*.png, reports/human_eval_sheet.{csv,html} and reports/human_eval_key.csv.
"""

from supportlm.evaluate.run import run_evaluate
from supportlm.stage import stage_main


def main() -> None:
    stage_main("evaluate", run_evaluate)


if __name__ == "__main__":
    main()
