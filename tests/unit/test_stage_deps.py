"""One runner shape, called visibly, and dvc.yaml deps derived from what each stage really runs.

- every dvc.yaml stage runs `python stages/<stage>.py`, which imports `run_<stage>` and passes it to
  `stage_main`; `supportlm <stage>` names the same runner;
- every runner is `run_<stage>(params: Params, paths: Paths) -> dict`;
- a stage's `src/` deps are exactly the project modules it runs: the imports of stages/<stage>.py,
  transitively, function-level imports and parent packages included. A change that can alter an
  output reruns the stage; a change to a module the stage never runs does not.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing

import pytest
import yaml

from supportlm.cli import STAGE_RUNNERS
from supportlm.config import Params
from supportlm.paths import Paths
from tests.import_graph import ROOT, SRC, closure, import_graph, imports_of, modules

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]

# modules a stage runs without importing them: edges the import parser cannot see
RUN_AS_FILE = {
    "supportlm.bench.run": {"supportlm.bench.locustfile"},  # `locust -f locustfile.py` in a child process
    "supportlm.train.distributed": {"supportlm.train.rank"},  # `accelerate launch -m supportlm.train.rank`
}


def stage_call(name: str) -> tuple[str, str]:
    """(module, runner) that stages/<name>.py passes to stage_main, read from its source."""
    tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text(encoding="utf-8"))
    imported = {a.asname or a.name: node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names}  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "stage_main":
            stage, runner = node.args
            assert isinstance(stage, ast.Constant) and stage.value == name, f"stages/{name}.py runs another stage"
            assert isinstance(runner, ast.Name), f"stages/{name}.py: pass the runner itself to stage_main"
            return str(imported[runner.id]), runner.id
    raise AssertionError(f"stages/{name}.py never calls stage_main")


def stage_modules(name: str, graph: dict[str, set[str]]) -> set[str]:
    known = modules()
    start = imports_of(f"stages.{name}", ROOT / "stages" / f"{name}.py", known)
    return closure(start, graph)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    g = import_graph()
    for module, extra in RUN_AS_FILE.items():
        g[module] |= extra
    return g


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_file_calls_its_runner(name: str) -> None:
    assert DVC[name]["cmd"] == f"python stages/{name}.py"
    module, runner = stage_call(name)
    assert runner == f"run_{name}"
    assert STAGE_RUNNERS[name] == f"{module}:{runner}", "`supportlm <stage>` must run what stages/<stage>.py runs"


def test_every_cli_stage_is_a_dvc_stage() -> None:
    assert set(STAGE_RUNNERS) == set(DVC)


@pytest.mark.parametrize("name", sorted(DVC))
def test_runner_takes_typed_params_and_paths(name: str) -> None:
    module, runner = stage_call(name)
    func = getattr(importlib.import_module(module), runner)
    hints = typing.get_type_hints(func)
    positional = list(inspect.signature(func).parameters.values())
    assert [p.name for p in positional[:2]] == ["params", "paths"]
    assert hints["params"] is Params and hints["paths"] is Paths
    assert all(p.default is not inspect.Parameter.empty for p in positional[2:]), "extra arguments need defaults"
    assert typing.get_origin(hints["return"]) is dict


@pytest.mark.parametrize("name", sorted(DVC))
def test_dvc_deps_are_the_modules_the_stage_runs(name: str, graph: dict[str, set[str]]) -> None:
    known = modules()
    runs = {known[m].relative_to(ROOT).as_posix() for m in stage_modules(name, graph)}
    listed = {d for d in DVC[name].get("deps", []) if d.startswith("src/")}
    missing, extra = sorted(runs - listed), sorted(listed - runs)
    assert not missing and not extra, (
        f"dvc.yaml stage {name}: add {missing} (the stage runs them), drop {extra} (it never imports them)"
    )


def test_the_closure_follows_function_level_imports_and_parent_packages(graph: dict[str, set[str]]) -> None:
    runs = stage_modules("report", graph)
    assert {"supportlm.report.run", "supportlm.report", "supportlm", "supportlm.render"} <= runs
    assert "supportlm.lineage" in runs  # imported inside lineage_section only
    assert not any(m.startswith("supportlm.serve") for m in runs)
    assert (SRC / "supportlm" / "report" / "run.py").is_file()


def write_deps() -> None:  # pragma: no cover - `python -m tests.unit.test_stage_deps` rewrites dvc.yaml's src deps
    """Replace each stage's `- src/...` dep lines by the derived list (other deps and comments stay)."""
    g = import_graph()
    for module, extra in RUN_AS_FILE.items():
        g[module] |= extra
    known = modules()
    lines = (ROOT / "dvc.yaml").read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    stage = None
    pending: list[str] = []
    for line in lines:
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        if stage in DVC and line.strip().startswith("- src/supportlm/"):
            continue
        if stage in DVC and line.strip() == "params:" and not pending:
            pending = sorted(known[m].relative_to(ROOT).as_posix() for m in stage_modules(stage, g))
            out += [f"      - {p}" for p in pending]
            pending = []
        out.append(line)
    (ROOT / "dvc.yaml").write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    write_deps()


def params_read(func: object) -> set[str]:
    """`params.<block>[.<key>...]` chains the runner's own body reads."""
    tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(func)))  # type: ignore[arg-type]
    found: set[str] = set()
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if id(node) in inner:
            continue  # part of a longer chain
        chain: list[str] = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "params" and chain:
            found.add(".".join(chain))
    return found


@pytest.mark.parametrize("name", sorted(DVC))
def test_runner_reads_only_the_params_its_stage_declares(name: str) -> None:
    """A value read but not declared would change the output without DVC rerunning the stage."""
    module, runner = stage_call(name)
    declared = [str(p) for p in DVC[name].get("params", [])]
    read = params_read(getattr(importlib.import_module(module), runner))
    assert read, f"run_{name} reads no params block"
    undeclared = sorted(r for r in read if not any(r == d or r.startswith(d + ".") for d in declared))
    assert not undeclared, f"dvc.yaml stage {name}: add {undeclared} to params (run_{name} reads them)"
