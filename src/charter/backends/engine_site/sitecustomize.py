"""Run at start-up by the processes vLLM spawns while Charter starts an engine: VLLMBackend puts
this folder first on PYTHONPATH for that moment only (vllm_backend.engine_site_env).

vLLM logs a few notices when its modules are imported, before its logging is configured, so no
level setting reaches them and each engine process printed them again (e.g. "Triton is installed,
but doesn't include CPU backend" three times). Filter those lines, then load the sitecustomize
this one shadows, if any.
"""
import contextlib
import logging
import os
import sys

NOTICES = {"vllm.triton_utils.importing": "doesn't include CPU backend"}


class _DropNotice(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _filter() -> list[tuple[logging.Logger, logging.Filter]]:
    added = [(logging.getLogger(name), _DropNotice(text)) for name, text in NOTICES.items()]
    for logger, notice in added:
        logger.addFilter(notice)
    return added


@contextlib.contextmanager
def quiet_notices():
    """The notices filtered inside the block (Charter's own process, while it imports vLLM)."""
    added = _filter()
    try:
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
    _chain()
