"""`python -m supportlm ...`: the CLI without an installed entry point (the training image runs the
mounted checkout's code through PYTHONPATH and has no `supportlm` script)."""

from supportlm.cli import main

main()
