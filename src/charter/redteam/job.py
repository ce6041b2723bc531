"""`charter redteam`: red-team prompts for a constitution that has none.

Per topic (one per principle of the constitution, or from --topics), a model writes new prompts
after a few examples (charter.redteam.steps); they are parsed, deduplicated and written, in each
--styles attack style, to a prompt file `generate --prompts` reads, with a card beside it
(charter.redteam.output). A topic is one program on the scheduler; its line goes to the run store
(files beside the prompt file) as it finishes, so a run is resumable, locked and crash-safe like
every other: a resumed run asks the model only about the topics not done.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charter.config import (
    Config, backend_setting, max_tokens_setting, seed_setting, setting, temperature_setting, top_p_setting,
)
from charter.errors import ConfigError, RunError
from charter.pipeline.jobrun import Interrupted, file_size, ignore_ctrl_c, lines_since, progress_bar, stop_signals
from charter.redteam.output import CARD_KIND, KIND, card_head, card_path, topic_lines, write_prompts
from charter.redteam.seeds import PLAIN, Seeds, Topic, load_seeds, load_topics, read_examples
from charter.redteam.steps import ASK, RedteamJob, work_layout

log = logging.getLogger("charter.redteam")

OUT_NAME = "prompts.jsonl"  # the prompt file's name when --out is a directory


def comma_list(text: str) -> list[str]:
    """'plain,role-play' -> ['plain', 'role-play'] (a flag's value)."""
    return [x.strip() for x in text.split(",") if x.strip()]


@dataclass
class RedteamConfig(Config):
    """Everything that defines a `charter redteam` run."""

    model: str = setting("embedded", "model that writes the prompts: 'embedded' (default), a local path, a hub id, "
                         "or BACKEND:MODEL")
    backend: str = backend_setting("for --model")
    backend_options: dict[str, Any] = setting({}, "passed to the backend's constructor", result=False)
    constitution: str = setting("default", "principles file whose principles are the topics when --topics is not "
                                "given (Charter YAML, paper JSON, constitutions JSON; default: ours)")
    topics: str | None = setting(None, "seed topics: a .txt file (one a line) or a YAML/JSON list of names or of "
                                 "{name, about, principle} (default: one per principle of --constitution)")
    examples: str | None = setting(None, "example prompts shown to the model: a YAML list (text or {prompt, topic}) "
                                   "or any prompt file generate reads (default: ours)")
    per_topic: int = setting(10, "prompts to write per topic (default 10)", bounds=">= 1")
    styles: list[str] = setting([PLAIN], "attack styles, each kept prompt written in every one: plain, role-play, "
                                "hypothetical, multi-turn (default plain)", result=False,
                                cli={"type": comma_list, "nargs": None, "metavar": "STYLE,STYLE,..."})
    tries: int = setting(3, "rounds of requests per topic before it settles for fewer prompts (default 3)",
                         bounds=">= 1")
    dedup_threshold: float = setting(0.7, "near-duplicate threshold: character 5-shingle Jaccard similarity at or "
                                     "above it drops a prompt (default 0.7)", bounds="(0, 1]")
    limit: int | None = setting(None, "use at most N topics", bounds=">= 1", result=False)
    seed: int = seed_setting("the examples shown, the templates drawn and sampling")
    temperature: float = temperature_setting(1.0)
    top_p: float = top_p_setting(1.0)
    max_tokens: int = max_tokens_setting(256, "request")
    batch_size: int = setting(16, "requests per backend call on an engine that batches per call (transformers; "
                              "default 16)", bounds=">= 1", result=False)
    out: str = setting("runs/redteam", f"prompt file (.jsonl), or a directory for {OUT_NAME} (default runs/redteam); "
                       "beside it OUT.card.json and the run's files (OUT.topics.jsonl, OUT.meta.json, ...)",
                       result=False)

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name

        check_backend_name(self.backend)
        known = load_seeds().style_names()
        unknown = [s for s in self.styles if s not in known]
        if unknown or not self.styles:
            raise ConfigError(f"{where}: unknown style {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(known)}")
        if len(set(self.styles)) < len(self.styles):
            raise ConfigError(f"{where}: styles {self.styles} name one style twice; list each once")
        out_file(self.out)


def out_file(out: str) -> Path:
    """--out as the prompt file: a .jsonl path, or a directory (existing, or a name without a suffix)."""
    path = Path(out)
    if path.suffix.lower() == ".jsonl":
        return path
    if path.is_dir() or not path.suffix:
        return path / OUT_NAME
    raise ConfigError(f"--out {out}: give a .jsonl file or a directory")


@dataclass
class RedteamSummary:
    topics: int = 0
    resumed: int = 0  # topics done by an earlier run
    prompts: int = 0  # distinct prompts kept
    rows: int = 0  # prompts x styles
    failures: int = 0  # topics that failed (retried on the next run)
    parse_failures: int = 0  # requests whose answer held no prompt at all
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    out: str = ""
    card: str = ""

    def line(self) -> str:
        return (f"{self.rows} prompts ({self.prompts} distinct) over {self.topics} topics ({self.resumed} resumed, "
                f"{self.failures} failed; {self.parse_failures} answers held no prompt) "
                f"in {self.seconds:.1f}s -> {self.out} (card: {self.card})")


def redteam(cfg: RedteamConfig, backend=None, overwrite: bool = False, force: bool = False,
            progress: bool = True) -> RedteamSummary:
    """Write red-team prompts per topic, resumably; `overwrite`: start again, `force`: continue a
    run made with other settings. `backend`: an open backend to use instead of opening --model."""
    from charter import __version__
    from charter.runs.store import RunStore

    cfg.validate()  # a config built in Python has not been checked yet
    start = time.time()
    seeds = load_seeds()
    topics = load_topics(cfg.topics, cfg.constitution, seeds)
    examples = tuple(read_examples(Path(cfg.examples))) if cfg.examples else seeds.examples
    fingerprint, parts = fingerprint_of(cfg, seeds, topics, examples)
    out = check_outputs(cfg)
    chosen = topics[:cfg.limit] if cfg.limit else topics
    with RunStore(out.parent, work_layout(out)) as store:  # holds the run's lock until the job ends
        store.open(cfg.to_dict(), fingerprint, force or overwrite, parts=parts, ignore=cfg.NON_RESULT_KEYS)
        done = store.done_ids()
        todo = chosen if overwrite else [t for t in chosen if t.id not in done]
        summary = RedteamSummary(topics=len(chosen), resumed=len(chosen) - len(todo), out=str(out),
                                 card=str(card_path(out)))
        if todo:
            log.info("%d topics to write prompts for (%d already done)", len(todo), summary.resumed)
            run_topics(cfg, RedteamJob(cfg, seeds, examples), store, todo, backend, overwrite, progress)
        lines = topic_lines(store.records_path, [t.id for t in chosen])
        card = write_prompts(out, lines, cfg, seeds, card_head(cfg, seeds, examples, __version__))
    return _check_rows(_count(summary, card, lines, start))


def fingerprint_of(cfg: RedteamConfig, seeds: Seeds, topics: list[Topic], examples: tuple) -> tuple[str, dict]:
    """The run's fingerprint (its settings, topics, examples and instruction) and the parts a
    refusal names when they changed."""
    parts = {"topics": json.dumps([asdict(t) for t in topics], sort_keys=True),
             "examples": json.dumps([asdict(e) for e in examples], sort_keys=True), "instruction": seeds.instruction}
    return cfg.fingerprint(json.dumps(parts, sort_keys=True)), parts


def check_outputs(cfg: RedteamConfig) -> Path:
    """The prompt file, refused (charter.runs.files) when it or its card is an input or a file
    Charter did not write as such; nothing is written here."""
    from charter.runs.files import check_out

    inputs = [p for p in (cfg.topics, cfg.examples) if p]
    if not cfg.topics and cfg.constitution != "default":
        inputs.append(cfg.constitution)
    out = check_out(out_file(cfg.out), KIND, inputs=inputs)
    check_out(card_path(out), CARD_KIND, inputs=inputs, flag="the card of --out")
    return out


def run_topics(cfg: RedteamConfig, job: RedteamJob, store, todo: list[Topic], backend, overwrite: bool,
               progress: bool) -> None:
    """The topics not done yet through `job`; each topic's line appended as it finishes; Ctrl-C and
    SIGTERM stop cleanly (Interrupted), the finished topics kept."""
    from charter.backends import open_model

    bar = progress_bar(len(todo), progress, unit=" topics")
    start = file_size(store.records_path)
    with stop_signals() as got:
        own = None
        try:
            if backend is None:
                budget = len(todo) * math.ceil(cfg.per_topic / ASK) * cfg.max_tokens
                backend = own = open_model(cfg.model, cfg.backend, budget=budget, **cfg.backend_options)
            if overwrite:  # the backend is up: only now may the old lines go
                store.clear()
                start = 0
            source = {"model": cfg.model, "backend": backend.name}

            def on_line(line: dict) -> None:
                line = dict(line)
                error = line.pop("error")
                store.append({**line, "source": source, "error": error})  # "error" last: the store's fast scan
                bar.update(1)

            job.run(backend, todo, on_line)
        except KeyboardInterrupt:
            ignore_ctrl_c()
            saved = lines_since(store.records_path, start)
            raise Interrupted(f"interrupted: {saved} topics saved in {store.records_path} this run; run the same "
                              "command again to resume", got.get("signal", signal.SIGINT)) from None
        finally:
            bar.close()
            if own is not None:
                own.close()  # an engine's worker processes must not outlive the run


def _count(summary: RedteamSummary, card: dict, lines: list[dict], start: float) -> RedteamSummary:
    summary.rows = card["rows"]
    summary.prompts = sum(t["prompts"] for t in card["topics"])
    summary.failures = sum(1 for t in lines if t.get("error") is not None)
    summary.parse_failures = sum(t["parse_failures"] for t in card["topics"])
    summary.dropped = card["dropped"]
    summary.seconds = time.time() - start
    return summary


def _check_rows(summary: RedteamSummary) -> RedteamSummary:
    """A run that kept no prompt and had no failure (which the summary reports) is an error, not a result."""
    if summary.rows or summary.failures:
        return summary
    raise RunError(f"no usable prompts in the model's answers (see {summary.card}: what each topic's answers held "
                   "and what was dropped, by reason); raise --max-tokens or --tries, or use a larger --model")


__all__ = ["RedteamConfig", "RedteamSummary", "redteam", "out_file"]
