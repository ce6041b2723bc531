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


def failure_kind(exc: BaseException) -> str:
    """What makes two failures 'the same' (the guard that stops a run whose first requests all
    fail alike): the exception's type, the types it was raised from, and any HTTP status; never
    the message, which a gateway makes unique with a request id."""
    names, status, seen = [], None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names.append(type(exc).__name__)
        status = status or getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None),
                                                                         "status_code", None)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return " <- ".join(names) + (f" (HTTP {status})" if status else "")


def stop_error(exc: BaseException) -> BaseException:
    """What a run raises when a worker thread failed outside a backend call (a write, a callback):
    a CharterError or an OSError as it is (one line at the CLI), anything else as a RunError that
    names it (its traceback kept as the cause)."""
    if isinstance(exc, (CharterError, OSError)):
        return exc
    err = RunError(f"the run stopped: a worker failed with {type(exc).__name__}: {exc}. The records finished so "
                   "far are saved; run the same command again to resume, and report this if it happens again")
    err.__cause__ = exc
    return err
