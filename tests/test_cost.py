"""The cost line names the device the run used: GPU-hours only for GPUs. Fake backend."""
import sys

import pytest

from charter.cli import main
from charter.pipeline.cost import engine_device, run_cost
from support import timed


def test_the_hours_are_named_after_the_device():
    recs = [timed(0, 0, 10, "a"), timed(1, 5, 12, "b")]
    assert "0.03 GPU-hours on 2 GPU(s)" in run_cost(recs, gpus=2, device="cuda").line(10)
    assert "0.02 device-hours on the CPU" in run_cost(recs, device="cpu").line(10)
    assert "0.02 device-hours on 1 device(s)" in run_cost(recs).line(10)  # a server's engine: not known


class _Cuda:
    def __init__(self, available):
        self.available = available

    def is_available(self):
        return self.available


@pytest.mark.parametrize("gpu, config, device", [
    (False, {"model": "embedded", "backend": "auto"}, "cpu"),
    (False, {"model": "embedded", "backend": "vllm"}, "cpu"),
    (False, {"model": "x.gguf", "backend": "auto"}, "cpu"),
    (True, {"model": "embedded", "backend": "vllm"}, "cuda"),
    (True, {"model": "vllm:embedded", "backend": "auto"}, "cuda"),
    (True, {"model": "x.gguf", "backend": "auto"}, ""),  # llama.cpp: on the GPU only if built for it
    (True, {"model": "embedded", "backend": "transformers", "backend_options": {"device": "cpu"}}, ""),
    (False, {"model": "gpt", "backend": "openai"}, ""),  # the server's hardware
    (False, {"model": "fake", "backend": "fake"}, ""),
])
def test_the_engines_device_is_told_only_where_it_is_known(monkeypatch, gpu, config, device):
    monkeypatch.setitem(sys.modules, "torch", type("torch", (), {"cuda": _Cuda(gpu)}))
    assert engine_device(config) == device


def test_a_cpu_runs_cost_says_device_hours_not_gpu_hours(tmp_path, capsys, monkeypatch):
    """The embedded model on this machine's CPU (no GPU visible), run on the fake engine's records."""
    from charter.pipeline import cost

    monkeypatch.setattr(cost, "_gpu_visible", lambda: False)
    monkeypatch.setattr(cost, "LOCAL_ENGINES", (*cost.LOCAL_ENGINES, "fake"))  # the fake stands for a local engine
    assert main(["generate", "--backend", "fake", "--limit", "2", "--rounds", "1", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "device-hours on the CPU" in out and "GPU" not in out
