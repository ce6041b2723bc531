"""`charter generate`: config -> prompts -> pipeline (on a backend, locally or on Ray) -> run store.

The loop itself and its schedulers live in pipeline.py; this module wires a job around them:
resume, progress, the summary, a clean stop on Ctrl-C, SIGTERM or a dead engine.

SIGTERM stops a run exactly as Ctrl-C does (charter.pipeline.jobrun, which every job shares).
"""
from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from charter.backends.base import Backend
from charter.errors import ConfigError
from charter.config import (
    FORMATS, Config, backend_setting, executor_setting, max_tokens_setting, seed_setting, setting, temperature_setting,
    top_p_setting, worker_resources_setting, workers_setting,
)
from charter.pipeline.jobrun import (
    Interrupted, file_size, ignore_ctrl_c, lines_since, progress_bar, stop_signals,
)
from charter.pipeline.cai import Settings, plan, run_items
from charter.pipeline.workload import RateLog, completion_key, iter_items, project, run_identity
from charter.types import Constitution, PromptItem, Record

log = logging.getLogger("charter.generate")

CONTEXTS = ("full", "latest")


@dataclass
class GenerateConfig(Config):
    """Everything that defines a `charter generate` run."""

    model: str = setting("embedded", "'embedded' (default), a local HF checkpoint directory, a .gguf file, a hub id, "
                         "or BACKEND:MODEL")
    backend: str = backend_setting("for --model")
    backend_options: dict[str, Any] = setting({}, "passed to the backend's constructor", result=False, cli=False)
    prompts: str = setting("default", "red-team prompts: file (.jsonl/.json/.csv/.parquet/.txt), 'default', "
                           "advbench, harmbench, do-not-answer, hf:ORG/NAME")
    helpful_prompts: str = setting("default", "helpfulness prompts (same sources), or 'none'")
    prompt_field: str | None = setting(None, "column holding the prompt (default: auto-detect)")
    constitution: str = setting("default", "principles file (Charter YAML, paper JSON, constitutions JSON) "
                                "or 'default'")
    few_shot: str = setting("default", "few-shot file, 'default' (the constitution's own or ours) or 'none'")
    format: str = setting("chat", "chat messages (template applied) or the paper's raw transcripts", choices=FORMATS)
    rounds: int = setting(4, "critique/revision rounds per red-team prompt (default 4)", bounds=">= 0")
    critique: bool = setting(True, "critique before each revision",
                             flag={"--no-critique": (False, "ablation: revise directly, no critique")})
    context: str = setting("full", "what round k critiques: full = the conversation so far (default), "
                           "latest = prompt + latest revision", choices=CONTEXTS)
    stop_when_clean: bool = setting(False, "after each critique, ask the model (scored, not sampled) whether it "
                                    "found a real problem; if not, the chain ends with the answer as it is",
                                    since="stop when clean")
    clean_threshold: float = setting(0.5, "with --stop-when-clean: stop when P(problem) is below this (default 0.5)",
                                     bounds="[0, 1]", since="stop when clean")
    principles: str = setting("random", "how each round's principle is drawn: random (the paper, default) or "
                              "relevant[:K]: the model ranks the principles for the conversation (P(Yes) to 'is it "
                              "relevant?') and the draw is among the K most relevant (default K 4; 1: the top one)",
                              since="principles by relevance")
    principle_group: str | None = setting(None, "draw only from the principles of this group (a constitution's "
                                          "'group:' key)", since="prioritised constitutions")
    name_priority: bool = setting(False, "critique requests name their principle's priority (a constitution's "
                                  "'priority:' key, worded by its 'priority_template')", since="prioritised constitutions")
    helpful_samples: int = setting(2, "answers per helpfulness prompt (default 2)", bounds=">= 0")
    guard: str | None = setting(None, "guard classifiers (DIR from `charter train classifier --kind both`): DIR/input "
                                "screens prompts, DIR/output streams over every answer; blocked records get a "
                                "'guard' field (export drops them)", since="guard classifiers")
    limit: int | None = setting(None, "use at most N prompts from each prompt set", bounds=">= 1", result=False)
    seed: int = seed_setting("principle draws and sampling")
    temperature: float = temperature_setting(1.0)
    top_p: float = top_p_setting(1.0)
    max_tokens: int = max_tokens_setting(256, "answer, critique and revision")
    batch_size: int = setting(16, "conversations per backend call (default 16)", bounds=">= 1", result=False)
    out: str = setting("runs/default", "run directory (default runs/default); re-running resumes", result=False)
    executor: str = executor_setting()
    workers: int | None = workers_setting()
    worker_resources: dict[str, Any] = worker_resources_setting()

    def check(self, where: str) -> None:
        from charter.pipeline.clean_check import check_settings
        from charter.pipeline.relevance import relevance_k

        check_settings(self.stop_when_clean, self.critique)
        check_guard_dir(self.guard, where)
        relevance_k(self.principles)


