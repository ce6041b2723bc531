"""`charter classifier data`: labelled synthetic examples for a constitutional classifier (arXiv 2501.18837).

For every category of a classifier constitution (charter.classifier.spec) a model writes seed
queries, answers them and augments them (charter.classifier.data_steps, charter.classifier.augment);
restricted categories give label 1, permitted ones label 0. Each seed query is one program on the
scheduler, locally or on Ray workers, and its line (every example made from it) goes to the run
store in --out the moment it finishes: one writer (the lock), a settings fingerprint, torn lines
set aside, resume. At the end the examples are deduplicated and split by seed query into
OUT/train.jsonl and OUT/test.jsonl, with a dataset card OUT/README.md (charter.classifier.dataset).
"""
from __future__ import annotations

import difflib
import json
import logging
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charter.classifier.augment import AUGMENTATIONS, LANGUAGES, NAMES
from charter.config import (
    Config, backend_setting, executor_setting, max_tokens_setting, seed_setting, setting, temperature_setting,
    top_p_setting, worker_resources_setting, workers_setting,
)
from charter.errors import ConfigError
from charter.jsonl import loads
from charter.pipeline.jobrun import Interrupted, file_size, ignore_ctrl_c, lines_since, progress_bar, stop_signals
from charter.runs.store import Layout

log = logging.getLogger("charter.classifier.data")
LINES = "queries.jsonl"  # one line per seed query, with every example made from it


def check_line(t: Any) -> dict:
    """A line as `classifier data` writes it, or ValueError saying what is wrong."""
    if not (isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("category"), str)
            and isinstance(t.get("examples"), list)):
        raise ValueError("not a classifier-data line (a JSON object with 'id', 'category' and 'examples')")
    if t.get("error") is not None and not isinstance(t["error"], str):
        raise ValueError("'error' must be text or null")
    if not all(isinstance(e, dict) and isinstance(e.get("text"), str) and e.get("label") in (0, 1)
               for e in t["examples"]):
        raise ValueError("each example needs a 'text' and a 'label' of 0 or 1")
    return t


def line_status(raw: bytes) -> tuple[str, bool]:
    t = check_line(loads(raw))
    return t["id"], t.get("error") is None


# The run's own files are named after its lines, so a generate run (records.jsonl, meta.json) and
# this one never take each other's files, even in one directory.
LAYOUT = Layout(records=LINES, config="queries.config.yaml", meta="queries.meta.json", set_aside="queries.bad.jsonl",
                lock="queries.lock", status=line_status, own_dir=False, what="line", redo="written again")


@dataclass
class ClassifierDataConfig(Config):
    """Everything that defines a `charter classifier data` run."""

    constitution: str = setting("default", "classifier constitution: a YAML/JSON file of restricted and permitted "
                                "categories, or 'default' (charter-guard-default)")
    model: str = setting("embedded", "model that writes the requests and answers: 'embedded' (default), a local "
                         "path, or BACKEND:MODEL")
    backend: str = backend_setting("for the writer and the feedback model")
    feedback_model: str | None = setting(None, "model that checks the labels with --check-labels (default: "
                                         "--model), or BACKEND:MODEL")
    backend_options: dict[str, Any] = setting({}, "passed to the backends' constructors", result=False)
    # A seed query's examples do not depend on which others the run has: these two may change on
    # resume, to add categories or queries to a run (its files then hold the run's current ones).
    categories: list[str] = setting([], "only these category ids (default: every category)", result=False)
    per_category: int = setting(8, "seed queries written per category (default 8)", bounds=">= 1", result=False)
    augment: list[str] = setting([], f"augmentations made of each seed query: {', '.join(NAMES)}, or all "
                                 "(default: none)")
    languages: list[str] = setting(list(LANGUAGES), "languages `translate` draws from (default French Spanish "
                                   "German)")
    outputs: bool = setting(True, "answer each seed query too: an 'output' example (request + answer)",
                            flag={"--no-outputs": (False, "requests only: no answers, no 'output' examples")})
    check_labels: bool = setting(False, "ask the feedback model whether each example falls in its category "
                                 "(option probabilities); P and disagreements are kept on the rows")
    seed: int = seed_setting("example order, augmentation templates, the split and sampling")
    temperature: float = temperature_setting(1.0)
    top_p: float = top_p_setting(1.0)
    max_tokens: int = max_tokens_setting(128, "request, rewrite or answer")
    batch_size: int = setting(16, "requests per backend call on an engine that batches per call (transformers; "
                              "default 16)", bounds=">= 1", result=False)
    test_share: float = setting(0.2, "share of each category's seed queries held out as test.jsonl (every example "
                                "of a query stays in its split; 0: no test split)", bounds="[0, 1)", result=False)
    near_duplicate: float = setting(0.8, "drop a seed query whose request has at least this Jaccard similarity "
                                    "(character 5-grams) to an earlier one (default 0.8)", bounds="(0, 1]",
                                    result=False)
    out: str = setting("runs/classifier-data", "output directory: queries.jsonl (the resumable run, beside its "
                       "queries.config.yaml and queries.meta.json), train.jsonl, test.jsonl, README.md", result=False)
    executor: str = executor_setting()
    workers: int | None = workers_setting()
    worker_resources: dict[str, Any] = worker_resources_setting()

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name

        check_backend_name(self.backend)
        if "all" in self.augment:
            self.augment = list(NAMES)
        for name in self.augment:
            if name not in AUGMENTATIONS:
                hint = difflib.get_close_matches(name, NAMES, n=1)
                tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"{where}: unknown augmentation '{name}'{tip}; choose from {', '.join(NAMES)}, "
                                  "or all")
        if len(set(self.augment)) < len(self.augment):
            raise ConfigError(f"{where}: augment lists an augmentation twice: {self.augment}")
        if "translate" in self.augment and not [x for x in self.languages if x.strip()]:
            raise ConfigError(f"{where}: translate needs at least one language in languages")


