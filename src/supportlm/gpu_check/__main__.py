"""Entry point of `python -m supportlm.gpu_check` (see supportlm/gpu_check/__init__.py)."""

import sys

from supportlm.gpu_check.cli import main

if __name__ == "__main__":
    sys.exit(main())