def load_generate_config(path: str | None, overrides: dict[str, Any]) -> GenerateConfig:
    return GenerateConfig.load(path, overrides)


@dataclass
class Summary:
    records: int = 0
    failures: int = 0
    skipped: int = 0
    tokens: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)  # distinct error -> records
    stopped: int = 0  # chains stop-when-clean ended early
    saved: int = 0  # generation requests those chains did not make
    checks: int = 0  # clean checks asked (scored questions, two option orders each)
    blocked: Counter = field(default_factory=Counter)  # guard stage (input, output) -> records it blocked

    def line(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        text = (f"{self.records} records written ({self.failures} failed), {self.skipped} already done; "
                f"{self.tokens} tokens generated in {self.seconds:.1f}s ({rate:.1f} tok/s)")
        for error, n in self.errors.most_common(3):
            text += f"\n  {n} record{'s' if n > 1 else ''} failed: {error}"
        if len(self.errors) > 3:
            text += f"\n  ... and {len(self.errors) - 3} other errors (see the records' `error` field)"
        if self.blocked:
            text += f"\nguard: {self.blocked['input']} prompts blocked, {self.blocked['output']} answers blocked"
        if self.checks:
            text += (f"\nstop when clean: {self.stopped} chains stopped early, {self.saved} generation requests "
                     f"saved, {self.checks} clean checks asked")
        return text

    def count(self, rec: Record, settings: Settings) -> None:
        """Add a finished record's clean checks and the requests its early stop saved."""
        self.checks += len(rec.p_problem or ())
        if rec.stopped:
            self.stopped += 1
            self.saved += steps_of(rec, settings) - (2 * len(rec.rounds) + 2)  # initial, rounds, the last critique


def resolve_items(cfg) -> list[PromptItem]:
    """Every prompt of the run, in memory (generate itself streams them: charter.pipeline.workload.iter_items)."""
    from charter.pipeline.workload import iter_items

    return list(iter_items(cfg))


def settings_from(cfg) -> Settings:
    return Settings(cfg.rounds, cfg.critique, cfg.format, cfg.seed, cfg.batch_size, cfg.sampling(), cfg.context,
                    stop_when_clean=cfg.stop_when_clean, clean_threshold=cfg.clean_threshold,
                    principles=cfg.principles, group=cfg.principle_group, name_priority=cfg.name_priority)


def generate(cfg, backend: Backend | None = None, force: bool = False, progress: bool = True) -> Summary:
    """Run (or resume) a generation job described by a GenerateConfig."""
    from charter.backends import check_backend_name
    from charter.inputs.constitution import load_constitution
    from charter.runs.store import RunStore

    cfg.validate()  # a config built in Python gets the same checks as one loaded from YAML and flags
    check_backend_name(cfg.backend)  # before anything is written (config.py does not know the backends)
    constitution = load_constitution(cfg.constitution, cfg.few_shot)
    settings = settings_from(cfg)
    resuming = (Path(cfg.out) / "records.jsonl").is_file()  # only then are done prompts counted out
    parts, fingerprint = run_identity(cfg, constitution)
    key = completion_key(cfg, fingerprint)
    with RunStore(cfg.out) as store:  # holds the run's lock until the job ends
        finished = store.finished(key) if resuming and key and not force else None
        if finished is not None:  # marked complete, nothing changed since: neither prompts nor records read
            log.info("nothing to do: all %s prompts done", f"{finished:,}")
            return Summary(skipped=finished)
        projection = project(cfg, settings, keys=resuming)  # reads (and checks) the prompts before anything is written
        store.open(cfg.to_dict(), fingerprint, force, parts=parts, ignore=cfg.NON_RESULT_KEYS)
        done = store.done_ids()
        projection.resume(done)
        log.info("%s", projection.line())
        summary = Summary(skipped=projection.skipped)
        if projection.prompts:
            todo = (it for it in iter_items(cfg) if it.id not in done)  # streamed: memory is what is in flight
            run_job(cfg, backend, constitution, todo, store, summary, progress, projection.requests)
        if key and not summary.failures and summary.records == projection.prompts:
            store.mark_complete(key, projection.skipped + projection.prompts)
    return summary


def run_job(cfg, backend, constitution, todo: Iterable[PromptItem], store, summary: Summary, progress: bool,
            total: int | None = None) -> None:
    """The pipeline over `todo`, each record appended as it finishes; a bar that moves per step
    (`total`: the steps `todo` takes, counted by the caller when `todo` is a stream)."""
    settings = settings_from(cfg)
    if total is None:
        todo = list(todo)
        total = total_steps(todo, settings)
    bar = progress_bar(total, progress)
    rate = RateLog(total)
    t0 = time.time()
    start = file_size(store.records_path)
    guard = open_guard(cfg)

    def on_record(rec: Record) -> None:
        if guard and guard.check(rec).guard:  # the output classifier over its answers (the text stays)
            summary.blocked[rec.guard["stage"]] += 1
        store.append(rec)
        summary.records += 1
        summary.tokens += rec.tokens.get("completion", 0)
        summary.count(rec, settings)
        if rec.error is not None:
            summary.failures += 1
            summary.errors[rec.error] += 1
        bar.set_postfix_str(f"{summary.records} rec, {summary.tokens / max(time.time() - t0, 1e-9):.0f} tok/s",
                            refresh=False)

    if guard:  # the input classifier: a blocked prompt is a record at once, its steps done on the bar
        todo = guard.screen(todo, lambda item, g: (on_record(blocked_record(item, g, cfg)),
                                                   bar.update(len(plan(item, settings)))))
    with stop_signals() as got:
        try:
            if cfg.executor == "ray":
                from charter.pipeline.ray_executor import run_on_ray

                run_on_ray(cfg, constitution, settings, todo,
                           lambda r: (on_record(r), bar.update(steps_of(r, settings)), rate.step(steps_of(r, settings))),
                           total)
            else:
                run_local(cfg, backend, constitution, settings, todo, on_record, lambda: (bar.update(1), rate.step()),
                          total)
        except KeyboardInterrupt:
            ignore_ctrl_c()
            # What is in the file: a record may be appended between a write and its count.
            summary.records = lines_since(store.records_path, start)
            raise Interrupted(f"interrupted: {summary.records} records saved in {cfg.out} this run; "
                              "run the same command again to resume", got.get("signal", signal.SIGINT)) from None
        finally:
            bar.close()
            summary.seconds = time.time() - t0
            if guard:
                guard.close()


def total_steps(todo: Iterable[PromptItem], settings: Settings) -> int:
    """Requests the pipeline will make for `todo` (all rounds run)."""
    return sum(len(plan(it, settings)) for it in todo)


def steps_of(rec: Record, settings: Settings) -> int:
    """The steps a finished record counts for on the bar: a chain stopped clean counts its skipped ones."""
    if rec.stopped:
        return 1 + 2 * settings.rounds
    return 1 + len(rec.rounds) * (2 if settings.critique else 1) if rec.kind == "red_team" else 1


def run_local(cfg, backend: Backend | None, constitution: Constitution, settings: Settings, todo: Iterable[PromptItem],
              on_record: Callable[[Record], None], on_step: Callable[[], None] | None = None,
              workload: int | None = None) -> None:
    """The pipeline in this process, on `backend` or on one made for the run (`workload`: its
    request count, which the backend may size its settings to)."""
    from charter.backends import open_model

    own = backend is None
    if own:  # `auto` gives a short run to the engine that starts fastest
        budget = None if workload is None else workload * cfg.max_tokens
        backend = open_model(cfg.model, cfg.backend, workload=workload, budget=budget, **cfg.backend_options)
    try:
        run_items(backend, constitution, settings, todo, on_record, on_step)
    except KeyboardInterrupt:
        ignore_ctrl_c()  # before closing the engine, which can take a few seconds
        raise
    finally:
        if own:
            backend.close()  # an engine's worker processes must not outlive the run


def check_guard_dir(guard: str | None, where: str) -> None:
    """--guard names classifiers: DIR with config.json, or DIR/input and/or DIR/output with theirs."""
    if guard is None:
        return
    folder = Path(guard)
    if not any((d / "config.json").is_file() for d in (folder, folder / "input", folder / "output")):
        raise ConfigError(f"{where}: guard {guard} holds no classifier (config.json in it, or in input/ or output/); "
                          "train them with `charter train classifier --data DIR --kind both --out DIR`")


def open_guard(cfg):
    """The --guard classifiers, loaded on first use (None without --guard)."""
    if not cfg.guard:
        return None
    from charter.guard.screen import Guard

    return Guard(cfg.guard, batch_size=cfg.batch_size)


def blocked_record(item: PromptItem, guard: dict, cfg) -> Record:
    from charter.guard.screen import blocked_record as record

    return record(item, guard, model=cfg.model, backend=cfg.backend, format=cfg.format)
