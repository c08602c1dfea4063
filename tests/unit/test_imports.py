"""Imports run one way (DESIGN.md): every `supportlm` import, those inside functions included, goes to
the same layer or a lower one, and no chain of imports comes back to where it started.

    foundation (errors, paths, config, runtime, ...) <- data <- train, inference
        <- evaluate, quantize, serve, bench <- report, gpu_check, docker_plan, profiles <- cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# lowest first; a module's layer is that of its first package under supportlm/
FOUNDATION = {"supportlm", "errors", "paths", "config", "runtime", "lineage", "logs", "hub", "chat_template",
              "tokenizer", "llamacpp"}  # fmt: skip
LAYERS: list[set[str]] = [
    FOUNDATION,
    {"data"},
    {"train", "inference"},
    {"evaluate", "quantize", "serve", "bench"},
    {"report", "gpu_check", "docker_plan", "profiles"},
    {"cli", "__main__"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "supportlm").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """supportlm modules `name` imports anywhere in its body (function-level imports hide edges too)."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else (node.module or "")  # fmt: skip
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name and target.startswith("supportlm"):
                found.add(target)
    return found


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else name
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{name}: not in any layer of tests/unit/test_imports.py; add its package to LAYERS")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


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
