"""`charter review`: ReviewConfig and `review(cfg)`, which serves the review page (charter.review.app)
on uvicorn until Ctrl-C or SIGTERM.

The socket is bound before the server starts, so port 0 (a free port) is known in time for
`ready(url)`. uvicorn runs in this process (no workers, no reloader): when the command ends,
nothing of it is left running. Ctrl-C and SIGTERM stop it the same way: the connections close,
and `review` returns (marks are on disk as each is made, so there is nothing to save).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from charter.config import Config, setting
from charter.errors import ConfigError
from charter.runs.reviews import check_reviewer

log = logging.getLogger("charter.review")


@dataclass
class ReviewConfig(Config):
    """Everything that defines a `charter review` session."""

    run: str = setting("", "run directory made by `charter generate`", flag="run")
    labels: list[str] = setting([], "a `charter label` output whose pairs to review (its --out file or "
                                "NAME.transcripts.jsonl; repeat for more; default: those saved under the run)",
                                cli={"action": "append", "metavar": "FILE"})
    reviewer: str = setting("", "whose marks these are, saved to RUN/reviews/NAME.jsonl (default: $USER)")
    host: str = setting("127.0.0.1", "address to listen on (default 127.0.0.1: this machine only)")
    port: int = setting(0, "port to listen on (default 0: a free port, printed)", bounds="[0, 65535]")
    open: bool = setting(False, "open the page in the default web browser")
    limit: int = setting(200, "chains and label pairs on the page: the first N of each (default 200)", bounds=">= 1")

    REQUIRED = ("run",)

    def check(self, where: str) -> None:
        if self.reviewer:
            check_reviewer(self.reviewer)


@dataclass
class ReviewResult:
    url: str
    file: Path  # the reviewer's marks file
    marks: int  # marks in force when the server stopped


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a ConfigError saying what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port} is in use on {host}; pick another port, or --port 0 for a free one") \
                from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port") from None


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host.strip("[]"))
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def review(cfg: ReviewConfig, ready: Callable[[str], None] | None = None) -> ReviewResult:
    """Serve the review page of cfg.run for cfg.reviewer until Ctrl-C or SIGTERM (in the main
    thread); `ready(url)` is called once the page can be loaded. Returns where the marks are."""
    from charter.review.app import allowed_hosts, review_app

    cfg.validate()
    if not cfg.reviewer:
        raise ConfigError("no reviewer: pass --reviewer NAME (it names the marks file RUN/reviews/NAME.jsonl)")
    app = review_app(cfg.run, cfg.reviewer, cfg.labels, cfg.limit, allowed_hosts(cfg.host))
    state = app.state.review
    if allowed_hosts(cfg.host) is None:
        log.warning("warning: listening on every address (%s): anyone who can reach this machine can read the run "
                    "and mark it", cfg.host)
    with bind(cfg.host, cfg.port) as sock:
        url = url_of(sock, cfg.host)
        server = _server(app)
        if ready:
            ready(url)
        server.run(sockets=[sock])
    marks = state.log.read()
    return ReviewResult(url, state.log.path, len(marks.revisions) + len(marks.pairs))


def _server(app):
    """uvicorn's server, quiet (warnings only, no access log), without lifespan events."""
    import uvicorn

    class Server(uvicorn.Server):
        """Stopped by Ctrl-C or SIGTERM without raising the signal again once stopped (uvicorn does,
        to end the process): the command reports where the marks are and exits 0."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    return Server(config)
