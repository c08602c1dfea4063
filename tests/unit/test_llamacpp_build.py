"""The llama.cpp build recipe: named instruction sets (never AMX), a cache keyed by flags, no PATH tools."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from supportlm import llamacpp
from supportlm.errors import MissingDependencyError
from supportlm.runtime import cpu_info

from .test_runtime import AMX_XEON, EPYC


def _opts(flags: list[str]) -> dict[str, str]:
    return dict(f[2:].split("=", 1) for f in flags if f.startswith("-D"))


def test_host_build_names_this_cpus_sets_and_never_amx() -> None:
    xeon = _opts(llamacpp.build_flags("host", cpu_info(AMX_XEON)))
    assert xeon["GGML_NATIVE"] == "OFF"  # -march=native would compile the AMX kernels
    assert xeon["GGML_AMX_TILE"] == xeon["GGML_AMX_INT8"] == xeon["GGML_AMX_BF16"] == "OFF"
    assert xeon["GGML_AVX512"] == xeon["GGML_AVX512_BF16"] == xeon["GGML_AVX512_VNNI"] == "ON"
    assert xeon["BUILD_SHARED_LIBS"] == "ON"  # libllama for the binding: one build
    epyc = _opts(llamacpp.build_flags("host", cpu_info(EPYC)))
    assert epyc["GGML_AVX2"] == "ON" and epyc["GGML_AVX512"] == "OFF" and epyc["GGML_AVX512_VNNI"] == "OFF"


def test_portable_build_is_the_same_on_every_x86_cpu() -> None:
    a = llamacpp.build_flags("portable", cpu_info(AMX_XEON))
    b = llamacpp.build_flags("portable", cpu_info(EPYC))
    assert a == b
    assert _opts(a)["GGML_AVX2"] == "ON" and _opts(a)["GGML_AVX512"] == "OFF"


def test_build_cache_is_keyed_by_the_flags() -> None:
    key = {name: llamacpp.build_key(llamacpp.build_flags(mode, cpu_info(text)))
           for name, mode, text in (("xeon", "host", AMX_XEON), ("xeon-portable", "portable", AMX_XEON),
                                    ("epyc", "host", EPYC))}  # fmt: skip
    assert all(k.startswith("build-") for k in key.values())
    assert key["xeon"] != key["epyc"] and key["xeon"] != key["xeon-portable"]
    # a CPU with just the x86-64-v3 sets: its host build is the portable one (one cache entry)
    assert key["epyc"] == key["xeon-portable"]


def test_bad_cpu_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTLM_LLAMA_CPU", "fastest")
    with pytest.raises(MissingDependencyError, match="SUPPORTLM_LLAMA_CPU='fastest': must be one of host, portable"):
        llamacpp.cpu_mode()


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\necho stand-in\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_tool_on_path_is_never_used_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tmp_path / "path"
    on_path.mkdir()
    _exe(on_path / "llama-server")
    monkeypatch.setenv("PATH", f"{on_path}:/usr/bin:/bin")
    monkeypatch.setenv("SUPPORTLM_CACHE", str(tmp_path / "cache"))  # nothing built there
    monkeypatch.delenv("SUPPORTLM_LLAMA_BIN", raising=False)
    assert llamacpp.find_tool("llama-server") is None
    assert llamacpp.build_info()["source"] == "not built yet"

    # configured: used, and recorded as such
    monkeypatch.setenv("SUPPORTLM_LLAMA_BIN", str(on_path))
    assert llamacpp.find_tool("llama-server") == on_path / "llama-server"
    assert llamacpp.build_info()["source"] == "SUPPORTLM_LLAMA_BIN"
    with pytest.raises(MissingDependencyError, match="has no llama-bench"):
        llamacpp.tool("llama-bench")


def test_a_finished_build_is_found_by_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTLM_CACHE", str(tmp_path))
    monkeypatch.delenv("SUPPORTLM_LLAMA_BIN", raising=False)
    build = llamacpp.build_dir()
    (build / "bin").mkdir(parents=True)
    server = _exe(build / "bin" / "llama-server")
    marker = {"version": llamacpp.version(), "bin_dir": str(build / "bin"), "cpu_mode": "host",
              "cmake_flags": llamacpp.build_flags(), "tools": {"llama-server": str(server)}}  # fmt: skip
    (build / ".built.json").write_text(json.dumps(marker))
    assert llamacpp.find_tool("llama-server") == server
    assert llamacpp.build_info()["build"] == build.name
    # another CPU mode = another key: this build is not reused for it
    monkeypatch.setenv("SUPPORTLM_LLAMA_CPU", "portable")
    if llamacpp.build_dir() != build:
        assert llamacpp.find_tool("llama-server") is None


def test_source_extracts_without_tarfile_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian bookworm's Python 3.11.2 has no `filter=` for extractall (3.11.4+): the images build on it."""
    import io
    import tarfile

    ver = "0.0.0"
    sdist = tmp_path / f"llama_cpp_python-{ver}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, data in ((f"llama_cpp_python-{ver}/vendor/llama.cpp/convert_hf_to_gguf.py", b"print(1)\n"),
                           (f"llama_cpp_python-{ver}/setup.py", b"")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("SUPPORTLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SUPPORTLM_LLAMA_SDIST", str(sdist))
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    src = llamacpp.ensure_source(ver)
    assert (src / "convert_hf_to_gguf.py").read_text() == "print(1)\n"
    assert not (src / "setup.py").exists()  # only vendor/llama.cpp comes out
