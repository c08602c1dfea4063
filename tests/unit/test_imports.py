"""Imports run one way (DESIGN.md): every `supportlm` import, those inside functions included, goes to
the same layer or a lower one, and no chain of imports comes back to where it started.

    foundation (errors, paths, config, io, render, stage, runtime, ...) <- data <- train, inference
        <- evaluate, quantize, serve, bench <- report, gpu_check, docker_plan, profiles <- cli
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.import_graph import cycles, import_graph, imports_of

# lowest first; a module's layer is that of its first package under supportlm/
FOUNDATION = {"supportlm", "errors", "paths", "config", "runtime", "lineage", "logs", "hub", "chat_template",
              "tokenizer", "llamacpp", "io", "render", "stage"}  # fmt: skip
LAYERS: list[set[str]] = [
    FOUNDATION,
    {"data"},
    {"train", "inference"},
    {"evaluate", "quantize", "serve", "bench"},
    {"report", "gpu_check", "docker_plan", "profiles"},
    {"cli", "__main__"},
]


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else name
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{name}: not in any layer of tests/unit/test_imports.py; add its package to LAYERS")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_parser_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "supportlm" / "evaluate"
    pkg.mkdir(parents=True)
    (tmp_path / "supportlm" / "__init__.py").write_text("")
    (tmp_path / "supportlm" / "config.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text("")
    (pkg / "run.py").write_text("from . import metrics\ndef f():\n    from supportlm.config import X\n")
    known = {"supportlm": tmp_path / "supportlm/__init__.py", "supportlm.config": tmp_path / "supportlm/config.py",
             "supportlm.evaluate": pkg / "__init__.py", "supportlm.evaluate.metrics": pkg / "metrics.py",
             "supportlm.evaluate.run": pkg / "run.py"}  # fmt: skip
    assert imports_of("supportlm.evaluate.run", pkg / "run.py", known) == {
        "supportlm.evaluate.metrics",
        "supportlm.config",
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_no_module_imports_from_a_higher_layer(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, deps in graph.items()
        for dep in deps
        if layer(dep) > layer(name)
    )
    assert upward == []
