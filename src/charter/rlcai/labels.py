"""`charter label`: RL-CAI soft preference labels from a feedback model's multiple-choice answers.

For each prompt the policy samples answers; for each pair a feedback model is asked the paper's
question (charter.rlcai.questions) in both option orders, averaged (position bias), with one
principle drawn per comparison (seeded) or K drawn and averaged (ensemble). In chain-of-thought
mode the near-certain probabilities are clamped (paper: 40-60%). Rows: TRL preference rows
{prompt, chosen, rejected, score = P(chosen better), id}.

A prompt is one program on the scheduler (charter.rlcai.label_steps), locally or on Ray workers;
its transcript line goes to the run store (charter.runs.store, files beside --out:
charter.rlcai.label_store) the moment it finishes, and its rows to --out. The store gives a label
run what a generate run has: one writer, a settings fingerprint, torn lines set aside, resume,
and a finished run that resumes without reading prompts or lines.
"""
from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from charter.config import (
    FORMATS, Config, backend_setting, executor_setting, max_tokens_setting, seed_setting, setting, temperature_setting,
    top_p_setting, worker_resources_setting, workers_setting,
)
from charter.errors import ConfigError, RunError
from charter.pipeline.jobrun import Interrupted, file_size, ignore_ctrl_c, lines_since, progress_bar, stop_signals
from charter.rlcai.data import FeedbackSet, load_feedback, principle_dict
from charter.rlcai.bias_rows import label_bias
from charter.rlcai.label_steps import LabelJob
from charter.rlcai.label_store import KIND, RowsFile, convert_old, label_layout, write_rows
from charter.types import PromptItem

log = logging.getLogger("charter.label")


def float_list(text: str) -> list[float]:
    """'0.6,1.0,1.4' -> [0.6, 1.0, 1.4] (a flag's value; a ValueError is argparse's usage error)."""
    return [float(x) for x in text.split(",") if x.strip()]


@dataclass
class LabelConfig(Config):
    """Everything that defines a `charter label` run."""

    policy: str = setting("embedded", "model that samples the answers: your SL-CAI checkpoint, a local path, "
                          "'embedded' (default), or BACKEND:MODEL")
    backend: str = backend_setting("for the policy (and the feedback model unless --feedback-backend)")
    feedback_model: str | None = setting(None, "model that labels the pairs (default: the policy), or BACKEND:MODEL")
    feedback_backend: str | None = setting(None, "backend for the feedback model (default: --backend)")
    backend_options: dict[str, Any] = setting({}, "passed to the backends' constructors", result=False)
    prompts: str = setting("default", "prompts: file (.jsonl/.json/.csv/.parquet/.txt), 'default' (red-team set), "
                           "advbench, harmbench, do-not-answer, hf:ORG/NAME")
    prompt_field: str | None = setting(None, "column holding the prompt (default: auto-detect)")
    principles: str = setting("default", "feedback principles: Charter YAML, the paper's RLMadisonInstructions.json, "
                              "or 'default'")
    few_shot: str = setting("default", "feedback examples: Charter YAML, RLMadisonFewShotPrompts.json, "
                            "RLMadisonPrecogFewShotPrompts.json, 'default' or 'none'")
    format: str = setting("chat", "how the feedback model is asked: one chat user message (default) or the "
                          "paper's raw text", choices=FORMATS)
    policy_format: str | None = setting(None, "how the policy is sampled (default: --format)", choices=FORMATS)
    samples: int = setting(2, "answers per prompt (default 2; every pair is compared)", bounds=">= 2")
    ensemble: int = setting(1, "principles drawn and averaged per comparison (default 1)", bounds=">= 1")
    principle_draw: str = setting("random", "how a comparison's principles are drawn: random (the paper, default) "
                                  "or relevant[:K]: the feedback model ranks the principles for the prompt (P(Yes) to "
                                  "'is it relevant?') and the draw is among the K most relevant (default K 4)",
                                  since="principles by relevance")
    principle_group: str | None = setting(None, "draw only from the principles of this group (the principles "
                                          "file's 'group:' key)", since="prioritised constitutions")
    name_priority: bool = setting(False, "the question names its principle's priority (the principles file's "
                                  "'priority:' key, worded by its 'priority_template')", since="prioritised constitutions")
    cot: bool = setting(False, "chain of thought: reason step by step, then score; probabilities clamped")
    clamp_low: float = setting(0.4, "CoT clamp band, low end", cli=False)
    clamp_high: float = setting(0.6, "CoT clamp band, high end", cli=False)
    limit: int | None = setting(None, "use at most N prompts", bounds=">= 1", result=False)
    seed: int = seed_setting("principle draws and sampling")
    temperature: float = temperature_setting(1.0, "policy answers")
    temperatures: list[float] = setting([], "sample each prompt's answers across these temperatures, answer i at "
                                        "the (i mod n)-th, e.g. 0.6,1.0,1.4 (default: --temperature for all)",
                                        cli={"type": float_list, "nargs": None, "metavar": "T,T,..."},
                                        since="issue 24")
    top_p: float = top_p_setting(1.0)
    max_tokens: int = max_tokens_setting(256, "policy answer")
    cot_max_tokens: int = max_tokens_setting(256, "CoT reasoning")
    cot_temperature: float = temperature_setting(0.0, "CoT reasoning")
    batch_size: int = setting(16, "requests per backend call on an engine that batches per call (transformers; "
                              "default 16)", bounds=">= 1", result=False)
    out: str = setting("runs/labels.jsonl", "preference rows, .jsonl or .parquet (default runs/labels.jsonl); "
                       "transcripts go to OUT.transcripts.jsonl, beside OUT.meta.json, OUT.config.yaml",
                       result=False)
    executor: str = executor_setting()
    workers: int | None = workers_setting()
    worker_resources: dict[str, Any] = worker_resources_setting()

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name
        from charter.pipeline.relevance import relevance_k

        check_backend_name(self.backend)
        if self.feedback_backend:
            check_backend_name(self.feedback_backend)
        if not (0 <= self.clamp_low <= 0.5 <= self.clamp_high <= 1) or abs(self.clamp_low + self.clamp_high - 1) > 1e-9:
            raise ConfigError(f"{where}: the clamp band must be symmetric around 0.5 (e.g. 0.4 0.6), "
                              f"got {self.clamp_low} {self.clamp_high}")
        if any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 5 for t in self.temperatures):
            raise ConfigError(f"{where}: temperatures must be numbers in [0, 5], got {self.temperatures}")
        if len(self.temperatures) > self.samples:
            raise ConfigError(f"{where}: {len(self.temperatures)} temperatures for {self.samples} samples per prompt "
                              "leave some unused; raise --samples or list fewer temperatures")
        k = relevance_k(self.principle_draw, "--principle-draw")
        if k is not None and k < self.ensemble:
            raise ConfigError(f"{where}: --principle-draw relevant:{k} leaves fewer principles than --ensemble "
                              f"{self.ensemble} draws per comparison; raise K or lower --ensemble")
        if Path(self.out).suffix.lower() not in (".jsonl", ".parquet"):
            raise ConfigError(f"{where}: out must end in .jsonl or .parquet, got '{self.out}'")