@dataclass
class ClassifierDataSummary:
    queries: int = 0  # seed queries of the run
    written: int = 0  # written this run
    resumed: int = 0  # already in the store
    failures: int = 0  # failed (their lines say why); the next run retries them
    skipped: int = 0  # the model wrote no request
    examples: int = 0  # rows in train.jsonl + test.jsonl
    splits: dict[str, int] = field(default_factory=dict)
    dedup: dict[str, int] = field(default_factory=dict)
    disagreements: int | None = None  # rows the feedback model placed outside their category
    seconds: float = 0.0
    out: str = ""

    def line(self) -> str:
        splits = ", ".join(f"{n} {s}" for s, n in self.splits.items())
        checked = f", {self.disagreements} disagree with their category" if self.disagreements is not None else ""
        return (f"{self.examples} examples ({splits}) from {self.queries} seed queries ({self.written} written, "
                f"{self.resumed} resumed, {self.skipped} empty, {self.failures} failed; "
                f"{self.dedup.get('exact_queries', 0) + self.dedup.get('near_queries', 0)} duplicate queries and "
                f"{self.dedup.get('exact_examples', 0)} duplicate examples dropped{checked}) in "
                f"{self.seconds:.1f}s -> {self.out}")


def classifier_data(cfg: ClassifierDataConfig, writer=None, feedback=None, overwrite: bool = False,
                    force: bool = False, progress: bool = True) -> ClassifierDataSummary:
    """Write the examples of every seed query not done yet (resumable), then OUT/train.jsonl,
    OUT/test.jsonl and OUT/README.md from all of them. `writer`/`feedback`: backends to use
    instead of opening cfg.model/cfg.feedback_model; `overwrite`: start again; `force`: continue
    a run made with other settings."""
    from charter.classifier.data_steps import DataJob, query_items
    from charter.classifier.dataset import check_outputs, read_lines, write_dataset
    from charter.classifier.spec import load_classifier_constitution
    from charter.runs.store import RunStore

    cfg.validate()  # a config built in Python has not been checked yet
    if cfg.executor == "ray" and (writer is not None or feedback is not None):
        raise ConfigError("backends given to classifier_data() run in this process only: with executor 'ray' each "
                          "worker opens its own from the config, so pass model names instead")
    start = time.time()
    constitution = load_classifier_constitution(cfg.constitution)
    check_categories(cfg, constitution)
    items = list(query_items(constitution, cfg.categories, cfg.per_category))  # small: categories x per_category
    check_outputs(Path(cfg.out), cfg)  # before anything is written
    content = json.dumps([asdict(c) for c in constitution.categories], sort_keys=True)
    with RunStore(cfg.out, LAYOUT) as store:  # holds the run's lock until the job ends
        store.open(cfg.to_dict(), cfg.fingerprint(content), force or overwrite,
                   parts={"constitution": content}, ignore=cfg.NON_RESULT_KEYS)
        done = store.done_ids()
        todo = [it for it in items if overwrite or it.id not in done]
        summary = ClassifierDataSummary(queries=len(items), resumed=len(items) - len(todo), out=str(cfg.out))
        if todo:
            log.info("%d seed queries to write (%d already done) over %d categories", len(todo), summary.resumed,
                     len({it.category for it in items}))
            job = DataJob(cfg, constitution)
            run_data(cfg, job, store, todo, (writer, feedback), overwrite, progress)
        summary.written = len(todo)
        lines = read_lines(store.records_path, [it.id for it in items])
        write_dataset(cfg, constitution, lines, Path(cfg.out), summary)
    summary.seconds = time.time() - start
    return summary


def check_categories(cfg: ClassifierDataConfig, constitution) -> None:
    known = [c.id for c in constitution.categories]
    for cid in cfg.categories:
        if cid not in known:
            hint = difflib.get_close_matches(cid, known, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else f"; its categories: {', '.join(known)}"
            raise ConfigError(f"{cfg.where}: categories: {constitution.name} has no category '{cid}'{tip}")


def run_data(cfg: ClassifierDataConfig, job, store, todo: list, given: tuple, overwrite: bool,
             progress: bool) -> None:
    """The seed queries in `todo` through `job`, locally or on Ray; each line appended to the
    store as it finishes; Ctrl-C and SIGTERM stop cleanly (Interrupted)."""
    bar = progress_bar(len(todo), progress, unit=" queries")
    start = [file_size(store.records_path)]

    def ready() -> None:  # the backends are up: only now may anything be replaced
        if overwrite:
            store.clear()
        start[0] = file_size(store.records_path)

    def on_line(line: dict) -> None:
        store.append(line)
        bar.update(1)

    with stop_signals() as got:
        try:
            if cfg.executor == "ray":
                from charter.pipeline.ray_executor import run_job

                run_job(cfg, job, iter(todo), on_line, len(todo), on_ready=ready)
            else:
                job.run_here(given, todo, on_line, ready, len(todo))
        except KeyboardInterrupt:
            ignore_ctrl_c()
            saved = lines_since(store.records_path, start[0])
            raise Interrupted(f"interrupted: {saved} seed queries saved in {store.records_path} this run; run the "
                              "same command again to resume", got.get("signal", signal.SIGINT)) from None
        finally:
            bar.close()


__all__ = ["ClassifierDataConfig", "ClassifierDataSummary", "classifier_data"]
