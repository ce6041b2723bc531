import os
import shutil
import signal
import tempfile
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


# ---- the report's and the review page's browser tests -------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,2000"]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install selenium")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("chromium/chromedriver missing: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="charter-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def labelled(run: Path) -> Path:
    """The `run` fixture (3 chains of 1 round) with a `label` output saved under it (3 pairs)."""
    from charter.rlcai.labels import LabelConfig, label
    from support import Scripted, longer, policy

    cfg = LabelConfig(backend="fake", limit=3, samples=2, max_tokens=20, out=str(run / "labels.jsonl")).validate()
    label(cfg, policy=policy(), feedback=Scripted(longer), progress=False)
    return run
