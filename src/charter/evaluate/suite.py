"""`charter eval`: compare models on a run's held-out prompts and judge its revisions -> eval.json.

The result is a typed EvalResult (charter.evaluate.result: the schema, and the one reader of
eval.json). The work runs on the one scheduler in two stages (charter.evaluate.stages): each model
(likelihoods and answers), then the judge; every finished request is saved in OUT.parts/
(charter.evaluate.parts), so an eval that dies resumes where it stopped, and eval.json is
rewritten after each stage.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from charter.config import (
    Config, backend_setting, max_tokens_setting, seed_setting, setting, temperature_setting, top_p_setting,
)
from charter.evaluate.result import EvalResult
from charter.runs.files import write_out
from charter.types import Record, Round

_log = logging.getLogger("charter.eval")
EVAL_FILE = "eval.json"
KINDS = ("red_team", "helpful")


@dataclass
class EvalConfig(Config):
    """Everything that defines a `charter eval` run."""

    run: str = setting("", "run directory of held-out prompts (made by `charter generate`)", flag="run")
    runs: list[str] = setting([], "more runs for the revision curves (e.g. a --no-critique run of the same prompts)",
                              flag="runs")
    models: list[str] = setting([], "models to compare: 'embedded', a path, or BACKEND:MODEL (e.g. fake:base)",
                                cli={"nargs": "+", "metavar": "MODEL"})
    judge: str | None = setting(None, "judge model (same forms); enables Elo and revision curves")
    backend: str = backend_setting("for models (and the judge) given without BACKEND:")
    pm: str | None = setting(None, "preference model directory (`charter train pm`): PM score of every revision "
                             "(Figure 5), critique vs direct when a --no-critique run is given (Figure 7)")
    judge_evasive: bool = setting(False, "also ask the judge whether each answer is evasive")
    over_refusal: bool = setting(False, "also answer Charter's ~150 safe prompts that look unsafe: each model's "
                                 "refusal rate (judged too with --judge), against its harmlessness")
    over_refusal_limit: int | None = setting(None, "at most N of the over-refusal prompts, categories taken in turn",
                                             bounds=">= 1")
    limit: int | None = setting(None, "at most N prompts of each kind", bounds=">= 1")
    max_tokens: int = max_tokens_setting(128, "model answer")
    temperature: float = temperature_setting(0.7, "model answers")
    top_p: float = top_p_setting(1.0)
    seed: int = seed_setting("sampling, A/B order and bootstrap")
    bootstrap: int = setting(200, "bootstrap resamples for Elo intervals (default 200)", bounds=">= 1")
    out: str | None = setting(None, "output JSON (default RUN/eval.json)", result=False)
    REQUIRED = ("run",)

    def check(self, where: str) -> None:
        from charter.errors import ConfigError

        if not self.models and not self.judge and not self.pm:
            raise ConfigError("nothing to evaluate: pass --models M1 [M2 ...], --judge MODEL and/or --pm DIR")
        if self.over_refusal and not self.models:
            raise ConfigError("--over-refusal measures models: pass --models M1 [M2 ...] (e.g. base, SL-CAI, RL-CAI)")


def evaluate(cfg: EvalConfig, factory: Callable[[str], object] | None = None) -> EvalResult:
    """Every evaluation `cfg` asks for; eval.json (cfg.out, default RUN/eval.json) is written as it goes.
    The runs are streamed (charter.runs.runread.iter_run): only their held-out prompts are kept."""
    cfg.validate()  # a config made in Python has not been checked yet
    prompts = run_held_out(cfg.run, cfg.limit, skip_failed=True)
    budget = answer_budget(cfg, len(prompts))
    return evaluate_records(cfg, prompts, factory=factory or (lambda spec: open_backend(spec, cfg.backend, budget)))


def answer_budget(cfg: EvalConfig, prompts: int) -> int:
    """The most tokens a model generates, its answers (the judge mostly scores): what `auto` sizes to."""
    from charter.evaluate.refusal import load_over_refusal

    safe = len(load_over_refusal(cfg.over_refusal_limit)) if cfg.over_refusal else 0
    return (prompts + safe) * cfg.max_tokens


def open_backend(spec: str, default_backend: str = "auto", budget: int | None = None):
    """'MODEL' on the default backend, or 'BACKEND:MODEL' (e.g. fake:base, llamacpp:/m.gguf);
    `budget`: the most tokens it will generate, which `auto` sizes to."""
    from charter.backends import open_model

    return open_model(spec, default_backend, budget=budget)


def held_out(records: Iterable[Record], limit: int | None, kinds: Sequence[str] = KINDS) -> list[Record]:
    """One record per distinct prompt (helpfulness samples share a prompt), up to `limit` per kind.

    Streams: the prompts seen are 8-byte keys (charter.runs.idset), the records kept lose what no
    evaluation reads (critique texts, token counts, timings), and reading stops once each of
    `kinds` has `limit` prompts."""
    from charter.runs.idset import IdSet

    seen, out, counts = IdSet(), [], dict.fromkeys(KINDS, 0)
    for r in records:
        key = json.dumps(r.prompt, sort_keys=True)
        if key in seen or (limit is not None and counts.get(r.kind, 0) >= limit):
            continue
        seen.add(key)
        counts[r.kind] = counts.get(r.kind, 0) + 1
        out.append(_slim(r))
        if limit is not None and all(counts.get(k, 0) >= limit for k in kinds):
            break
    return out


def _slim(r: Record) -> Record:
    """What evaluation reads of a record: prompt, answer, revisions; a critique only as there or not
    (a --no-critique run is told by its missing critiques)."""
    rounds = [Round(x.principle, None if x.critique is None else "", x.revision) for x in r.rounds]
    return replace(r, rounds=rounds, tokens={}, timings={})


def run_held_out(run: str | Path, limit: int | None, skip_failed: bool = False) -> list[Record]:
    """held_out of a run streamed from disk; reading stops at `limit` for the kinds its config says
    it holds (no helpfulness records when it was made with --helpful-prompts none)."""
    from charter.runs.runread import iter_run, load_run_config

    config = load_run_config(Path(run) if Path(run).is_dir() else Path(run).parent, strict=False)
    helpful = config.get("helpful_prompts", "default") != "none" and config.get("helpful_samples", 1) != 0
    records = iter_run(run)
    if skip_failed:
        records = (r for r in records if r.error is None)
    return held_out(records, limit, KINDS if helpful else ("red_team",))


def model_labels(specs: Sequence[str]) -> list[str]:
    if len(set(specs)) != len(specs):
        from charter.errors import ConfigError

        raise ConfigError("--models lists the same model twice; give each model once")
    return list(specs)


def evaluate_records(cfg: EvalConfig, records: Iterable[Record],
                     extra_runs: Sequence[tuple[str, Iterable[Record]]] | None = None,
                     factory: Callable[[str], object] | None = None,
                     log: Callable[[str], None] = _log.info) -> EvalResult:
    """Every evaluation `cfg` asks for on `records` (the run's, e.g. read by charter.runs.runread.iter_run)
    and the other runs' (`extra_runs` as (name, records); default: cfg.runs read from disk);
    `factory` opens a model from its spec (default: open_backend on cfg.backend). eval.json is
    rewritten after each stage; the finished requests are kept in OUT.parts/ (a rerun resumes)."""
    from charter.evaluate.parts import Parts, parts_dir
    from charter.pipeline.jobrun import stop_signals

    cfg.validate()
    prompts = held_out((r for r in records if r.error is None), cfg.limit)
    if extra_runs is None:
        extra_runs = [(r, run_held_out(r, cfg.limit)) for r in cfg.runs]
    others = [(str(r), held_out(recs, cfg.limit)) for r, recs in extra_runs]  # once: a stream is read once
    result = new_result(cfg, prompts)
    path = check_eval_out(cfg.out, cfg.run, [r for r, _ in others])
    models = Models(factory or (lambda spec: open_backend(spec, cfg.backend)), keep=cfg.judge)
    try:  # SIGTERM stops it as Ctrl-C does: what finished is saved, the engines are closed
        with stop_signals(), Parts(parts_dir(path), cfg.to_dict()) as parts:
            run_stages(cfg, result, prompts, others, models, parts, lambda: write_eval(path, result), log)
    finally:
        models.close()
    return result


def run_stages(cfg: EvalConfig, result: EvalResult, prompts: Sequence[Record], others, models: "Models", parts,
               save: Callable[[], None], log: Callable[[str], None]) -> None:
    """Each model's stage, then the judge's, then the preference model; eval.json saved after each."""
    from charter.evaluate.stages import answer_rows, model_stage

    safe, answered = load_safe_prompts(cfg), {}
    for label in result.settings["models"]:
        log(f"eval: {label}: revision likelihoods and answers to {len(prompts)} prompts"
            + (f" and {len(safe)} safe prompts that look unsafe (over-refusal)" if safe else ""))
        answered[label] = model_stage(lambda: models.get(label), parts, label, prompts, safe, cfg.sampling(),
                                      str(parts.folder))
        result.models[label] = {"spec": label, "revision_preference": answered[label].preference}
        models.release(label)  # free memory before the next model loads
        save()
    result.answers = answer_rows(prompts, answered)
    judge_into(cfg, result, prompts, others, answered, safe, models, parts, log)
    save()
    if cfg.pm:
        runs = [(str(cfg.run), prompts), *others]
        log(f"eval: preference model {cfg.pm}: scores of every revision of {len(runs)} run(s)")
        key = pm_part_key(cfg, runs)
        if key not in parts:  # a resumed eval reads the scores back instead of loading the PM again
            parts.save(key, score_with_pm(cfg.pm, runs, cfg.bootstrap, cfg.seed), None)
        result.pm = parts[key]
        save()


def pm_part_key(cfg: EvalConfig, runs: Sequence[tuple[str, Sequence[Record]]]) -> str:
    """The PM stage's part: the same PM files (path, size, time) on the same revisions."""
    import hashlib

    pm = Path(cfg.pm)
    files = sorted((str(p.relative_to(pm)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in pm.rglob("*") if p.is_file()) if pm.is_dir() else []
    asked = [(name, [(r.id, r.initial, [x.revision for x in r.rounds]) for r in recs]) for name, recs in runs]
    blob = json.dumps([str(pm.resolve()), files, asked, cfg.bootstrap, cfg.seed], default=str)
    return "pm:" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def judge_into(cfg: EvalConfig, result: EvalResult, prompts: Sequence[Record], others, answered: dict, safe: list,
               models: "Models", parts, log: Callable[[str], None]) -> None:
    """The judge's stage (with --judge) and what the answers give without it: evasiveness, over-refusal."""
    from charter.evaluate.refusal import over_refusal_result
    from charter.evaluate.judge import verdict_bias
    from charter.evaluate.stages import evasive_summary, judge_stage

    judged = None
    if cfg.judge:
        log(f"eval: judge {cfg.judge}: {len(answered)} models compared, revisions vs initial answers of "
            f"{1 + len(others)} run(s)")
        judged = judge_stage(lambda: models.get(cfg.judge), parts, cfg.judge, prompts, answered, safe,
                             [(str(cfg.run), prompts), *others], cfg.judge_evasive, cfg.seed, cfg.bootstrap,
                             str(parts.folder))
        result.elo, result.revisions = judged.elo or None, judged.revisions
        result.verdicts = [v.to_dict() for v in judged.verdicts]
        if judged.verdicts:
            answers = {a["id"]: a["answers"] for a in result.answers or ()}
            result.bias = verdict_bias(judged.verdicts, answers, cfg.judge)
    for label, m in answered.items():
        m_judged = judged.evasive.get(label) if judged and cfg.judge_evasive else None
        result.models[label]["evasive"] = evasive_summary(prompts, m.answers, m_judged)
    if safe:
        result.over_refusal = over_refusal_result(safe, {label: m.safe for label, m in answered.items()},
                                                  judged.refusals if judged else None, result.elo)


def new_result(cfg: EvalConfig, prompts: Sequence[Record]) -> EvalResult:
    """The header of an eval: what was evaluated, with which settings."""
    from charter import __version__

    settings = {"models": model_labels(cfg.models), "judge": cfg.judge, "pm": cfg.pm, "limit": cfg.limit,
                "seed": cfg.seed, "bootstrap": cfg.bootstrap, "sampling": cfg.sampling().to_dict()}
    return EvalResult(str(cfg.run), len(prompts), __version__, time.strftime("%Y-%m-%dT%H:%M:%S"), settings)


class Models:
    """Models opened by spec, each once (the judge may be one of the models); `release` closes one
    unless it is the one to keep (the judge)."""

    def __init__(self, factory: Callable[[str], object], keep: str | None = None):
        self.factory, self.keep, self.opened = factory, keep, {}

    def get(self, spec: str):
        if spec not in self.opened:
            self.opened[spec] = self.factory(spec)
        return self.opened[spec]

    def release(self, spec: str) -> None:
        if spec != self.keep and spec in self.opened:
            self.opened.pop(spec).close()

    def close(self) -> None:
        while self.opened:
            self.opened.popitem()[1].close()


def load_safe_prompts(cfg: EvalConfig) -> list:
    """The over-refusal set: none, all of it, or --over-refusal-limit N prompts."""
    from charter.evaluate.refusal import load_over_refusal

    return load_over_refusal(cfg.over_refusal_limit) if cfg.over_refusal else []


KIND = "Charter eval.json"  # what charter.runs.files records eval.json as


def write_eval(path: str | Path, result: EvalResult) -> Path:
    """eval.json, written whole (charter.runs.files: only over an eval.json Charter wrote)."""
    return write_out(path, KIND, result.to_json())


def check_eval_out(out: str | Path | None, run: str | Path, runs: Sequence[str | Path] = ()) -> Path:
    """Where eval.json goes (default RUN/eval.json): never over an input or a file that is not one."""
    from charter.runs.files import check_out

    folder = Path(run) if Path(run).is_dir() or not Path(run).exists() else Path(run).parent
    return check_out(Path(out) if out else folder / EVAL_FILE, KIND, inputs=[run, *runs])


def score_with_pm(pm_dir: str, runs: Sequence[tuple[str, Sequence[Record]]], bootstrap: int, seed: int) -> dict:
    from charter.evaluate.revision_scores import pm_scores
    from charter.scorer import load_pm

    pm = load_pm(pm_dir)
    try:
        return pm_scores(pm, runs, bootstrap, seed)
    finally:
        pm.close()

