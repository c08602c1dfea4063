"""Evaluation: reference metrics (metrics.py), support checks (checks.py), the evaluate stage (run.py)
and blind human A/B rating (human.py)."""
