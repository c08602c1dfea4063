"""Serving benchmark: headless Locust against the gateway and the engine, the memory-bandwidth bound,
and the llama.cpp tuning matrix. Writes reports/bench.{json,md} and reports/plots/bench/.

    from supportlm.bench import run_bench
    run_bench(params, Paths())        # = dvc repro bench / python stages/bench.py

Modules: `run.py` (the stage, Locust output parsing, targets, Markdown, plots), `locustfile.py` (the
users), `bandwidth.py` (copy bandwidth -> decode bound), `engine_tuning.py` (llama-bench / llama-server
matrix).
"""

from __future__ import annotations

from typing import Any

__all__ = ["parse_locust_stats", "run_bench"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not pull in matplotlib/httpx2
    if name in __all__:
        from supportlm.bench import run

        return getattr(run, name)
    raise AttributeError(name)
