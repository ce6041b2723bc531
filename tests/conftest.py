import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads must not spin: tests run torch beside llama.cpp servers and subprocesses,
# and spinning threads on 2 cores slowed small matmuls ~40x in our measurements.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ctrl-C tests need SIGINT delivered: a shell that starts the suite in the background (`make test &`
# without job control) ignores it, and children inherit that. A handler is reset to the default on
# exec, so the CLI subprocesses get it too.
signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "anthropic-cai"


@pytest.fixture
def shared() -> Path:
    """The paper's released prompt files (beside the clone in this workplace)."""
    if not SHARED.exists():
        pytest.skip(f"the paper's files are not at {SHARED} (they live in ../shared beside the clone)")
    return SHARED


@pytest.fixture
def fake():
    from charter.backends.fake import FakeBackend

    return FakeBackend()

import sys

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as fault_proxy


@pytest.fixture
def run(tmp_path, monkeypatch, capsys) -> Path:
    """A three-record run `r` made with the fake backend, the working directory beside it."""
    from charter.cli import main
    from support import GEN

    monkeypatch.chdir(tmp_path)
    assert main(GEN + ["--limit", "3", "--out", "r"]) == 0
    capsys.readouterr()
    return tmp_path / "r"


@pytest.fixture
def default_sigterm():
    """SIGTERM at Python's default, as in a fresh process (an earlier test's `ray.init` installs its own)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray (2 CPUs) for a module's tests, shut down after them."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024 * 1024,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}})
    yield
    ray.shutdown()
