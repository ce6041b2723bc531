"""What `charter classifier data` asks of the engines, as one scheduler program per seed query.

A seed query is one (category, index) pair. Its program (charter.pipeline.scheduler):
1. the writer model writes a request in the category, from its description and examples;
2. at once: an answer to that request (the "output" example) and each model rewrite (paraphrase,
   translation); the wrapper and multi-turn augmentations need no model;
3. with --check-labels, the feedback model is asked of every example, in both option orders,
   whether it falls in its category (option log-probs, Backend.choose).
It returns the query's line: every example made from it, ready to be a dataset row. Each sampling
step is seeded by the query's id and the step, so a resumed or reordered run writes the same.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Generator, Iterable

from charter.choice import option_texts, softmax
from charter.classifier.augment import AUGMENTATIONS, MODEL, TURNS, WRAP, draw, rewrite_request, split_turns, \
    template_id, wrap
from charter.classifier.spec import Category, ClassifierConstitution
from charter.pipeline.jobrun import ProgramJob
from charter.pipeline.scheduler import Choice, Program, Sample, seeded
from charter.types import Message

WRITER, FEEDBACK = "writer", "feedback"
QUERY = ("You are helping to build a safety classifier by writing test requests that people might send to "
         "an AI assistant.\n\nCategory: {description}\n\nExample requests in this category:\n{examples}\n\n"
         "Write one new request in this category, different from the examples. Reply with the request only.")
CHECK = ("Here is {what} sent to an AI assistant:\n\n[[[\n{text}\n]]]\n\nDoes it fall in this category: "
         "{description}\n\nOptions:\n(A) {first}\n(B) {second}\n\nAnswer with (A) or (B).")
YES, NO = "Yes, it falls in this category", "No, it does not"
_LABEL = re.compile(r"^\s*(?:(?:new |rewritten |translated )?request|translation|user|question)\s*:\s*", re.I)
_QUOTES = "\"'“”‘’«»"


@dataclass(frozen=True)
class QueryItem:
    """One seed query to write: category `category`, number `index` (0-based)."""

    id: str
    category: str
    index: int


def query_items(constitution: ClassifierConstitution, categories: Iterable[str], per_category: int):
    """The run's seed queries, category by category (restricted first, file order)."""
    wanted = set(categories)
    for c in constitution.categories:
        if not wanted or c.id in wanted:
            yield from (QueryItem(f"{c.id}:{i}", c.id, i) for i in range(per_category))


def query_request(category: Category, index: int, seed: int) -> list[Message]:
    """What the writer is asked for seed query `index`: its examples in a seeded order, so the
    requests of one category do not all start from the same first example."""
    examples = list(category.examples)
    random.Random(f"{seed}:{category.id}:{index}").shuffle(examples)
    listed = "\n".join(f"- {e}" for e in examples)
    return [{"role": "user", "content": QUERY.format(description=category.description, examples=listed)}]


def clean_request(text: str) -> str:
    """A written request without what small models wrap it in: its first paragraph after any
    lead-in ending in ':' ("Here is a new request:"), a leading 'Request:' label and surrounding
    quotes dropped."""
    lines = [x.strip() for x in text.strip().splitlines()]
    while len(lines) > 1 and (not lines[0] or lines[0].endswith(":")):
        lines.pop(0)
    first = "\n".join(lines[:lines.index("")] if "" in lines else lines)
    first = _LABEL.sub("", first).strip()
    if len(first) >= 2 and first[0] in _QUOTES and first[-1] in _QUOTES:
        first = first[1:-1].strip()
    return first


def render(messages: list[Message]) -> str:
    """A conversation as one text: 'User: ...' and 'Assistant: ...' turns, blank lines between."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def example(qid: str, suffix: str, category: Category, kind: str, messages: list[Message], augmentation: str,
            source: dict) -> dict:
    """One dataset row: `text` is the request itself for a one-turn input, else the rendered conversation."""
    text = messages[0]["content"] if kind == "input" and len(messages) == 1 else render(messages)
    return {"id": f"{qid}:{suffix}", "group": qid, "text": text, "messages": messages, "kind": kind,
            "label": category.label, "category": category.id, "restricted": category.restricted,
            "augmentation": augmentation, "source": source}


class DataJob(ProgramJob):
    """A data run's settings and constitution, its program per seed query, and its backends once
    open. Picklable before `open` (a Ray worker gets a copy and opens its own)."""

    def __init__(self, cfg, constitution: ClassifierConstitution):
        super().__init__()
        self.cfg, self.constitution = dataclasses.replace(cfg), constitution
        self.sampling = cfg.sampling()
        self.augs = [AUGMENTATIONS[a] for a in cfg.augment]

    def model_steps(self) -> int:
        """Sampling steps per seed query: the query, its answer, and each model rewrite."""
        return 1 + int(self.cfg.outputs) + sum(a.how == MODEL for a in self.augs)

    def checks(self) -> int:
        """Label-check questions per seed query (both option orders of every example)."""
        examples = 1 + int(self.cfg.outputs) + len(self.augs)
        return 2 * examples if self.cfg.check_labels else 0

    def open(self, queries: int | None = None, writer=None, feedback=None) -> None:
        """The writer and feedback backends: those given, the others opened (`auto` sized to `queries`)."""
        from charter.backends import SCORED_QUESTION_TOKENS, open_model

        cfg, own = self.cfg, []
        budget = None if queries is None else queries * (self.model_steps() * cfg.max_tokens
                                                          + self.checks() * SCORED_QUESTION_TOKENS)
        workload = None if queries is None else queries * (self.model_steps() + self.checks())
        same = cfg.feedback_model in (None, cfg.model)
        try:
            if writer is None:
                writer = open_model(cfg.model, cfg.backend, workload, budget, **cfg.backend_options)
                own.append(writer)
            if feedback is None and cfg.check_labels and not same:
                feedback = open_model(cfg.feedback_model, cfg.backend, workload, budget, **cfg.backend_options)
                own.append(feedback)
        except BaseException:  # the second failed to load (or Ctrl-C): the first engine goes too
            for backend in own:
                backend.close()
            raise
        self.own, self.backends = own, {WRITER: writer, FEEDBACK: feedback or writer}

    def program(self, item: QueryItem) -> Program:
        return write_query(item, self)

    def failed(self, item: QueryItem, error: str) -> dict:
        return error_line(item, self, error)

    def source(self, seed: int | None, template: str, model: str | None = None) -> dict:
        return {"model": model or self.cfg.model, "seed": seed, "template": template}


def query_line(item: QueryItem, category: Category, query: str | None, examples: list[dict], skipped: str | None,
               empty: int = 0, written: str | None = None) -> dict:
    """A seed query's line in the store: "id" first and "error" last (the store reads ids fast);
    `written`: the writer's reply as it came, before clean_request."""
    return {"id": item.id, "category": category.id, "restricted": category.restricted, "index": item.index,
            "written": written, "query": query, "examples": examples, "skipped": skipped, "empty": empty,
            "error": None}


