"""What `charter redteam` asks of the engine: one scheduler program per topic (charter.pipeline.scheduler).

A topic's program asks the model for new prompts on the topic, shown the instruction and a few
example prompts (one of the topic's own where there is one, the others drawn at random, seeded by
the request), then parses each answer (charter.redteam.parse) and keeps the prompts that are
neither copies of an example nor duplicates of a prompt kept before. Until it has --per-topic
prompts it asks again (as many requests as the yield so far says it needs), up to --tries rounds;
each request is seeded by topic, round and index, so a resumed or streamed run asks the same
questions and gets the same answers.

Its line in the run store (files beside --out, charter.runs.store.Layout) keeps every request:
the examples shown, the raw output, what it gave and what was dropped, by reason.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from charter.jsonl import loads
from charter.pipeline.scheduler import Program, Sample, run_programs, seeded
from charter.redteam.parse import Deduper, candidates
from charter.redteam.seeds import Example, Seeds, Topic
from charter.runs.store import Layout

ASK = 5  # prompts asked for per request: a small model keeps a short list on topic
SHOWN = 3  # example prompts per request


def work_layout(out: str | Path) -> Layout:
    """prompts.jsonl -> prompts.topics.jsonl (one line per topic), prompts.meta.json, ... beside it."""
    stem = Path(out).stem
    return Layout(records=f"{stem}.topics.jsonl", config=f"{stem}.config.yaml", meta=f"{stem}.meta.json",
                  set_aside=f"{stem}.topics.bad.jsonl", lock=f"{stem}.lock", status=line_status, own_dir=False,
                  what="topic line", redo="generated again")


def check_line(t: Any) -> dict:
    """A topic line as redteam writes it, or ValueError saying what is wrong."""
    if not (isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("topic"), str)):
        raise ValueError("not a red-team topic line (a JSON object with 'id' and 'topic')")
    if t.get("error") is not None:
        if not isinstance(t["error"], str):
            raise ValueError("'error' must be text or null")
        return t
    if not (isinstance(t.get("prompts"), list) and all(isinstance(p, str) for p in t["prompts"])
            and isinstance(t.get("requests"), list)):
        raise ValueError("a finished topic line needs 'prompts' (texts) and 'requests' (a list)")
    return t


def line_status(raw: bytes) -> tuple[str, bool]:
    t = check_line(loads(raw))
    return t["id"], t.get("error") is None


def error_line(topic: Topic, error: str) -> dict:
    return {"id": topic.id, "topic": topic.name, "principle": topic.principle, "prompts": [], "requests": [],
            "error": error}


def draw_examples(pool: tuple[Example, ...], topic: Topic, key: str, k: int = SHOWN) -> list[str]:
    """`k` example prompts for one request: one of the topic's own (if any), the rest drawn, in a
    seeded order (SELF-ALIGN draws its demonstrations per request too)."""
    rng = random.Random(key)
    own = [e for e in pool if e.topic is not None and e.topic in (topic.id, topic.principle)]
    picked = [rng.choice(own)] if own else []
    rest = [e for e in pool if e not in picked]
    picked += rng.sample(rest, min(k - len(picked), len(rest)))
    rng.shuffle(picked)
    return [e.prompt for e in picked]


def request_text(instruction: str, topic: Topic, examples: list[str], n: int) -> str:
    """The instruction filled in (by replacement: an example may contain braces)."""
    listed = "\n".join(f"{i}. {e}" for i, e in enumerate(examples, 1))
    return instruction.replace("{about}", topic.about).replace("{examples}", listed).replace("{n}", str(n))


class RedteamJob:
    """A run's settings, seeds and examples; its program per topic; its backend once given."""

    def __init__(self, cfg, seeds: Seeds, examples: tuple[Example, ...]):
        self.cfg, self.seeds, self.examples = cfg, seeds, examples
        self.sampling = cfg.sampling()
        self.copies = Deduper(cfg.dedup_threshold)  # read-only once built: shared by the programs' threads
        for e in examples:
            self.copies.add(e.prompt)

    def program(self, topic: Topic) -> Program:
        return topic_program(topic, self)

    def run(self, backend, topics: Iterable[Topic], on_line) -> None:
        """Every topic's line (a failed topic's says why) to `on_line`, as each finishes."""
        run_programs(backend, topics, self.program,
                     lambda topic, line, error: on_line(line if error is None else error_line(topic, error)),
                     batch_size=self.cfg.batch_size)


def requests_for(need: int, kept: int, asked: int) -> int:
    """Requests for the next round: enough for `need` prompts at the yield seen so far (ASK per
    request before any answer; at least one prompt per request: never more requests than needed)."""
    per_request = min(ASK, max(1.0, kept / asked)) if asked else ASK
    return math.ceil(need / per_request)


def topic_program(topic: Topic, job: RedteamJob) -> Program:
    """One topic: rounds of requests until it has --per-topic prompts (or --tries rounds are spent).
    parse_failures: the requests whose answer held no prompt at all."""
    cfg, kept, requests = job.cfg, [], []
    dedup = Deduper(cfg.dedup_threshold)
    for attempt in range(cfg.tries):
        need = cfg.per_topic - len(kept)
        if need <= 0:
            break
        keys = [f"{topic.id}:{attempt}:{i}" for i in range(requests_for(need, len(kept), len(requests)))]
        shown = [draw_examples(job.examples, topic, key) for key in keys]
        asks = [[{"role": "user", "content": request_text(job.seeds.instruction, topic, ex, min(need, ASK))}]
                for ex in shown]
        done = yield [Sample(a, seeded(job.sampling, key)) for a, key in zip(asks, keys)]
        for key, ex, completion in zip(keys, shown, done):
            requests.append(take(key, ex, completion, job, dedup, kept))
    return {"id": topic.id, "topic": topic.name, "about": topic.about, "principle": topic.principle,
            "prompts": kept, "requests": requests,
            "parse_failures": sum(1 for r in requests if not r["parsed"]), "error": None}


def take(key: str, shown: list[str], completion, job: RedteamJob, dedup: Deduper, kept: list[str]) -> dict:
    """One answer parsed: its new prompts appended to `kept`; the request's record."""
    parsed = candidates(completion.text, completion.finish_reason == "length")
    dropped, mine = Counter(parsed.dropped), []
    for prompt in parsed.prompts:
        why = "copies an example" if job.copies.seen(prompt) else None
        why = why or ("more than asked" if len(kept) >= job.cfg.per_topic else dedup.keep(prompt))
        if why:
            dropped[why] += 1
        else:
            kept.append(prompt)
            mine.append(prompt)
    return {"key": key, "examples": shown, "output": completion.text, "finish": completion.finish_reason,
            "parsed": len(parsed.prompts), "kept": mine, "dropped": dict(sorted(dropped.items()))}

