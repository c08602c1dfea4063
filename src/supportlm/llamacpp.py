"""llama.cpp tools (llama-quantize, llama-server, llama-bench, ...) and its HF -> GGUF converter, offline.

The llama-cpp-python sdist vendors the whole llama.cpp tree (`vendor/llama.cpp`: the
`convert_hf_to_gguf.py` script, `gguf-py/` and `tools/`), pinned to the same commit as the
Python bindings in the venv. So instead of fetching llama.cpp from GitHub we:

1. get the sdist (`pip download --no-binary :all: --no-deps llama-cpp-python==VERSION`; pip's
   cache or PyPI; or `SUPPORTLM_LLAMA_SDIST=/path/to/llama_cpp_python-VERSION.tar.gz`),
2. extract `vendor/llama.cpp` once into `~/.cache/supportlm/llama.cpp-VERSION/src`,
3. build only the tools we use with cmake into `.../build/bin` (Release, -jN; ~8.5 min on 2 cores).

Every step is idempotent, atomic (tmp dir + rename, a "done" marker written last) and runs
under a file lock, so two processes (`make llama-tools` and a stage, or two test workers)
never extract or build at the same time: the second waits, then finds the work done.

Lookup order for `tool(name)`:
    $SUPPORTLM_LLAMA_BIN/<name>  ->  our cache build  ->  `<name>` on $PATH  ->  build it

    python -c "from supportlm.llamacpp import ensure_built; print(ensure_built())"   # = make llama-tools

Raises:
    MissingDependencyError: no cmake / C++ compiler, the sdist cannot be found or downloaded,
        or the build fails (the message carries the log path and its tail).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from supportlm.errors import MissingDependencyError

DEFAULT_VERSION = "0.3.36"  # the llama-cpp-python pin in pyproject; the vendored llama.cpp matches it
# only what the pipeline uses; the full tree has ~60 targets and takes 3-4x longer
TARGETS = ("llama-quantize", "llama-server", "llama-bench", "llama-batched-bench", "llama-cli")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",  # no libcurl: offline, models are local files (ignored by newer trees)
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS client in llama-server; the gateway terminates TLS
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ... or a download from the HF hub: neither offline
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries: no rpath to the build dir
)


def version() -> str:
    """The installed llama-cpp-python version (so converter and bindings agree), else the pin."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("llama_cpp_python")
    except Exception:  # noqa: BLE001 - not installed: fall back to the pin
        return DEFAULT_VERSION


def cache_dir(ver: str | None = None) -> Path:
    """`$SUPPORTLM_CACHE` (default ~/.cache/supportlm) / llama.cpp-<version>: outside the project."""
    root = Path(os.environ.get("SUPPORTLM_CACHE", Path.home() / ".cache" / "supportlm")).expanduser()
    return root / f"llama.cpp-{ver or version()}"


def _src(ver: str | None = None) -> Path:
    return cache_dir(ver) / "src"


def _bin(ver: str | None = None) -> Path:
    return cache_dir(ver) / "build" / "bin"


