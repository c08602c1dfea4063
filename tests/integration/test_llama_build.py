"""The project's one llama.cpp build on whatever CPU runs the tests: every quantized type the pipeline
produces loads and decodes, through the tools and through the binding, each in a child process.

This is the test that would have caught the AMX SIGILL: it decodes q8_0/q4_k_m/q4_0 (the types whose
repacked kernels faulted) with the build `make llama-tools` made, and checks that no AMX instruction is
in it. A crash is reported as ChildCrashed (binary, signal, meaning) instead of killing pytest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from supportlm import llamacpp
from supportlm.errors import MissingDependencyError
from supportlm.runtime import check_exit, run_in_child

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
AMX_MNEMONICS = ("tilezero", "ldtilecfg", "tdpbssd", "tdpbf16ps", "tileloadd")


@pytest.fixture(scope="module")
def build() -> dict:
    try:
        return llamacpp.ensure_built()
    except MissingDependencyError as exc:
        pytest.skip(f"llama.cpp cannot be built here: {exc}")


def _pipeline_types() -> list[str]:
    """f16 + quantize.gguf_types from params.yaml: what the quantize stage writes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return ["f16", *[t for t in params["quantize"]["gguf_types"] if t != "f16"]]


@pytest.fixture(scope="module")
def ggufs(build, tmp_path_factory) -> dict[str, Path]:
    from supportlm.train.base_model import bundled_gguf

    src = bundled_gguf("bundled:smollm2-135m-instruct")  # q4_1: requantized to each type (seconds)
    out = tmp_path_factory.mktemp("types")
    files = {}
    for qtype in _pipeline_types():
        dst = out / f"smollm2-{qtype}.gguf"
        cmd = [str(llamacpp.tool("llama-quantize")), "--allow-requantize", str(src), str(dst), qtype.upper()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        check_exit(cmd[0], res.returncode, res.stderr)
        assert res.returncode == 0, res.stderr[-2000:]
        files[qtype] = dst
    return files


def test_no_amx_instructions_in_the_build(build) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) not installed")
    lib = Path(build["lib_dir"]) / "libggml-cpu.so"
    assert lib.is_file(), f"{lib}: the CPU backend library is missing from the build"
    asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "vfmadd" in asm  # the disassembly is real (FMA kernels are in)
    found = {m for m in AMX_MNEMONICS if f"\t{m}" in asm or f" {m} " in asm}
    assert not found, f"AMX instructions in {lib}: {sorted(found)}"


def test_every_pipeline_type_decodes_with_llama_bench(ggufs) -> None:
    bench = llamacpp.tool("llama-bench")
    for qtype, path in ggufs.items():
        cmd = [str(bench), "-m", str(path), "-p", "16", "-n", "8", "-r", "1", "-t", "2", "-o", "json"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        check_exit(f"{bench.name} on {qtype}", res.returncode, res.stderr)
        assert res.returncode == 0, f"{qtype}: {res.stderr[-2000:]}"
        assert '"avg_ts"' in res.stdout


def _decode(path: str, n: int) -> list[int]:
    from supportlm.inference.engines import GGUFEngine

    eng = GGUFEngine(path, n_ctx=256, threads=2)
    prompt = eng.prompt_ids([{"role": "user", "content": "Where is my order?"}])
    gen = eng.generate_one(prompt, max_new_tokens=n)
    eng.llm.close()
    return gen.ids + ([-1] if gen.finish_reason == "stop" else [])


def test_every_pipeline_type_decodes_through_the_binding(ggufs) -> None:
    for qtype, path in ggufs.items():
        ids = run_in_child(f"decode {qtype} through llama-cpp-python", _decode, str(path), 6)
        assert 1 <= len(ids) <= 7, qtype


def test_the_binding_loads_the_projects_own_library(build) -> None:
    lib = run_in_child("load the binding", _loaded_lib)
    assert Path(lib).resolve().parent == Path(build["lib_dir"]).resolve()


def _loaded_lib() -> str:
    llama_cpp = llamacpp.binding()
    return str(llama_cpp.llama_cpp._lib._name)
