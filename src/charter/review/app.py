"""The review server's routes (Starlette): the page, and the marks API its script posts to.

    GET  /           the page, with the reviewer's marks as saved (the file is read on every load)
    GET  /api/marks  {"reviewer", "file", "marks": {key: mark}, "stale": n}
    POST /api/marks  {"key": KEY, "mark": "better"|"worse"|"same"|"a"|"b"|null} -> the mark, saved

Only pages of this server may use it: a request naming another host (DNS rebinding) or coming
from another origin is refused, and a mark must be JSON, which a cross-site form cannot send
without the browser asking first (a question this server never answers with yes).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from charter.errors import CharterError
from charter.review.items import PairItem, RevisionItem, find_labels, load_chains, load_pairs, transcripts_of
from charter.runs.reviews import REVISION_MARKS, MarkLog, RevisionMark, run_dir
from charter.review.page import View, csp, render

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 4096
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class Review:
    """A run's items and one reviewer's mark log: what the routes share."""

    def __init__(self, run: str | Path, reviewer: str, labels: Sequence[str | Path] = (), limit: int = 200):
        from charter.runs.runread import records_file

        records_file(run)  # no run: say so before anything is made
        self.run, self.limit = run_dir(run).resolve(), limit
        self.log = MarkLog(self.run, reviewer)
        self.chains, self.more_chains = load_chains(self.run, limit)
        paths = list(dict.fromkeys(transcripts_of(p).resolve() for p in labels)) if labels else find_labels(self.run)
        self.pairs, self.more_pairs = load_pairs(self.run, paths, limit)
        found: list[RevisionItem | PairItem] = [i for c in self.chains for i in c.items] + list(self.pairs)
        self.items = {i.key: i for i in found}
        self.by_item = {i.item: i for i in found}

    def marks(self) -> tuple[dict[str, str], int]:
        """Item key -> its mark as the page shows it (a pair's as the letter shown), from the file;
        and how many marks were made on texts that have changed since."""
        got, stale = {}, 0
        saved = self.log.read()
        for mark in [*saved.revisions, *saved.pairs]:
            item = self.by_item.get(mark.item)
            if item is None:
                continue  # beyond --limit, or from another label file
            if item.digest != mark.digest:
                stale += 1
                continue
            got[item.key] = mark.mark if isinstance(mark, RevisionMark) else "ab"[mark.chosen != item.shown_first]
        return got, stale

    def save(self, key: str, value: str | None) -> str | None:
        """Append the mark of item `key` (None clears it); ValueError/LookupError say what is wrong."""
        item = self.items.get(key)
        if item is None:
            raise LookupError(f"no item {key!r} on this page; reload the page (the server may have been started "
                              "again with another --limit or --labels)")
        if isinstance(item, RevisionItem):
            if value is not None and value not in REVISION_MARKS:
                raise ValueError(f"a revision's mark is better, worse, same or null, not {value!r}")
            self.log.add({"kind": "revision", "record": item.record, "round": item.round, "principle": item.principle,
                          "mark": value, "digest": item.digest})
            return value
        if value is not None and value not in ("a", "b"):
            raise ValueError(f"a pair's mark is a, b or null, not {value!r}")
        chosen = None if value is None else item.shown_first if value == "a" else 1 - item.shown_first
        self.log.add({"kind": "pair", "labels": item.labels_name, "pair": item.pair, "chosen": chosen,
                      "shown_first": item.shown_first, "digest": item.digest})
        return value

    def view(self) -> View:
        marks, stale = self.marks()
        return View(str(self.run), self.log.reviewer, str(self.log.path), self.chains, self.pairs, marks,
                    self.more_chains, self.more_pairs, self.limit, stale)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def host_of(value: str) -> str | None:
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


def refused(request: Request, hosts: set[str] | None) -> JSONResponse | None:
    """A 403 for a request naming another host, or (a POST) coming from another origin."""
    host = request.headers.get("host", "")
    if hosts is not None and host_of(host) not in hosts:
        return error(403, f"this review server answers to {', '.join(sorted(hosts))} only, not {host!r}")
    origin = request.headers.get("origin")
    if request.method == "POST" and origin is not None and urlsplit(origin).netloc != host:
        return error(403, f"marks are accepted from this server's own page only, not from {origin!r}")
    return None


async def read_mark(request: Request) -> tuple[str, str | None] | JSONResponse:
    """(key, mark) of a POST body, or the error response that says what is wrong with it."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error(415, "send the mark as JSON (Content-Type: application/json)")
    body = b""
    async for chunk in request.stream():  # read no more than a mark can be
        body += chunk
        if len(body) > MAX_BODY:
            return error(413, f"a mark is a small JSON object of at most {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        return error(400, f"the body is not JSON ({exc}); send {{\"key\": KEY, \"mark\": MARK}}")
    if not isinstance(data, dict) or not isinstance(data.get("key"), str) or "mark" not in data:
        return error(400, 'send a JSON object {"key": KEY, "mark": MARK} (MARK null to clear)')
    mark = data["mark"]
    if mark is not None and not isinstance(mark, str):
        return error(400, f"'mark' must be text or null, not {mark!r}")
    return data["key"], mark


def review_app(run: str | Path, reviewer: str, labels: Sequence[str | Path] = (), limit: int = 200,
               hosts: set[str] | None = None) -> Starlette:
    """The review page and its API for one reviewer on one run (items loaded now). `hosts`: the
    names requests may address (None: any, for a server listening on every address)."""
    review = Review(run, reviewer, labels, limit)

    async def page(request: Request) -> Response:
        if bad := refused(request, hosts):
            return bad
        html = await run_in_threadpool(lambda: render(review.view()))
        return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": csp()})

    async def get_marks(request: Request) -> Response:
        if bad := refused(request, hosts):
            return bad
        marks, stale = await run_in_threadpool(review.marks)
        return JSONResponse({"reviewer": review.log.reviewer, "file": str(review.log.path), "marks": marks,
                             "stale": stale}, headers=HEADERS)

    async def post_mark(request: Request) -> Response:
        if bad := refused(request, hosts):
            return bad
        got = await read_mark(request)
        if isinstance(got, JSONResponse):
            return got
        try:
            saved = await run_in_threadpool(review.save, *got)
        except LookupError as exc:
            return error(404, str(exc.args[0]))
        except ValueError as exc:
            return error(400, str(exc))
        except CharterError as exc:  # the disk is full, the folder went away: the page shows why
            return error(500, f"the mark was not saved: {exc}")
        return JSONResponse({"key": got[0], "mark": saved}, headers=HEADERS)

    app = Starlette(routes=[Route("/", page, methods=["GET"]), Route("/api/marks", get_marks, methods=["GET"]),
                            Route("/api/marks", post_mark, methods=["POST"])])
    app.state.review = review
    return app


def allowed_hosts(host: str) -> set[str] | None:
    """The names a browser may use for a server listening on `host` (None: every address)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    return LOOPBACK | {host.strip("[]")}
