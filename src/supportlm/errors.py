"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero.

Anything else that escapes is a bug and keeps its traceback.
"""


class SupportLMError(Exception):
    """Base of every error caused by the user's input, config or environment."""

    exit_code = 1


class ConfigError(SupportLMError):
    """params.yaml (or an override) has an unknown key or a bad value."""

    exit_code = 2


class DataError(SupportLMError):
    """A data file is structurally broken: names the file, the line and what is wrong."""

    exit_code = 3


class MissingDependencyError(SupportLMError):
    """An optional extra is needed for the configured behaviour."""

    exit_code = 4