def error_line(item: QueryItem, job: DataJob, error: str) -> dict:
    category = job.constitution.category(item.category)
    return {**query_line(item, category, None, [], None), "error": error}


def write_query(item: QueryItem, job: DataJob) -> Generator:
    """One seed query: written, answered, augmented, optionally checked; returns its line."""
    category = job.constitution.category(item.category)
    ask = seeded(job.sampling, f"{item.id}:query")
    (written,) = yield [Sample(query_request(category, item.index, job.cfg.seed), ask, backend=WRITER)]
    query = clean_request(written.text)
    if not query:
        return query_line(item, category, "", [], "the model wrote an empty request", written=written.text)
    base = example(item.id, "input", category, "input", [{"role": "user", "content": query}], "none",
                   job.source(ask.seed, "query/0"))
    examples, empty = [base], 0
    plans = plan(item, query, job)
    steps = [step for _, step in plans if step is not None]
    done = iter((yield steps) if steps else ())
    for what, step in plans:
        made = made_example(item, category, query, what, step, next(done) if step is not None else None, job,
                            ask.seed)
        empty += made is None
        examples += [made] if made is not None else []
    if job.cfg.check_labels:
        yield from check_labels(examples, category)
    return query_line(item, category, query, examples, None, empty, written.text)


def plan(item: QueryItem, query: str, job: DataJob) -> list[tuple[tuple, Sample | None]]:
    """Each example still to make from `query`: (what, its sampling step or None for a template)."""
    out: list[tuple[tuple, Sample | None]] = []
    if job.cfg.outputs:
        step = seeded(job.sampling, f"{item.id}:answer")
        out.append((("output", None, 0, None), Sample([{"role": "user", "content": query}], step, backend=WRITER)))
    for aug in job.augs:
        index = draw(f"{job.cfg.seed}:{item.id}:{aug.id}", len(aug.templates))
        language = job.cfg.languages[draw(f"{job.cfg.seed}:{item.id}:language", len(job.cfg.languages))] \
            if aug.id == "translate" else None
        step = None
        if aug.how == MODEL:
            request = [{"role": "user", "content": rewrite_request(aug, index, query, language)}]
            step = Sample(request, seeded(job.sampling, f"{item.id}:{aug.id}"), backend=WRITER)
        out.append(((aug.id, aug, index, language), step))
    return out


def made_example(item: QueryItem, category: Category, query: str, what: tuple, step: Sample | None, done,
                 job: DataJob, query_seed: int | None) -> dict | None:
    """The example `what` (from `plan`) stands for, given its step's completion; None if the model
    wrote nothing. Its source seed is its own step's, or the query's for a template."""
    name, aug, index, language = what
    seed = step.sampling.seed if step is not None else query_seed
    if name == "output":
        answer = done.text.strip()
        messages = [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        return example(item.id, "output", category, "output", messages, "none", job.source(seed, "answer/0")) \
            if answer else None
    template = template_id(aug, index) + (f":{language}" if language else "")
    if aug.how == WRAP:
        messages = [{"role": "user", "content": wrap(aug, index, query)}]
    elif aug.how == TURNS:
        messages = split_turns(query, index)
    else:
        rewritten = clean_request(done.text)
        if not rewritten:
            return None
        messages = [{"role": "user", "content": rewritten}]
    return example(item.id, aug.id, category, "input", messages, aug.id, job.source(seed, template))


def check_labels(examples: list[dict], category: Category) -> Generator:
    """Ask the feedback model whether each example falls in its category, both option orders
    (position bias averaged out); sets each example's "check": {"p", "disagrees"}."""
    steps = []
    for ex in examples:
        for first, second in ((YES, NO), (NO, YES)):
            what = "a request" if ex["kind"] == "input" else "a conversation"
            ask = CHECK.format(what=what, text=ex["text"], description=category.description, first=first,
                               second=second)
            context = [{"role": "user", "content": ask}]
            steps.append(Choice(context, option_texts(context, 2), backend=FEEDBACK))
    logps = yield steps
    for k, ex in enumerate(examples):
        yes_first, no_first = softmax(logps[2 * k]), softmax(logps[2 * k + 1])
        p = (yes_first[0] + no_first[1]) / 2
        ex["check"] = {"p": round(p, 4), "disagrees": p < 0.5}


__all__ = ["DataJob", "QueryItem", "query_items", "write_query", "clean_request", "render", "WRITER", "FEEDBACK"]
