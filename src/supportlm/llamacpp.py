"""llama.cpp, built once: the tools (llama-quantize, llama-server, llama-bench, ...), the shared
libllama that the llama-cpp-python binding loads, and the HF -> GGUF converter, all offline.

The llama-cpp-python sdist vendors the whole llama.cpp tree (`vendor/llama.cpp`: the
`convert_hf_to_gguf.py` script, `gguf-py/` and `tools/`), pinned to the same commit as the
Python binding in the venv. So instead of fetching llama.cpp from GitHub we:

1. get the sdist (`pip download --no-binary :all: --no-deps llama-cpp-python==VERSION`; pip's
   cache or PyPI; or `SUPPORTLM_LLAMA_SDIST=/path/to/llama_cpp_python-VERSION.tar.gz`),
2. extract `vendor/llama.cpp` once into `~/.cache/supportlm/llama.cpp-VERSION/src`,
3. build the tools and `libllama.so` with cmake into `.../build-<key>/bin` (shared libraries with
   `$ORIGIN` rpaths, so the folder can be copied whole, e.g. into an image).

One build, not two: `make setup` installs the binding without compiling (CMAKE_ARGS=-DLLAMA_BUILD=OFF)
and `binding()` points it at this build's libllama (LLAMA_CPP_LIB_PATH) before importing it.

Why not `GGML_NATIVE=ON` (cmake's default): `-march=native` on an Intel CPU with AMX compiles
ggml's AMX kernels, and q8_0/q4_0/q4_k_m decoding then dies with SIGILL on `tilezero` in VMs
that report AMX. The build instead names its instruction sets (`SUPPORTLM_LLAMA_CPU`):

- `host` (default): the SSE4.2/AVX/AVX2/FMA/F16C/BMI2/AVX-VNNI/AVX-512 subsets this CPU reports,
  never AMX; the same speed as native where both run (see README);
- `portable`: x86-64-v3 (AVX2, FMA, F16C, BMI2), for images that run on other hosts.

The build folder is keyed by version + the exact cmake flags (which encode the CPU features that
matter), so a cache carried to another CPU never reuses a build that can fault there. Every step
is idempotent, atomic (tmp dir + rename, a "done" marker written last) and runs under a file lock.

Lookup order for `tool(name)`: `$SUPPORTLM_LLAMA_BIN/<name>` (configured) -> this build -> build it.
A binary merely found on $PATH is never used: what runs is what was configured or built, and
`build_info()` says which (recorded in the reports).

    python -m supportlm.llamacpp      # = make llama-tools

Raises:
    MissingDependencyError: no cmake / C++ compiler, the sdist cannot be found or downloaded,
        or the build fails (the message carries the log path and its tail).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supportlm.errors import MissingDependencyError
from supportlm.runtime import cpu_info, describe_exit

DEFAULT_VERSION = "0.3.36"  # the llama-cpp-python pin in pyproject; the vendored llama.cpp matches it
# only what the pipeline uses (+ `llama`, the shared library the binding loads); the full tree has ~60
# targets and takes 3-4x longer. imatrix: calibrated 4-bit quantization; perplexity: KL-divergence of each
# variant against f16; lookup-create/-stats: the n-gram cache llama-server drafts from (--lookup-cache-static)
TARGETS = ("llama", "llama-quantize", "llama-server", "llama-bench", "llama-imatrix", "llama-perplexity",
           "llama-lookup-create", "llama-lookup-stats")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",  # no libcurl: offline, models are local files (ignored by newer trees)
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS client in llama-server; the gateway terminates TLS
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=ON",  # configured, not all built: llama-lookup-create lives in examples/
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ... or a download from the HF hub: neither offline
    "-DBUILD_SHARED_LIBS=ON",  # libllama.so for the binding; the tools link the same libraries
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",  # $ORIGIN rpaths: bin/ works wherever it is copied
    "-DGGML_BACKEND_DL=OFF",
    "-DGGML_NATIVE=OFF",  # instruction sets named below instead of -march=native (see the docstring)
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
# ggml option -> the /proc/cpuinfo flags it needs (ggml's AVX512 option compiles F, CD, VL, DQ and BW)
ISA_OPTIONS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi"),
    "GGML_AVX512_VNNI": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_vnni"),
    "GGML_AVX512_BF16": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_bf16"),
}
PORTABLE_ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")  # x86-64-v3: every x86 host here
CPU_MODES = ("host", "portable")
# the environment that selects a build: child processes that must use the same one keep these
LLAMA_BUILD_ENV = ("SUPPORTLM_CACHE", "SUPPORTLM_LLAMA_BIN", "SUPPORTLM_LLAMA_CPU", "SUPPORTLM_LLAMA_SDIST")


def cpu_mode() -> str:
    """`SUPPORTLM_LLAMA_CPU`: host (default) or portable."""
    mode = os.environ.get("SUPPORTLM_LLAMA_CPU", "host").strip() or "host"
    if mode not in CPU_MODES:
        raise MissingDependencyError(f"SUPPORTLM_LLAMA_CPU={mode!r}: must be one of {', '.join(CPU_MODES)}")
    return mode


def isa_flags(mode: str | None = None, cpu: dict | None = None) -> list[str]:
    """The `-DGGML_<ISA>=ON|OFF` flags for `mode`: every option set explicitly, AMX never."""
    mode = mode or cpu_mode()
    cpu = cpu or cpu_info()
    if cpu["arch"] not in ("x86_64", "AMD64", "i686"):
        return ["-DGGML_CPU_ARM_ARCH=native"] if cpu["arch"] in ("aarch64", "arm64") else []
    have = set(PORTABLE_ISA) if mode == "portable" else set(cpu["isa"])
    return [f"-D{opt}={'ON' if set(need) <= have else 'OFF'}" for opt, need in ISA_OPTIONS.items()]


def build_flags(mode: str | None = None, cpu: dict | None = None) -> list[str]:
    return [*CMAKE_FLAGS, *isa_flags(mode, cpu)]


def build_key(flags: list[str]) -> str:
    """`build-<12 hex>`: a hash of the exact cmake flags (so of the instruction sets compiled in)."""
    return "build-" + hashlib.sha256("\n".join(flags).encode()).hexdigest()[:12]


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
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (Debian bookworm's 3.11.2 has none)
                tar.extractall(tmp, members=members, filter="data")
            else:  # the same guarantees by hand: regular files and dirs only, nothing outside tmp
                for m in members:
                    if m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise MissingDependencyError(f"{sdist}: unsafe path in the archive: {m.name}")
                    m.mode &= 0o755
                tar.extractall(tmp, members=members)  # members checked above
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


def build_dir(ver: str | None = None, flags: list[str] | None = None) -> Path:
    """The build folder for this version and these flags (default: this CPU's, SUPPORTLM_LLAMA_CPU)."""
    return cache_dir(ver) / build_key(flags if flags is not None else build_flags())


def _built_marker(ver: str | None = None, flags: list[str] | None = None) -> Path:
    return build_dir(ver, flags) / ".built.json"


def _read_marker(marker: Path, targets: tuple[str, ...]) -> dict | None:
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    if all(t in info.get("tools", {}) and Path(info["tools"][t]).is_file() for t in targets):
        return info
    return None


def _artifact(bin_dir: Path, target: str) -> Path:
    """Where a cmake target lands: executables as bin/<name>, the library as bin/lib<name>.so."""
    return bin_dir / target if target.startswith("llama-") else bin_dir / f"lib{target}.so"


def ensure_built(targets: tuple[str, ...] = TARGETS, jobs: int | None = None, ver: str | None = None) -> dict:
    """Build the llama.cpp tools + libllama once per (version, flags) (idempotent, locked).

    Returns the build record: {version, bin_dir, lib_dir, tools, cmake_flags, cpu_mode, cpu, build_s, ...}.
    """
    ver = ver or version()
    mode = cpu_mode()
    cpu = cpu_info()
    flags = build_flags(mode, cpu)
    marker = _built_marker(ver, flags)
    if (info := _read_marker(marker, targets)) is not None:
        return info
    src = ensure_source(ver)
    with _locked(ver):
        if (info := _read_marker(marker, targets)) is not None:
            return info
        chain = _check_toolchain()
        build = build_dir(ver, flags)
        build.mkdir(parents=True, exist_ok=True)
        log_path = build / "build.log"
        jobs = jobs or max(1, os.cpu_count() or 1)
        gen = ["-G", "Ninja"] if chain["ninja"] else []
        cmds = [
            ["cmake", "-S", str(src), "-B", str(build), *gen, *flags],
            ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ]
        t0 = time.perf_counter()
        _log(f"building {', '.join(targets)} ({mode}: {build.name}) with -j{jobs} (minutes; log: {log_path})")
        with log_path.open("w") as log:
            for cmd in cmds:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
                if rc != 0:
                    tail = log_path.read_text(errors="replace")[-2500:]
                    raise MissingDependencyError(
                        f"llama.cpp build failed (`{' '.join(cmd[:3])} ...` {describe_exit(rc)}); "
                        f"full log: {log_path}\n{tail}"
                    )
        bin_dir = build / "bin"
        tools = {t: str(_artifact(bin_dir, t)) for t in targets if _artifact(bin_dir, t).is_file()}
        if len(tools) != len(targets):
            raise MissingDependencyError(
                f"llama.cpp build finished but {sorted(set(targets) - set(tools))} are missing in {bin_dir}"
            )
        prev = json.loads(marker.read_text()).get("tools", {}) if marker.is_file() else {}
        info = {
            "version": ver,
            "bin_dir": str(bin_dir),
            "lib_dir": str(bin_dir),
            "tools": {**prev, **tools},
            "build_s": round(time.perf_counter() - t0, 1),
            "jobs": jobs,
            "cpu_mode": mode,
            "cmake_flags": flags,
            "built_on": cpu,
        }
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(marker)  # atomic "done" marker, written only after every binary exists
        _log(f"built in {info['build_s']:.0f} s -> {bin_dir}")
        return info


def _configured_dir() -> Path | None:
    env = os.environ.get("SUPPORTLM_LLAMA_BIN")
    if not env:
        return None
    d = Path(env).expanduser()
    if not d.is_dir():
        raise MissingDependencyError(f"SUPPORTLM_LLAMA_BIN={env}: no such directory")
    return d


def find_tool(name: str) -> Path | None:
    """The tool if it already exists (no build): `$SUPPORTLM_LLAMA_BIN/<name>`, else this CPU's build.

    Never a binary that merely happens to be on $PATH: an unrelated llama.cpp of another version or
    instruction set would run silently in place of ours.
    """
    configured = _configured_dir()
    if configured is not None:
        return configured / name if (configured / name).is_file() else None
    info = _read_marker(_built_marker(), ())
    p = (info or {}).get("tools", {}).get(name)
    return Path(p) if p and Path(p).is_file() else None


_announced: set[str] = set()


def tool(name: str) -> Path:
    """Path to a llama.cpp executable (e.g. "llama-server"); builds the tools if none is found.

    The binary used is logged once per process (stderr) with where it came from.
    """
    found = find_tool(name)
    if found is None:
        if _configured_dir() is not None:
            raise MissingDependencyError(
                f"SUPPORTLM_LLAMA_BIN={os.environ['SUPPORTLM_LLAMA_BIN']} has no {name}; "
                "unset it to use the project's own build (`make llama-tools`)"
            )
        targets = TARGETS if name in TARGETS else (*TARGETS, name)
        found = Path(ensure_built(targets)["tools"][name])
    if name not in _announced:
        _announced.add(name)
        _log(f"using {found} ({build_info()['source']})")
    return found


def build_info() -> dict:
    """What llama.cpp this process uses, for the reports: source, version, flags, the CPU it was built on."""
    configured = _configured_dir()
    if configured is not None:
        return {"source": "SUPPORTLM_LLAMA_BIN", "bin_dir": str(configured), "version": version()}
    info = _read_marker(_built_marker(), ())
    if info is None:
        return {"source": "not built yet", "version": version(), "cpu_mode": cpu_mode()}
    keep = ("version", "bin_dir", "cpu_mode", "cmake_flags")
    return {"source": "project build (make llama-tools)", "build": Path(info["bin_dir"]).parent.name,
            **{k: info.get(k) for k in keep}}  # fmt: skip


def lib_dir() -> Path:
    """The folder holding libllama.so for the binding: SUPPORTLM_LLAMA_BIN if it has one, else our build."""
    configured = _configured_dir()
    if configured is not None and (configured / "libllama.so").is_file():
        return configured
    return Path(ensure_built()["lib_dir"])


def binding() -> Any:
    """`import llama_cpp`, loading this project's libllama (one build for tools and binding).

    The wheel is installed without its own library (`make setup`); LLAMA_CPP_LIB_PATH is read once,
    at the binding's first import, so it is set here before that import.
    """
    if "llama_cpp" not in sys.modules:
        os.environ["LLAMA_CPP_LIB_PATH"] = str(lib_dir())
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(f"llama-cpp-python is not installed: pip install -e '.[serve]' ({exc})") from None
    except (OSError, RuntimeError) as exc:
        raise MissingDependencyError(
            f"llama-cpp-python could not load libllama from {os.environ.get('LLAMA_CPP_LIB_PATH')}: {exc}\n"
            "Fix: `make llama-tools` (rebuilds it for this CPU)"
        ) from None
    return llama_cpp


if __name__ == "__main__":  # pragma: no cover - `python -m supportlm.llamacpp` = make llama-tools
    print(json.dumps(ensure_built(), indent=2))
