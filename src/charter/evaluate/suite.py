"""`charter eval`: compare models on a run's held-out prompts and judge its revisions -> eval.json.

eval.json (schema "charter.eval/1"); every part is present only if it was computed:
  run, records, created, charter_version, settings {models, judge, limit, seed, bootstrap, sampling}
  models: {label: {spec,
           revision_preference: {n, mean_delta, share_preferred, logp_initial, logp_final,
                                 by_round: [{round, n, mean_delta, share_preferred}]},
           evasive: {n, rate, red_team_rate, helpful_rate, judge_rate?}}}
      mean_delta = mean over red-team records of logp(final revision) - logp(initial), per-token
      log-probs under that model; share_preferred = share of records where the revision is likelier.
  elo: {harmless|helpful: {players: {label: {elo, low, high}}, comparisons, position_bias}}
      harmless: judged on red-team prompts; helpful: on helpfulness prompts (all prompts if none).
      Elo is centred at mean 0; low/high: 95% bootstrap interval; position_bias: mean P("(A)").
  revisions: [{run, label, records, curves: {harmless|helpful: {rounds: [{round, n, p_revision,
      elo, elo_low, elo_high}]}}}]   p_revision = mean P(revision k preferred over the initial answer);
      elo = revision k's Elo with the initial answer at 0.
  answers: [{id, kind, prompt, answers: {label: text}, evasive: {label: bool}}]
  verdicts: [{id, question, a, b, p_a, swapped, p_first}]  (the model comparisons behind elo)
  pm: {pm, runs: [{run, label, direct, by_revision: [{revision, n, mean, low, high, evasive}],
                   per_principle: [{principle, n, mean, low, high}], items: [{id, principles, scores}]}],
       critique_vs_direct?: {critique, direct, by_revision: [{revision, critique, direct, diff, low, high}]}}
      PM scores of the initial answer (revision 0) and each revision (charter.evaluate.revision_scores); per principle:
      the mean change over rounds drawn with it; critique_vs_direct when a --no-critique run is given.
  over_refusal: {n, categories, models: {label: {n, refused, rate, judge_rate?, by_category}}, points, answers}
      (--over-refusal) refusal rate on safe prompts that look unsafe, per model and category, and each model's
      point (refusal rate, harmless Elo) for the trade-off plot; the shape is in charter.evaluate.refusal.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from charter.config import Config, setting
from charter.evaluate.curves import revision_curves
from charter.evaluate.elo import bootstrap_elo
from charter.evaluate.evasive import is_evasive, judge_evasive
from charter.evaluate.judge import Pair, judge_pairs, position_bias
from charter.evaluate.likelihood import revision_preference
from charter.evaluate.refusal import answer_safe, over_refusal_result
from charter.jsonl import write_json
from charter.types import Record, Round, Sampling

SCHEMA = "charter.eval/1"
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
    backend: str = setting("transformers", "backend for models given without BACKEND: (default transformers)")
    pm: str | None = setting(None, "preference model directory (`charter train pm`): PM score of every revision "
                             "(Figure 5), critique vs direct when a --no-critique run is given (Figure 7)")
    judge_evasive: bool = setting(False, "also ask the judge whether each answer is evasive")
    over_refusal: bool = setting(False, "also answer Charter's ~150 safe prompts that look unsafe: each model's "
                                 "refusal rate (judged too with --judge), against its harmlessness")
    over_refusal_limit: int | None = setting(None, "at most N of the over-refusal prompts, categories taken in turn",
                                             bounds=">= 1")
    limit: int | None = setting(None, "at most N prompts of each kind", bounds=">= 1")
    max_tokens: int = setting(128, "answer length for model answers (default 128)", bounds=">= 1")
    temperature: float = setting(0.7, "sampling temperature of model answers (default 0.7)", bounds="[0, 5]")
    top_p: float = setting(1.0, "nucleus sampling of model answers (default 1.0)", bounds="(0, 1]")
    seed: int = setting(0, "seeds sampling, A/B order and bootstrap")
    bootstrap: int = setting(200, "bootstrap resamples for Elo intervals (default 200)", bounds=">= 1")
    out: str | None = setting(None, "output JSON (default RUN/eval.json)", result=False)
    REQUIRED = ("run",)

    def check(self, where: str) -> None:
        from charter.errors import ConfigError

        if not self.models and not self.judge and not self.pm:
            raise ConfigError("nothing to evaluate: pass --models M1 [M2 ...], --judge MODEL and/or --pm DIR")
        if self.over_refusal and not self.models:
            raise ConfigError("--over-refusal measures models: pass --models M1 [M2 ...] (e.g. base, SL-CAI, RL-CAI)")


def evaluate(cfg: EvalConfig, factory: Callable[[str], object] | None = None) -> dict:
    """Every evaluation `cfg` asks for; eval.json (cfg.out, default RUN/eval.json) is written as it goes.
    The runs are streamed (charter.store.iter_run): only their held-out prompts are kept."""
    cfg.validate()  # a config made in Python has not been checked yet
    sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    prompts = run_held_out(cfg.run, cfg.limit, skip_failed=True)
    return evaluate_records(cfg.run, prompts, cfg.models, cfg.judge,
                            [(r, run_held_out(r, cfg.limit)) for r in cfg.runs], cfg.limit, sampling, cfg.seed,
                            cfg.bootstrap, cfg.judge_evasive,
                            factory=factory or (lambda spec: open_backend(spec, cfg.backend)), out=cfg.out, pm=cfg.pm,
                            over_refusal=(cfg.over_refusal_limit or True) if cfg.over_refusal else False)


def open_backend(spec: str, default_backend: str = "transformers"):
    """'MODEL' on the default backend, or 'BACKEND:MODEL' (e.g. fake:base, llamacpp:/m.gguf)."""
    from charter.backends import BACKENDS, create_backend

    name, _, model = spec.partition(":")
    if model and name in BACKENDS:
        return create_backend(name, model)
    return create_backend(default_backend, spec)


def held_out(records: Iterable[Record], limit: int | None, kinds: Sequence[str] = KINDS) -> list[Record]:
    """One record per distinct prompt (helpfulness samples share a prompt), up to `limit` per kind.

    Streams: the prompts seen are 8-byte keys (charter.idset), the records kept lose what no
    evaluation reads (critique texts, token counts, timings), and reading stops once each of
    `kinds` has `limit` prompts."""
    from charter.idset import IdSet

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
    from charter.store import iter_run, load_run_config

    config = load_run_config(Path(run) if Path(run).is_dir() else Path(run).parent, strict=False)
    helpful = config.get("helpful_prompts", "default") != "none" and config.get("helpful_samples", 1) != 0
    records = iter_run(run)
    if skip_failed:
        records = (r for r in records if r.error is None)
    return held_out(records, limit, KINDS if helpful else ("red_team",))


def answer_all(backend, prompts: Sequence[Record], sampling: Sampling) -> list[str]:
    return [c.text.strip() for c in backend.chat([p.prompt for p in prompts], sampling)]


def model_pairs(prompts: Sequence[Record], answers: dict[str, list[str]], kinds: set[str]) -> list[Pair]:
    return [Pair(p.id, tuple(p.prompt), a, b, answers[a][i], answers[b][i])
            for i, p in enumerate(prompts) if p.kind in kinds
            for a, b in itertools.combinations(answers, 2)]


def compare_models(judge, prompts: Sequence[Record], answers: dict[str, list[str]], seed: int,
                   bootstrap: int) -> tuple[dict, list]:
    """Elo per question from every pair of models on every prompt of the question's kind."""
    helpful_kinds = {"helpful"} if any(p.kind == "helpful" for p in prompts) else {"red_team", "helpful"}
    elo, verdicts = {}, []
    for question, kinds in (("harmless", {"red_team"}), ("helpful", helpful_kinds)):
        vs = judge_pairs(judge, model_pairs(prompts, answers, kinds), [question], seed)
        verdicts += vs
        elo[question] = {"players": bootstrap_elo([(v.a, v.b, v.p_a) for v in vs], list(answers),
                                                  samples=bootstrap, seed=seed),
                         "comparisons": len(vs), "position_bias": position_bias(vs)}
    return elo, verdicts


