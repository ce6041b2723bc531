"""A fault-injecting pass-through HTTP proxy for loopback tests of the openai backend.

Requests are forwarded to an upstream server; a seeded schedule makes some of them fail the way
real servers do: the connection is dropped, 429 with Retry-After, 500/503, or a stall (a slow
answer). A stall is not turned into a client timeout here: a timed-out request keeps running
upstream, and on a loaded 2-core machine the retries pile up behind it. Timeouts are tested
against a server that never answers instead. Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("drop", "429", "500", "503", "stall")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that timed out on a stall close their socket: expected here


class _Served:
    """A local HTTP server on a free loopback port, served from a thread while in a `with` block."""

    def __init__(self) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FaultProxy(_Served):
    def __init__(self, upstream: str, fault_rate: float = 0.3, seed: int = 0, stall_s: float = 2.0):
        self.upstream = upstream.rstrip("/")
        self.rate, self.rng, self.stall_s = fault_rate, random.Random(seed), stall_s
        self.lock = threading.Lock()
        self.counts = {k: 0 for k in FAULTS + ("ok",)}
        _Served.__init__(self)

    @property
    def url(self) -> str:
        return self.root

    def pick(self) -> str:
        with self.lock:
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else "ok"
            self.counts[fault] += 1
            return fault

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = proxy.pick()
                if fault == "stall":
                    time.sleep(proxy.stall_s)  # a slow answer, bounded
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()  # no response byte: the client sees a reset
                    return
                if fault in ("429", "500", "503"):
                    return self._reply(int(fault), b'{"error": {"message": "injected"}}', {"Retry-After": "1"} if fault == "429" else {})
                self._forward(body)

            def do_GET(self) -> None:
                self._forward(None)

            def _forward(self, body: bytes | None) -> None:
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with opener.open(req, timeout=300) as r:
                        self._reply(r.status, r.read(), {})
                except urllib.error.HTTPError as e:
                    self._reply(e.code, e.read(), {})

            def _reply(self, code: int, data: bytes, headers: dict) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler


class Blackhole:
    """A server that accepts connections and never answers: the client's timeout must fire."""

    def __init__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> "Blackhole":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


class Canned(_Served):
    """A server that answers every request with one fixed reply (status, content type, body); with
    `trickle_s`, the body's first `trickle` bytes go out one at a time that many seconds apart (the
    headers at once), then the rest. Bounded: a trickle ends when its bytes are sent or the client leaves."""

    def __init__(self, body: bytes | str, status: int = 200, content_type: str = "application/json",
                 trickle: int = 0, trickle_s: float = 0.0):
        self.body = body.encode() if isinstance(body, str) else body
        self.status, self.content_type = status, content_type
        self.trickle, self.trickle_s = trickle, trickle_s
        self.requests = 0
        _Served.__init__(self)

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def _handler(self):
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                canned.requests += 1
                self.send_response(canned.status)
                self.send_header("Content-Type", canned.content_type)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.flush()
                slow, rest = canned.body[: canned.trickle], canned.body[canned.trickle:]
                for i in range(len(slow)):
                    time.sleep(canned.trickle_s)
                    self.wfile.write(slow[i:i + 1])
                    self.wfile.flush()
                self.wfile.write(rest)

        return Handler


def chat_reply(content: object = "ok", usage: object = None, raw_usage: str | None = None) -> str:
    """An OpenAI chat completion body; `raw_usage` is pasted in as JSON text (e.g. '1e999')."""
    import json

    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4} if usage is None else usage
    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}], "usage": usage})
    if raw_usage is not None:
        body = body.replace('"usage": {}', '"usage": ' + raw_usage)
    return body
