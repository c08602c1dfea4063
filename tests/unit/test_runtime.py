"""runtime: CPU features from /proc/cpuinfo text, child exits in words, crashes isolated in a child."""

from __future__ import annotations

import os
import signal

import pytest

from supportlm.runtime import ChildCrashed, cpu_info, describe_exit, run_in_child

AMX_XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi2 avx2
"""


def test_cpu_info_reads_model_and_instruction_sets() -> None:
    xeon, epyc = cpu_info(AMX_XEON), cpu_info(EPYC)
    assert xeon["model"].startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert {"avx512_bf16", "amx_tile", "amx_int8"} <= set(xeon["isa"])
    assert "ssse3" not in xeon["isa"]  # only the flags that pick kernels
    assert epyc["model"] == "AMD EPYC 7B12" and "avx512f" not in epyc["isa"] and "avx2" in epyc["isa"]
    here = cpu_info()
    assert here["cores"] >= 1 and here["arch"]


def test_describe_exit_says_what_a_signal_means() -> None:
    assert describe_exit(0) == "exit 0" and describe_exit(3) == "exit 3"
    assert describe_exit(-4) == (
        "killed by SIGILL (illegal instruction: the build uses CPU instructions this machine cannot run)"
    )
    assert describe_exit(-9).startswith("killed by SIGKILL (killed from outside: usually the kernel's out-of-memory")


def _square(x: int) -> int:
    return x * x


def _raise() -> None:
    raise ValueError("bad row 7: `intent` is empty")


def _sigill() -> None:
    os.kill(os.getpid(), signal.SIGILL)


def test_run_in_child_returns_reraises_and_reports_crashes() -> None:
    assert run_in_child("square", _square, 12) == 144
    with pytest.raises(ValueError, match="bad row 7"):
        run_in_child("raise", _raise)
    with pytest.raises(ChildCrashed) as exc:
        run_in_child("GGUF q8_0 scoring", _sigill)
    assert exc.value.signal == "SIGILL" and exc.value.exit_code == 6
    text = str(exc.value)
    assert text.startswith("GGUF q8_0 scoring killed by SIGILL (illegal instruction")
    assert "Fix: rebuild for this CPU with `make llama-tools`" in text