def evasive_summary(prompts: Sequence[Record], texts: list[str], judged: list[float] | None) -> dict:
    flags = [is_evasive(t) for t in texts]

    def rate(kind: str | None) -> float | None:
        sel = [f for f, p in zip(flags, prompts) if kind is None or p.kind == kind]
        return sum(sel) / len(sel) if sel else None

    out = {"n": len(flags), "rate": rate(None), "red_team_rate": rate("red_team"), "helpful_rate": rate("helpful")}
    if judged is not None:
        out["judge_rate"] = sum(judged) / len(judged) if judged else None
    return out


def model_labels(specs: Sequence[str]) -> list[str]:
    if len(set(specs)) != len(specs):
        from charter.errors import ConfigError

        raise ConfigError("--models lists the same model twice; give each model once")
    return list(specs)


def evaluate_records(run: str | Path, records: Iterable[Record], models: Sequence[str] = (),
                     judge: str | None = None, extra_runs: Sequence[tuple[str, Iterable[Record]]] = (),
                     limit: int | None = None, sampling: Sampling | None = None, seed: int = 0, bootstrap: int = 200,
                     judge_evasiveness: bool = False, factory: Callable[[str], object] = open_backend,
                     out: str | Path | None = None, log: Callable[[str], None] = _log.info,
                     pm: str | None = None, over_refusal: bool | int | None = False) -> dict:
    """Run every evaluation the arguments ask for; eval.json is rewritten after each stage.
    over_refusal: True (the whole set) or N (N of it) adds "over_refusal" (charter.evaluate.refusal)."""
    from charter import __version__

    sampling = sampling or Sampling(max_tokens=128, temperature=0.7, seed=seed)
    prompts = held_out((r for r in records if r.error is None), limit)
    labels = model_labels(models)
    result: dict = {"schema": SCHEMA, "run": str(run), "records": len(prompts), "charter_version": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "settings": {"models": labels, "judge": judge, "pm": pm, "limit": limit, "seed": seed,
                                 "bootstrap": bootstrap, "sampling": sampling.to_dict()},
                    "models": {}, "verdicts": []}
    path = check_eval_out(out, run, [r for r, _ in extra_runs])
    save = lambda: write_json(path, result)  # noqa: E731 - partial results survive a crash
    opened: dict[str, object] = {}
    others = [(r, held_out(recs, limit)) for r, recs in extra_runs]  # once: a stream is read once

    def get(spec: str):  # the judge may also be one of the models: load it once
        if spec not in opened:
            opened[spec] = factory(spec)
        return opened[spec]

    safe = load_safe_prompts(over_refusal)
    try:
        answers, safe_answers = {}, {}
        for label in labels:
            log(f"eval: {label}: revision likelihoods and answers to {len(prompts)} prompts")
            b = get(label)
            pref = revision_preference(b, prompts)
            answers[label] = answer_all(b, prompts, sampling)
            if safe:
                log(f"eval: {label}: answers to {len(safe)} safe prompts that look unsafe (over-refusal)")
                safe_answers[label] = answer_safe(b, safe, sampling)
            result["models"][label] = {"spec": label, "revision_preference": pref}
            if label != judge:
                opened.pop(label).close()  # free memory before the next model loads
            save()
        result["answers"] = [{"id": p.id, "kind": p.kind, "prompt": p.prompt,
                              "answers": {m: answers[m][i] for m in labels},
                              "evasive": {m: is_evasive(answers[m][i]) for m in labels}} for i, p in enumerate(prompts)]
        jb = get(judge) if judge else None
        for label in labels:
            judged = judge_evasive(jb, [p.prompt for p in prompts], answers[label]) if jb and judge_evasiveness else None
            result["models"][label]["evasive"] = evasive_summary(prompts, answers[label], judged)
        if jb is not None and len(labels) >= 2:
            log(f"eval: judge {judge}: pairwise comparisons of {len(labels)} models")
            result["elo"], verdicts = compare_models(jb, prompts, answers, seed, bootstrap)
            result["verdicts"] += [v.to_dict() for v in verdicts]
            save()
        if safe:
            result["over_refusal"] = over_refusal_result(safe, safe_answers, jb, result.get("elo"))
            save()
        if jb is not None:
            log(f"eval: judge {judge}: revisions vs initial answers for {1 + len(extra_runs)} run(s)")
            result["revisions"] = revision_curves(jb, [(str(run), prompts)] + others, seed=seed, bootstrap=bootstrap)
        save()
        if pm:
            runs = [(str(run), prompts)] + others
            log(f"eval: preference model {pm}: scores of every revision of {len(runs)} run(s)")
            result["pm"] = score_with_pm(pm, runs, bootstrap, seed)
            save()
    finally:
        for b in opened.values():
            b.close()
    return result


