"""The run's log.jsonl: one JSON line per base eval, optimizer step and eval, trimmed back on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """Append-only JSONL records (`type`: base, train or eval) in `path` (created on the first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [
            json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]

    def trim(self, step: int) -> None:
        """Drop lines past the resumed step (written by the killed process after its checkpoint)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if rec.get("type") == "base" or rec.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)
