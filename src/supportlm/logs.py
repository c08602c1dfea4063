"""Console logging for stage scripts and the CLI (one place; libraries configure nothing)."""

from __future__ import annotations

import logging
import sys


def ensure_logging() -> None:
    """Print supportlm.* INFO lines when nobody configured logging (stage scripts, CLI)."""
    logger = logging.getLogger("supportlm")
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False  # a library configuring the root logger later must not print our lines twice
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


# ---------------------------------------------------------------- data
