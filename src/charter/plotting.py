"""One plotting set-up for every figure Charter draws (training curves, calibration, the report).

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), never pyplot: no
global backend switch, no GUI, no figure registry to leak, safe beside a user's own notebook
plots. matplotlib is optional: without it `subplots` returns None and callers skip the plot
(the JSON/JSONL they write is the record; a plot is a convenience).
"""
from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path
from typing import Any, Iterator

from charter.jsonl import atomic_write


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, dpi: float | None = None,
             **kwargs: Any):
    """(figure, axes) like pyplot.subplots, or None when matplotlib is not installed."""
    if not available():
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


@contextlib.contextmanager
def style(params: dict[str, Any]) -> Iterator[None]:
    """matplotlib rc settings for the figures made inside (restored afterwards)."""
    import matplotlib

    with matplotlib.rc_context(params):
        yield


def save(fig, path: str | Path, **savefig: Any) -> Path:
    """Write the figure atomically; the format follows the file's suffix (.png by default)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig))


def png_base64(fig, **savefig: Any) -> str:
    """The figure as a base64 PNG string, for embedding in HTML."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
