"""The one exception type for problems the user must fix.

The CLI prints the message without a traceback and exits with ``exit_code``:
2 for usage and configuration mistakes, 1 for runtime failures (a camera that
does not open, a broker that refuses us, a model that cannot run).
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class UserError(Exception):
    """Something the user must fix; ``str(error)`` says what is wrong and how to fix it."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(UserError):
    """A configuration or command-line mistake (exit code 2)."""

    exit_code = EXIT_USAGE
