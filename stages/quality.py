"""Quality: the data quality report (completeness, text, labels, distribution, dedup, defects).

    dvc repro quality
    python stages/quality.py          # same code, outside DVC

Writes reports/data_quality.{json,md,html}, reports/plots/quality_*.png.
"""

from supportlm.data.quality import run_quality
from supportlm.stage import stage_main


def main() -> None:
    stage_main("quality", run_quality)


if __name__ == "__main__":
    main()
