"""A small error hierarchy. Every message says what to do; the CLI prints it without a traceback."""
from __future__ import annotations


class CharterError(Exception):
    """Base class: a problem the user can fix."""

    exit_code = 2


class ConfigError(CharterError):
    """A bad configuration file or flag."""


class InputError(CharterError):
    """A bad input file (prompts, constitution, few-shot, dataset)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)
        self.path, self.line = path, line


class BackendError(CharterError):
    """A backend could not be created or failed for good."""


class RunError(CharterError):
    """A run directory is in a state that needs a decision (e.g. changed config)."""