def load_safe_prompts(over_refusal: bool | int | None) -> list:
    """The over-refusal set: none (False/None), all of it (True) or N prompts (an int)."""
    from charter.evaluate.refusal import load_over_refusal

    if not over_refusal:
        return []
    return load_over_refusal(None if over_refusal is True else int(over_refusal))


def is_eval(head: bytes) -> bool:
    return re.search(rb'^\{\s*"schema":\s*"charter\.eval/', head) is not None


def check_eval_out(out: str | Path | None, run: str | Path, runs: Sequence[str | Path] = ()) -> Path:
    """Where eval.json goes (default RUN/eval.json): never over an input or a file that is not one."""
    from charter.files import check_out

    folder = Path(run) if Path(run).is_dir() or not Path(run).exists() else Path(run).parent
    return check_out(Path(out) if out else folder / EVAL_FILE, "Charter eval.json", is_eval, [run, *runs])


def score_with_pm(pm_dir: str, runs: Sequence[tuple[str, Sequence[Record]]], bootstrap: int, seed: int) -> dict:
    from charter.evaluate.revision_scores import pm_scores
    from charter.scorer import load_pm

    pm = load_pm(pm_dir)
    try:
        return pm_scores(pm, runs, bootstrap, seed)
    finally:
        pm.close()

