"""Serving benchmark: headless Locust against the gateway and the engine, the memory-bandwidth bound,
the llama.cpp tuning matrix, and fairness between API keys. Writes reports/{bench,fairness}.{json,md}.

Modules: `run.py` (the bench stage), `inputs.py` (variants, prompts), `locust.py` + `locustfile.py`
(load runs and their numbers), `stack.py` (the serving stack under test), `targets.py` (targets,
hardware), `report.py` (bench.md, plots), `bandwidth.py` (copy bandwidth -> decode bound),
`engine_tuning.py` (llama-bench / llama-server matrix), `fairness.py` (the fairness stage),
`containers.py` (image sizes and the pipeline in containers).
"""
