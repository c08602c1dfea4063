"""Report: reports/index.md + one self-contained reports/index.html from every stage's JSON (nothing recomputed).

    dvc repro report
    python stages/report.py         # same code, outside DVC

Reads reports/*.json (missing ones: "not run yet"), reports/plots/<stage>/*.png, params.yaml, dvc.lock.
Writes reports/index.md and reports/index.html (inline CSS, plots as data URIs, relative links to the
detailed reports next to it).
"""

from supportlm.report.run import run_report
from supportlm.stage import stage_main


def main() -> None:
    stage_main("report", run_report)


if __name__ == "__main__":
    main()
