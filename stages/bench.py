"""Bench: the served model under load (gateway and engine direct), bandwidth bound, engine tuning.

    dvc repro bench
    python stages/bench.py          # same code, outside DVC

Reads models/gguf/model-*.gguf (the quantize stage; the bundled GGUF when absent and
bench.fallback_bundled) and data/formatted/test.jsonl. Starts llama-server + the gateway on
127.0.0.1 (fresh ports), runs headless Locust at each bench.concurrency level. ~8 min on 2 cores.
Writes reports/bench.json (`runs`, `targets`, `hardware`, ...), reports/bench.md and
reports/plots/bench/{latency,throughput,variants}.png.
"""

from supportlm.bench.run import run_bench
from supportlm.stage import stage_main


def main() -> None:
    stage_main("bench", run_bench)


if __name__ == "__main__":
    main()