def load_label_config(path: str | None, overrides: dict[str, Any]) -> LabelConfig:
    return LabelConfig.load(path, overrides)


@dataclass
class LabelSummary:
    prompts: int = 0
    comparisons: int = 0
    rows: int = 0
    skipped: int = 0
    failures: int = 0
    resumed: int = 0
    seconds: float = 0.0
    out: str = ""
    mean_score: float | None = None
    bias: dict | None = None  # the feedback model's biases (charter.rlcai.bias.JudgeBias)

    def line(self) -> str:
        ms = f", mean score {self.mean_score:.3f}" if self.mean_score is not None else ""
        return (f"{self.rows} preference rows from {self.comparisons} comparisons over {self.prompts} prompts "
                f"({self.skipped} skipped, {self.failures} failed, {self.resumed} prompts resumed{ms}) "
                f"in {self.seconds:.1f}s -> {self.out}")


KEPT = ("prompts", "comparisons", "rows", "skipped", "mean_score", "bias")  # what a complete run's mark keeps


def label(cfg: LabelConfig, policy=None, feedback=None, overwrite: bool = False, force: bool = False,
          progress: bool = True) -> LabelSummary:
    """Sample answers, label every pair, write each prompt's transcript line and rows as it
    finishes (resumable); `overwrite`: start again, `force`: continue a run of other settings."""
    from charter.runs.store import RunStore
    from charter.pipeline.workload import completion_key

    cfg.validate()  # a config built in Python has not been checked yet
    if cfg.executor == "ray" and (policy is not None or feedback is not None):
        raise ConfigError("backends given to label() run in this process only: with executor 'ray' each worker "
                          "opens its own from the config, so pass policy/feedback as model names instead")
    start = time.time()
    fs = load_feedback(cfg.principles, cfg.few_shot)
    fingerprint, parts = fingerprint_of(cfg, fs)
    layout = label_layout(cfg.out)
    converted = convert_old(Path(cfg.out), layout, fingerprint, force, overwrite)  # an older Charter's run, if any
    out = check_out(cfg)  # before anything else is written
    key = completion_key(cfg, fingerprint)
    with RunStore(out.parent, layout) as store:  # holds the run's lock until the job ends
        finished = store.finished(key) if key and not (force or overwrite) and out.is_file() else None
        if finished is not None:  # marked complete, nothing changed since: neither prompts nor lines read
            log.info("nothing to do: all %s prompts done", f"{finished:,}")
            kept = {k: v for k, v in store.summary.items() if k in KEPT}
            summary = LabelSummary(**{**kept, "resumed": finished, "out": str(out), "seconds": time.time() - start})
            return _check_rows(summary, store.records_path)
        keys = prompt_keys(cfg)  # reads (and checks) the prompts before anything is written
        store.open(cfg.to_dict(), fingerprint, force or overwrite or converted, parts=parts,
                   ignore=cfg.NON_RESULT_KEYS)
        done = store.done_ids()
        todo = len(keys) if overwrite else sum(1 for k in keys if not done.has_key(k))
        summary = LabelSummary(prompts=len(keys), resumed=len(keys) - todo, out=str(out))
        if todo:
            log.info("%s prompts to label (%s already done): %s comparisons", f"{todo:,}", f"{summary.resumed:,}",
                     f"{todo * cfg.samples * (cfg.samples - 1) // 2:,}")
            run_label(cfg, LabelJob(cfg, fs), store, todo, (policy, feedback), overwrite, progress)
        _count(summary, write_rows(out, store.records_path), start)
        summary.bias = label_bias(store.records_path, cfg.feedback_model or cfg.policy, cfg.policy)
        if key and not summary.failures:
            store.mark_complete(key, len(keys), {k: getattr(summary, k) for k in KEPT})
    return _check_rows(summary, store.records_path)


