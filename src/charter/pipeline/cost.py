"""What a run cost, from its records: tokens in and out, engine seconds, throughput, and the time and
device-hours (GPU-hours on a GPU) a run of N prompts of the same shape would take.

Every record carries `tokens` {prompt, completion} summed over its calls and `timings` {seconds,
finished}: when it left the engine and how long it was in flight. Records overlap (the engine
batches them), so engine seconds are the length of the union of the records' [finished - seconds,
finished] spans: busy time, without model loading or the gaps between resumed sessions. A
projection scales that by prompts (a prompt's helpfulness samples count as one prompt, as in
`generate --limit`), so it holds for the same model, engine, hardware, rounds and lengths.
"""
from __future__ import annotations

import json
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from charter.types import Record

PAPER_RED_TEAM = 182_831  # the paper's red-team prompts (42,496 human + 140,335 model-written)
PROJECTIONS = (1_000, 10_000, PAPER_RED_TEAM)


@dataclass(frozen=True)
class RunCost:
    records: int
    prompts: int
    tokens_in: int  # prompt tokens over every call (few-shots and conversation re-sent each call)
    tokens_out: int  # generated tokens
    engine_seconds: float | None  # None: no record has timings
    timed_prompts: int  # prompts whose records all have timings (what a projection scales from)
    gpus: int = 1  # devices the engine held (tensor parallel size): device-hours = hours x gpus
    device: str = ""  # what the engine ran on: "cuda", "cpu", or "" when unknown (a server; a run read later)

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens per engine second."""
        return self.tokens_out / self.engine_seconds if self.engine_seconds else None

    def projected_seconds(self, n: int) -> float | None:
        if not self.engine_seconds or not self.timed_prompts:
            return None
        return n * self.engine_seconds / self.timed_prompts

    def projected_gpu_hours(self, n: int) -> float | None:
        seconds = self.projected_seconds(n)
        return None if seconds is None else seconds * self.gpus / 3600

    def to_dict(self, projections: Sequence[int] = PROJECTIONS) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second,
                "projections": [{"prompts": n, "seconds": self.projected_seconds(n),
                                 "gpu_hours": self.projected_gpu_hours(n)} for n in projections]}

    def line(self, n: int = 10_000) -> str:
        """One line for a summary: what this run took and what N prompts would."""
        if self.engine_seconds is None:
            return f"cost: {self.tokens_in:,} tokens in, {self.tokens_out:,} out (no timings in the records)"
        hours = self.projected_gpu_hours(n) or 0.0
        return (f"cost: {self.tokens_in:,} tokens in, {self.tokens_out:,} out, {self.engine_seconds:.1f} engine s "
                f"({self.tokens_per_second or 0:.1f} tok/s out); {n:,} prompts of this shape: "
                f"~{format_duration(self.projected_seconds(n) or 0.0)}, {hours:.2f} {self.hours_unit()}")

    def hours_unit(self) -> str:
        """GPU-hours only where the engine is known to have run on GPUs."""
        if self.device == "cuda":
            return f"GPU-hours on {self.gpus} GPU(s)"
        if self.device == "cpu":
            return "device-hours on the CPU"
        return f"device-hours on {self.gpus} device(s)"


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end] spans."""
    union = Union()
    for start, end in spans:
        union.add(start, end)
    return union.length()


class Union:
    """A union of [start, end] spans fed one at a time, kept as sorted disjoint intervals: memory
    grows with the gaps between them (idle stretches, resumed sessions), not with the spans, so
    the cost of a 300k-record run is summed in flat memory (and without numpy)."""

    def __init__(self) -> None:
        self.starts, self.ends = array("d"), array("d")

    def add(self, start: float, end: float) -> None:
        if end < start:
            return
        i, j = bisect_left(self.ends, start), bisect_right(self.starts, end)  # [i, j): the intervals it touches
        if i == j:
            self.starts.insert(i, start)
            self.ends.insert(i, end)
            return
        self.starts[i], self.ends[i] = min(start, self.starts[i]), max(end, self.ends[j - 1])
        del self.starts[i + 1:j], self.ends[i + 1:j]

    def length(self) -> float:
        return sum(e - s for s, e in zip(self.starts, self.ends))


def _span(r: Record) -> tuple[float, float] | None:
    t = r.timings or {}
    seconds, finished = t.get("seconds"), t.get("finished")
    if not isinstance(seconds, (int, float)) or not isinstance(finished, (int, float)):
        return None
    return finished - max(seconds, 0.0), finished


def run_cost(records: Iterable[Record], gpus: int = 1, device: str = "") -> RunCost:
    """A run's cost from its records (failed ones included: they used the engine too), in one pass
    over a list or a stream (memory: ~8 bytes per prompt); `device`: see engine_device."""
    from charter.runs.idset import IdSet

    busy, prompts, untimed = Union(), IdSet(), IdSet()
    n = tokens_in = tokens_out = 0
    for r in records:
        key = json.dumps([r.kind, r.prompt], sort_keys=True)
        prompts.add(key)
        span = _span(r)
        if span is None:
            untimed.add(key)
        else:
            busy.add(*span)
        n += 1
        tokens_in += int(r.tokens.get("prompt", 0))
        tokens_out += int(r.tokens.get("completion", 0))
    return RunCost(records=n, prompts=len(prompts), tokens_in=tokens_in, tokens_out=tokens_out,
                   engine_seconds=round(busy.length(), 3) if busy.starts else None,
                   timed_prompts=len(prompts) - len(untimed), gpus=max(int(gpus), 1), device=device)


def engine_gpus(config: object) -> int:
    """Devices the engine held, from a run's config: vLLM's tensor_parallel_size when set, else 1."""
    options = config.get("backend_options") if isinstance(config, dict) else None
    tp = options.get("tensor_parallel_size") if isinstance(options, dict) else None
    return tp if isinstance(tp, int) and not isinstance(tp, bool) and tp >= 1 else 1


LOCAL_ENGINES = ("auto", "transformers", "vllm")  # engines that pick the GPU where one is visible


def engine_device(config: object) -> str:
    """What a run's engine ran on, for an engine that ran in this process on this machine: "cpu"
    where no GPU is visible (so none was used), "cuda" for one that takes a visible GPU; "" when
    it cannot be told (a server's engine, llama.cpp's build, a device option)."""
    from charter.backends import split_spec

    if not isinstance(config, dict):
        return ""
    backend, model = split_spec(str(config.get("model", "")), str(config.get("backend", "auto")))
    if backend == "auto" and model.lower().endswith(".gguf"):
        backend = "llamacpp"  # what auto picks for a GGUF file
    if backend not in (*LOCAL_ENGINES, "llamacpp"):
        return ""
    if not _gpu_visible():
        return "cpu"
    options = config.get("backend_options")
    chose_device = isinstance(options, dict) and "device" in options
    return "cuda" if backend in LOCAL_ENGINES and not chose_device else ""


def _gpu_visible() -> bool:
    import os
    import sys

    torch = sys.modules.get("torch")  # loaded by the engine that just ran: its answer is the one that counted
    if torch is not None:
        return bool(torch.cuda.is_available())
    return os.path.exists("/dev/nvidia0") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:.1f} days"
