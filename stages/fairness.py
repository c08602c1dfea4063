"""Fairness: one abusive and one polite API key through the gateway and llama-server (the per-key defence).

    dvc repro fairness
    python stages/fairness.py       # same code, outside DVC

Reads models/gguf/model-<bench.primary>.gguf and data/formatted/test.jsonl; starts the gateway twice on
127.0.0.1 (the configured serve.limits, and without per-key caps). ~4.5 min on 2 cores.
Writes reports/fairness.json (`phases`, `targets`, `hardware`), reports/fairness.md and
reports/plots/fairness/latency.png.
"""

from supportlm.bench.fairness import run_fairness
from supportlm.stage import stage_main


def main() -> None:
    stage_main("fairness", run_fairness)


if __name__ == "__main__":
    main()