def fingerprint_of(cfg: LabelConfig, fs: FeedbackSet) -> tuple[str, dict[str, str]]:
    """The run's fingerprint (its settings and the feedback set's content, as before the store),
    and the parts a refusal names when they changed."""
    principles, examples = [principle_dict(p) for p in fs.principles], [asdict(e) for e in fs.examples]
    parts = {"principles": json.dumps(principles, sort_keys=True), "few-shot": json.dumps(examples, sort_keys=True)}
    return cfg.fingerprint(json.dumps(principles + examples, sort_keys=True)), parts


def check_out(cfg: LabelConfig) -> Path:
    """--out as a Path, refused (charter.runs.files) when it is one of the run's inputs or a file that
    Charter did not write as labels; nothing is written here."""
    from charter.runs.files import check_out as check
    from charter.inputs.prompts import source_files

    inputs = [p for p in (cfg.principles, cfg.few_shot) if p not in ("default", "none")]
    if not cfg.prompts.startswith("hf:"):
        inputs += source_files(cfg.prompts, "red_team") or []
    return check(cfg.out, KIND, inputs=inputs)


def prompt_items(cfg: LabelConfig) -> Iterator[PromptItem]:
    from charter.inputs.prompts import iter_prompts

    return iter_prompts(cfg.prompts, "red_team", cfg.prompt_field, cfg.limit)


def prompt_keys(cfg: LabelConfig):
    """The key (8 bytes) of each of the run's prompts, read as a stream."""
    from array import array

    from charter.runs.idset import key

    return array("Q", (key(it.id) for it in prompt_items(cfg)))


def run_label(cfg: LabelConfig, job: LabelJob, store, todo: int, given: tuple, overwrite: bool,
              progress: bool) -> None:
    """The prompts not done yet through `job`, locally or on Ray; each prompt's line appended to
    the store and its rows to --out as it finishes; Ctrl-C and SIGTERM stop cleanly (Interrupted)."""
    pairs = cfg.samples * (cfg.samples - 1) // 2
    bar = progress_bar(todo * pairs, progress, unit=" comparisons")
    rows, start = RowsFile(Path(cfg.out)), [file_size(store.records_path)]

    def ready() -> None:  # the backends are up: only now may anything be replaced
        if overwrite:
            store.clear()
        rows.start(store.records_path)
        start[0] = file_size(store.records_path)

    def on_line(line: dict) -> None:
        store.append(line)
        rows.add(line)
        bar.update(pairs)
        bar.set_postfix_str(f"{bar.n // pairs} prompts", refresh=False)

    items = (it for it in prompt_items(cfg) if it.id not in store.done)  # streamed; empty after a clear
    with stop_signals() as got:
        try:
            if cfg.executor == "ray":
                from charter.pipeline.ray_executor import run_job

                run_job(cfg, job, items, on_line, todo, on_ready=ready)
            else:
                job.run_here(given, items, on_line, ready, todo)
        except KeyboardInterrupt:
            ignore_ctrl_c()
            saved = lines_since(store.records_path, start[0])  # what is in the file, counted or not
            raise Interrupted(f"interrupted: {saved} prompts saved in {store.records_path} this run; run the same "
                              "command again to resume", got.get("signal", signal.SIGINT)) from None
        finally:
            bar.close()
            rows.close()


def _count(summary: LabelSummary, tally, start: float) -> None:
    summary.comparisons, summary.skipped, summary.rows = tally.comparisons, tally.skipped, tally.rows
    summary.failures = tally.failures
    summary.mean_score = tally.score / tally.rows if tally.rows else None
    summary.seconds = time.time() - start


def _check_rows(summary: LabelSummary, tpath: Path) -> LabelSummary:
    """A run that made no rows and had no failures (which the summary reports) is an error, not a result."""
    if summary.rows or summary.failures:
        return summary
    raise RunError(f"no preference rows: all {summary.skipped} comparisons over {summary.prompts} prompts were "
                   f"skipped, their answers identical or empty (see {tpath}); sample distinct answers with a higher "
                   "--temperature, more --max-tokens or --samples, or another --policy")


__all__ = ["LabelConfig", "LabelSummary", "label", "load_label_config"]