def _log(msg: str) -> None:
    print(f"[llama.cpp] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(ver: str | None = None) -> Iterator[None]:
    """Exclusive flock on <cache>/.lock; released by the kernel even if we are killed."""
    d = cache_dir(ver)
    d.mkdir(parents=True, exist_ok=True)
    with (d / ".lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another process holds {d / '.lock'}; waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- sources


def _find_sdist(ver: str) -> Path:
    name = f"llama_cpp_python-{ver}.tar.gz"
    env = os.environ.get("SUPPORTLM_LLAMA_SDIST")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise MissingDependencyError(f"SUPPORTLM_LLAMA_SDIST={env}: no such file")
        return p
    dl = cache_dir(ver) / "sdist"
    if (dl / name).is_file():
        return dl / name
    dl.mkdir(parents=True, exist_ok=True)
    _log(f"pip download llama-cpp-python=={ver} (sdist, ~75 MB; pip's cache first)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-build-isolation",
           f"llama-cpp-python=={ver}", "-d", str(dl)]
    # --no-build-isolation: pip would otherwise build the package metadata in a fresh env (slow, needs net)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (dl / name).is_file():
        # some pip versions need isolation to prepare metadata; retry without the flag
        cmd.remove("--no-build-isolation")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (dl / name).is_file():
        raise MissingDependencyError(
            f"cannot get the llama-cpp-python=={ver} sdist (needed for the llama.cpp tools and converter): "
            f"`{' '.join(cmd)}` failed:\n{proc.stderr[-1500:]}\n"
            "Fix: run it where PyPI is reachable, or set SUPPORTLM_LLAMA_SDIST to a downloaded copy."
        )
    return dl / name


def ensure_source(ver: str | None = None) -> Path:
    """Extract `vendor/llama.cpp` from the sdist into the cache once; return the source tree."""
    ver = ver or version()
    src = _src(ver)
    if (src / ".extracted").is_file():
        return src
    with _locked(ver):
        if (src / ".extracted").is_file():  # someone else finished while we waited
            return src
        sdist = _find_sdist(ver)
        prefix = f"llama_cpp_python-{ver}/vendor/llama.cpp/"
        tmp = src.with_name("src.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _log(f"extracting {prefix} from {sdist.name}")
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                if m.name.startswith(prefix) and (m.isfile() or m.isdir()):
                    m.name = m.name[len(prefix):]
                    if m.name:
                        members.append(m)
            if not members:
                raise MissingDependencyError(f"{sdist}: no {prefix} inside; is this the llama-cpp-python sdist?")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / ".extracted").write_text(json.dumps({"sdist": str(sdist), "version": ver}))
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    return src


def converter(ver: str | None = None) -> tuple[Path, Path]:
    """(convert_hf_to_gguf.py, dir to put first on PYTHONPATH: the vendored gguf-py).

    Why the vendored gguf-py: the converter must match the gguf package it was written for;
    the PyPI `gguf` (or the copy inside other wheels) can be older and miss new tensor types.
    """
    src = ensure_source(ver)
    script, gguf_py = src / "convert_hf_to_gguf.py", src / "gguf-py"
    if not script.is_file() or not (gguf_py / "gguf").is_dir():
        raise MissingDependencyError(f"{src}: convert_hf_to_gguf.py or gguf-py/ missing from the vendored tree")
    return script, gguf_py


# ---------------------------------------------------------------- build


def _check_toolchain() -> dict[str, str]:
    missing = []
    cmake = shutil.which("cmake")
    if not cmake:
        missing.append("cmake (apt-get install cmake, or pip install cmake)")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        missing.append("a C++17 compiler (apt-get install build-essential)")
    if missing:
        raise MissingDependencyError("building the llama.cpp tools needs: " + "; ".join(missing))
    return {"cmake": cmake or "", "cxx": cxx or "", "ninja": shutil.which("ninja") or ""}


def _built_marker(ver: str | None = None) -> Path:
    return cache_dir(ver) / "build" / ".built.json"


def ensure_built(targets: tuple[str, ...] = TARGETS, jobs: int | None = None, ver: str | None = None) -> dict:
    """Build the llama.cpp tools once (idempotent, locked). Returns {bin_dir, tools, build_s, ...}."""
    ver = ver or version()
    marker = _built_marker(ver)

    def done() -> dict | None:
        if not marker.is_file():
            return None
        info = json.loads(marker.read_text())
        if all(t in info.get("tools", {}) and Path(info["tools"][t]).is_file() for t in targets):
            return info
        return None

    if (info := done()) is not None:
        return info
    src = ensure_source(ver)
    with _locked(ver):
        if (info := done()) is not None:
            return info
        chain = _check_toolchain()
        build = cache_dir(ver) / "build"
        build.mkdir(parents=True, exist_ok=True)
        log_path = cache_dir(ver) / "build.log"
        jobs = jobs or max(1, os.cpu_count() or 1)
        gen = ["-G", "Ninja"] if chain["ninja"] else []
        cmds = [
            ["cmake", "-S", str(src), "-B", str(build), *gen, *CMAKE_FLAGS],
            ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ]
        t0 = time.perf_counter()
        _log(f"building {', '.join(targets)} with -j{jobs} (several minutes; log: {log_path})")
        with log_path.open("w") as log:
            for cmd in cmds:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
                if rc != 0:
                    tail = log_path.read_text(errors="replace")[-2500:]
                    raise MissingDependencyError(
                        f"llama.cpp build failed (`{' '.join(cmd[:3])} ...` exit {rc}); full log: {log_path}\n{tail}"
                    )
        bin_dir = build / "bin"
        tools = {t: str(bin_dir / t) for t in targets if (bin_dir / t).is_file()}
        if len(tools) != len(targets):
            raise MissingDependencyError(
                f"llama.cpp build finished but {sorted(set(targets) - set(tools))} are missing in {bin_dir}"
            )
        prev = json.loads(marker.read_text()).get("tools", {}) if marker.is_file() else {}
        info = {
            "version": ver,
            "bin_dir": str(bin_dir),
            "tools": {**prev, **tools},
            "build_s": round(time.perf_counter() - t0, 1),
            "jobs": jobs,
            "cmake_flags": list(CMAKE_FLAGS),
        }
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(marker)  # atomic "done" marker, written only after every binary exists
        _log(f"built in {info['build_s']:.0f} s -> {bin_dir}")
        return info


def find_tool(name: str) -> Path | None:
    """The tool if it already exists somewhere (no build)."""
    env = os.environ.get("SUPPORTLM_LLAMA_BIN")
    if env and (Path(env) / name).is_file():
        return Path(env) / name
    marker = _built_marker()
    if marker.is_file():
        p = json.loads(marker.read_text()).get("tools", {}).get(name)
        if p and Path(p).is_file():
            return Path(p)
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


def tool(name: str) -> Path:
    """Path to a llama.cpp executable (e.g. "llama-server"); builds the tools if none is found."""
    found = find_tool(name)
    if found is not None:
        return found
    targets = TARGETS if name in TARGETS else (*TARGETS, name)
    return Path(ensure_built(targets)["tools"][name])


if __name__ == "__main__":  # pragma: no cover - `python -m supportlm.llamacpp` = make llama-tools
    print(json.dumps(ensure_built(), indent=2))
