"""Lower layer: what machine we run on, and child processes that may crash.

Imports nothing from supportlm but `errors`; every other module may import it.

- `cpu_info()`: the CPU model, architecture, cores and the instruction sets that decide which
  llama.cpp kernels can run (recorded beside every speed, and the key of the llama.cpp build cache).
- `describe_exit()` / `check_exit()`: a child's exit status in words. A negative return code is a
  signal; SIGILL from a native binary means "built for instructions this CPU lacks", which a bare
  "exited with -4" never told anyone.
- `run_in_child()`: run a function in a spawned process so that a crash in native code (llama.cpp
  through its Python binding) becomes a `ChildCrashed` error naming the step, the signal and the
  fix, instead of taking down the stage or the whole pytest run.
- `wait_http()`: wait for a server started in another process or container (an engine loading
  its weights) with a bounded loop, failing with the URL and the last answer.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supportlm.errors import SupportLMError

# /proc/cpuinfo flags that decide which llama.cpp CPU kernels are safe and fast (x86-64)
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni",
    "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """{model, arch, cores, isa}: `isa` lists the ISA_FLAGS this CPU reports (x86), or its
    `Features` line (Arm). `cpuinfo` is the text of /proc/cpuinfo (read when None; tests pass one)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    model = model or platform.processor() or "unknown"
    x86 = bool(flags & {"sse2", "avx", "sse4_2"})
    isa = [f for f in ISA_FLAGS if f in flags] if x86 else sorted(flags)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"model": model, "arch": platform.machine(), "cores": cores, "isa": isa}


# ---------------------------------------------------------------- child exits in words

SIGNAL_MEANINGS: dict[int, tuple[str, str]] = {
    signal.SIGILL: (
        "illegal instruction: the build uses CPU instructions this machine cannot run",
        (
            "rebuild for this CPU with `make llama-tools` (builds are cached per CPU feature set), or set "
            "SUPPORTLM_LLAMA_CPU=portable for a build that runs on any x86-64-v3 CPU"
        ),
    ),
    signal.SIGSEGV: (
        (
            "segmentation fault: invalid memory access (a bug, a corrupt or truncated model file, "
            "or a binary built against another library version)"
        ),
        (
            "check the model file (re-run the stage that wrote it) and that the binary and its libraries "
            "come from one build (`make llama-tools`)"
        ),
    ),
    signal.SIGBUS: (
        "bus error: a memory-mapped file shrank or the disk/shared memory is full",
        "free disk space and re-run; do not rewrite a model file while it is being read",
    ),
    signal.SIGKILL: (
        "killed from outside: usually the kernel's out-of-memory killer, or a timeout",
        "free memory or lower the threads/context/batch size; `dmesg` names the OOM kill",
    ),
    signal.SIGABRT: (
        "aborted: a failed assertion inside the program",
        "read the last lines it printed (above); they name the failed check",
    ),
    signal.SIGFPE: ("arithmetic error (division by zero)", "a bug: report it with the input that caused it"),
    signal.SIGTERM: ("terminated by a signal from outside", "something stopped it; re-run"),
}


def describe_exit(returncode: int | None) -> str:
    """`exit 3`, or `killed by SIGILL (illegal instruction: ...)`."""
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    meaning = SIGNAL_MEANINGS.get(sig, (sig.name, ""))[0]
    return f"killed by {sig.name} ({meaning})"


def signal_fix(returncode: int | None) -> str:
    """The fix for a child killed by a signal (SIGNAL_MEANINGS), or "" for exits and unknown signals."""
    if returncode is None or returncode >= 0:
        return ""
    return SIGNAL_MEANINGS.get(-returncode, ("", ""))[1]


class ChildCrashed(SupportLMError):
    """A child process (native binary or isolated step) died from a signal."""

    exit_code = 6

    def __init__(self, what: str, returncode: int, tail: str = "") -> None:
        self.what, self.returncode = what, returncode
        self.signal = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else None
        fix = signal_fix(returncode)
        lines = [f"{what} {describe_exit(returncode)}."]
        if fix:
            lines.append(f"Fix: {fix}.")
        if tail.strip():
            lines.append("Last output:\n  " + "\n  ".join(tail.strip().splitlines()[-12:]))
        super().__init__("\n".join(lines))


def check_exit(what: str, returncode: int, tail: str = "") -> None:
    """Raise ChildCrashed when `returncode` is a signal; ordinary non-zero exits are the caller's."""
    if returncode is not None and returncode < 0:
        raise ChildCrashed(what, returncode, tail)


# ---------------------------------------------------------------- isolated calls


class ChildError(SupportLMError):
    """The isolated function raised; carries the child's traceback text (exit code kept if known)."""


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:  # pragma: no cover
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as exc:  # noqa: BLE001 - everything crosses back to the parent
        text = traceback.format_exc()
        try:
            conn.send(("raised", exc, text))
        except Exception:  # noqa: BLE001 - an unpicklable exception: send its text
            conn.send(("raised", None, text))


def run_in_child(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a spawned process; its return value, or its exception re-raised here.

    A signal in the child (SIGILL in a native kernel, SIGSEGV, the OOM killer) raises ChildCrashed
    naming `what`; the parent, its threads and its open files are unaffected. `fn` and its
    arguments must be picklable (module-level functions, plain data).
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args, kwargs), name=f"supportlm: {what}")
    proc.start()
    child.close()
    message = None
    try:
        with contextlib.suppress(EOFError):
            message = parent.recv()  # before join: a large result would block the child's send
    finally:
        proc.join()
        parent.close()
    if message is None:
        check_exit(what, proc.exitcode)
        raise ChildError(f"{what}: the child process ended ({describe_exit(proc.exitcode)}) without a result")
    if message[0] == "ok":
        return message[1]
    _, exc, text = message
    if isinstance(exc, BaseException):
        raise exc
    raise ChildError(f"{what} failed in its child process:\n{text}")


def wait_http(url: str, timeout_s: float, interval_s: float = 2.0) -> float:
    """Poll `url` until it answers 2xx; return the seconds waited. ChildError naming the URL on timeout."""
    import time
    import urllib.error
    import urllib.request

    t0 = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, interval_s)) as resp:
                if 200 <= resp.status < 300:
                    return time.monotonic() - t0
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if time.monotonic() - t0 >= timeout_s:
            raise ChildError(f"{url} did not answer 2xx within {timeout_s:.0f} s (last: {last})")
        time.sleep(interval_s)


__all__ = [
    "ISA_FLAGS",
    "SIGNAL_MEANINGS",
    "ChildCrashed",
    "ChildError",
    "check_exit",
    "cpu_info",
    "describe_exit",
    "run_in_child",
    "signal_fix",
    "wait_http",
]
