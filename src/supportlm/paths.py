"""Where every stage reads and writes, relative to the project root (dvc.yaml repeats these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    # data (DVC-tracked, never in git)
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def interim(self) -> Path:
        return self.root / "data" / "interim"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def formatted(self) -> Path:
        return self.root / "data" / "formatted"

    # models
    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def adapter(self) -> Path:
        return self.root / "models" / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "models" / "merged"

    @property
    def gguf(self) -> Path:
        return self.root / "models" / "gguf"

    # reports (small, committed)
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def plots(self) -> Path:
        return self.root / "reports" / "plots"
