"""How the bench speaks: progress lines on stderr and BenchError when the load test itself fails."""

from __future__ import annotations

import sys

from supportlm.errors import SupportLMError


class BenchError(SupportLMError):
    """The load test itself failed (Locust crashed, the stack never became ready)."""

    exit_code = 5


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
