"""`charter eval classifier`: how well a trained guard classifier does on a labelled file -> DIR/eval_classifier.json.

    res = evaluate_classifier(ClassifierEvalConfig(classifier="guards/input", data="test.jsonl"))

The numbers (charter.classifier.metrics) overall and per category: ROC AUC, the TPR at a chosen
FPR and the threshold giving it, TPR/FPR at the classifier's own saved threshold, calibration.
An input classifier scores each prompt, and is also run on Charter's safe prompts that look
unsafe (the share it would block is the refusal rate it adds). An output classifier is streamed
over each answer, as it guards: a conversation's score is its highest prefix score (it is blocked
when any prefix reaches the threshold, as `charter train classifier` picks the threshold), and
the streams give after how many answer tokens it fires. `evaluate_guard` does the work for any
object with the guard's interface (charter.guard.model.GuardClassifier).

eval_classifier.json (schema "charter.classifier-eval/1"): classifier, kind, threshold, target_fpr, n,
skipped, created, charter_version, settings, overall (Metrics), categories {category: Metrics},
over_refusal?, streaming? -- one reader, `read_classifier_eval`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypedDict

from charter.classifier.labelled import Example, data_file, read_labelled
from charter.classifier.metrics import Metrics, Rate, metrics, wilson
from charter.config import Config, seed_setting, setting
from charter.errors import ConfigError, InputError, RunError

log = logging.getLogger("charter.classifier.evaluate")

SCHEMA = "charter.classifier-eval/1"
FILE = "eval_classifier.json"
KIND = "Charter classifier evaluation"  # what charter.runs.files records the output as
FIX = "rerun `charter eval classifier`"
CHUNK = 256  # texts per scoring call: progress is logged between them
SHOWN = 50  # blocked safe prompts kept in the result


@dataclass
class ClassifierEvalConfig(Config):
    """Everything that defines a `charter eval classifier` run."""

    classifier: str = setting("", "classifier directory (`charter train classifier`), or one holding input/ and "
                              "output/", flag="classifier")
    data: str = setting("", "labelled JSONL or Parquet: rows with 'text' (a prompt) or 'messages' (a conversation; "
                        "for an output classifier it ends with the answer), 'label' and optionally 'category' and "
                        "'kind'; or the directory `charter classifier data` wrote (its test.jsonl)")
    text_field: str | None = setting(None, "field to score (default: 'messages' where a row has it, else 'text')")
    label_field: str = setting("label", "label field: 0/1, true/false or \"harmful\"/\"harmless\" (default label)")
    category_field: str = setting("category", "category field for the per-category table (default category)")
    fpr: float = setting(0.01, "false-positive rate at which to report the TPR and its threshold (default 0.01)",
                         bounds="(0, 1)")
    over_refusal: bool | None = setting(None, "", flag={
        "--over-refusal": (True, "share of Charter's safe prompts that look unsafe the input classifier would block "
                                 "(default: on for an input classifier)"),
        "--no-over-refusal": (False, "skip the over-refusal set")})
    over_refusal_file: str | None = setting(None, "safe prompts for --over-refusal (rows {prompt, category}; "
                                            "default: Charter's own set)")
    bins: int = setting(10, "calibration bins (default 10)", bounds=">= 2")
    bootstrap: int = setting(200, "bootstrap resamples for the AUC and TPR intervals (default 200)", bounds=">= 1")
    seed: int = seed_setting("the bootstrap")
    out: str | None = setting(None, "output JSON (default CLASSIFIER/eval_classifier.json)", result=False)
    REQUIRED = ("classifier", "data")


# ---- the result -----------------------------------------------------------------------------------


class Settings(TypedDict):
    data: str
    fpr: float
    bins: int
    bootstrap: int
    seed: int
    text_field: str | None
    label_field: str
    category_field: str


class Blocked(TypedDict):
    id: str
    category: str
    prompt: str
    score: float


class OverRefusal(TypedDict):
    file: str
    blocked: Rate
    by_category: dict[str, Rate]
    examples: list[Blocked]  # the first SHOWN blocked prompts


class Firing(TypedDict):
    n: int
    fired: Rate
    tokens: list[int]  # answer tokens read when it fired, one per answer it fired on
    median: float | None
    p10: float | None
    p90: float | None
    median_share: float | None  # median share of its answer's tokens read when it fired


class Streaming(TypedDict):
    harmful: Firing
    harmless: Firing | None


@dataclass
class ClassifierEvalResult:
    """One classifier on one labelled file (None parts: not computed)."""

    classifier: str
    kind: str
    threshold: float
    target_fpr: float | None
    n: int
    skipped: int  # rows labelled for the other kind of classifier
    created: str
    charter_version: str
    settings: Settings
    overall: Metrics
    categories: dict[str, Metrics] = field(default_factory=dict)
    over_refusal: OverRefusal | None = None
    streaming: Streaming | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                          if f.name != "schema" and getattr(self, f.name) is not None}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = FILE) -> "ClassifierEvalResult":
        """The result `data` holds, each part checked against its type; another shape is an InputError."""
        import typing

        from charter.evaluate.result import FIX as EVAL_FIX, check

        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(f"not a classifier evaluation (no \"schema\": \"{SCHEMA}\"); {FIX}", where)
        hints, fields = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InputError(f"not a classifier evaluation: unknown key '{unknown[0]}'; {FIX}", where)
        try:
            for name, f in fields.items():
                if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InputError(f"not a classifier evaluation: '{name}' is missing; {FIX}", where)
                if name in data:
                    check(data[name], hints[name], name, where)
        except InputError as exc:  # the shape checker names `charter eval` as the fix; this file has its own
            raise InputError(str(exc.args[0]).replace(f"{where}: ", "", 1).replace(EVAL_FIX, FIX), where) from exc
        return cls(**data)


def read_classifier_eval(path: str | Path) -> ClassifierEvalResult:
    """eval_classifier.json as a result; unreadable, damaged or of another shape: an InputError naming it."""
    from charter.jsonl import loads, read_error
    from charter.runs import files

    try:
        data = loads(files.check_input(path, FILE).read_bytes())
    except OSError as exc:
        raise read_error(path, exc) from exc
    except ValueError as exc:
        raise InputError(f"cannot be read ({str(exc).splitlines()[0]}); {FIX}", str(path)) from exc
    return ClassifierEvalResult.from_dict(data, str(path))


# ---- the work -------------------------------------------------------------------------------------


def evaluate_classifier(cfg: ClassifierEvalConfig,
                        load: Callable[[str], Any] | None = None) -> list[ClassifierEvalResult]:
    """Evaluate each classifier in cfg.classifier (one, or input/ and output/) on cfg.data; each result
    is written beside its classifier (or to cfg.out). `load(path)` opens one (default: load_guard)."""
    from charter.runs.files import check_out, write_out

    cfg.validate()
    dirs = guard_dirs(cfg.classifier)
    if cfg.out and len(dirs) > 1:
        raise ConfigError(f"--out names one file but {cfg.classifier} holds {len(dirs)} classifiers; pass one of "
                          f"{', '.join(str(d) for d in dirs)}, or leave --out out (each result goes beside its "
                          "classifier)")
    inputs = [p for p in (data_file(cfg.data), cfg.over_refusal_file) if p]
    outs = [check_out(cfg.out or d / FILE, KIND, inputs=inputs, example=d / FILE) for d in dirs]  # before any work
    examples = read_labelled(cfg.data, cfg.text_field, cfg.label_field, cfg.category_field)
    results = []
    for d, out in zip(dirs, outs):
        guard = (load or _load_guard)(str(d))
        try:
            res = evaluate_guard(guard, examples, cfg, classifier=str(d))
        finally:
            getattr(guard, "close", lambda: None)()
        write_out(out, KIND, res.to_json())
        log.info("wrote %s", out)
        results.append(res)
    return results


def _load_guard(path: str):
    from charter.guard.model import load_guard

    return load_guard(path)


def guard_dirs(path: str | Path) -> list[Path]:
    """The classifier directories at `path`: itself, or its input/ and output/ (`--kind both`)."""
    p = Path(path)
    if (p / "config.json").is_file():
        return [p]
    found = [p / kind for kind in ("input", "output") if (p / kind / "config.json").is_file()]
    if not found:
        raise InputError("holds no classifier (neither config.json nor input/ or output/); pass the directory "
                         "`charter train classifier --out` wrote", str(path))
    return found


def evaluate_guard(guard, examples: Sequence[Example], cfg: ClassifierEvalConfig,
                   classifier: str | None = None) -> ClassifierEvalResult:
    """Every number for `guard` on the examples meant for its kind (rows of the other kind are skipped)."""
    from charter import __version__

    mine = [e for e in examples if e.kind == guard.kind]
    if not mine:
        raise InputError(f"no rows for an {guard.kind} classifier ({ROWS[guard.kind]}); pass its test file",
                         examples[0].path if examples else str(cfg.data))
    wants_over_refusal = _wants_over_refusal(cfg, guard.kind)
    labels, threshold = [e.label for e in mine], float(guard.threshold)
    streams = stream_all(guard, mine) if guard.kind == "output" else None
    scores = [max(s, default=0.0) for s in streams] if streams is not None else \
        score_all(guard, [e.messages for e in mine])
    knobs = {"fpr": cfg.fpr, "bins": cfg.bins, "samples": cfg.bootstrap, "seed": cfg.seed}
    settings: Settings = {"data": mine[0].path, "fpr": cfg.fpr, "bins": cfg.bins, "bootstrap": cfg.bootstrap,
                          "seed": cfg.seed, "text_field": cfg.text_field, "label_field": cfg.label_field,
                          "category_field": cfg.category_field}
    res = ClassifierEvalResult(classifier or str(getattr(guard, "path", "")), guard.kind, threshold,
                               getattr(guard, "target_fpr", None), len(mine), len(examples) - len(mine),
                               time.strftime("%Y-%m-%dT%H:%M:%S"), __version__, settings,
                               metrics(labels, scores, threshold, **knobs),
                               per_category(mine, scores, threshold, knobs))
    if wants_over_refusal:
        res.over_refusal = over_refusal(guard, cfg.over_refusal_file)
    if streams is not None:
        res.streaming = {"harmful": firing(streams, labels, 1, threshold),
                         "harmless": firing(streams, labels, 0, threshold) if labels.count(0) else None}
    return res


def per_category(examples: Sequence[Example], scores: Sequence[float], threshold: float,
                 knobs: dict[str, Any]) -> dict[str, Metrics]:
    """The metrics of each named category (rows without one count only overall)."""
    by_cat: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        if e.category:
            by_cat.setdefault(e.category, []).append(i)
    return {c: metrics([examples[i].label for i in ix], [scores[i] for i in ix], threshold, **knobs)
            for c, ix in sorted(by_cat.items())}


ROWS = {"input": "rows whose 'kind' is input, or whose messages do not end with an answer",
        "output": "rows whose 'kind' is output, or whose messages end with the assistant's answer"}


def _wants_over_refusal(cfg: ClassifierEvalConfig, kind: str) -> bool:
    if cfg.over_refusal and kind != "input":
        raise ConfigError("--over-refusal needs an input classifier (the safe prompts have no answers for an "
                          "output classifier to read); drop the flag or pass the input classifier")
    return kind == "input" and cfg.over_refusal is not False


def score_all(guard, convs: Sequence[list[dict[str, str]]]) -> list[float]:
    """P(harmful) of each conversation, CHUNK at a time (progress logged), each checked to be a probability."""
    scores: list[float] = []
    for start in range(0, len(convs), CHUNK):
        scores += [float(s) for s in guard.score_messages(list(convs[start:start + CHUNK]))]
        log.info("scored %d of %d", len(scores), len(convs))
    if len(scores) != len(convs):
        raise RunError(f"the classifier returned {len(scores)} scores for {len(convs)} texts; it must return one "
                       "P(harmful) for each; retrain or fix it")
    return _checked(scores)


def _checked(scores: list[float]) -> list[float]:
    bad = next((s for s in scores if not (math.isfinite(s) and 0.0 <= s <= 1.0)), None)
    if bad is not None:
        raise RunError(f"the classifier returned {bad!r}, not a probability; it must return P(harmful) in [0, 1]; "
                       "retrain or fix it")
    return scores


def stream_all(guard, examples: Sequence[Example]) -> list[list[float]]:
    """P(harmful) after each answer token of each conversation (the streaming guard's view)."""
    streams = []
    for i, e in enumerate(examples, 1):
        streams.append(_checked([float(p) for _, p in guard.stream_scores(e.messages[:-1], e.messages[-1]["content"])]))
        if i % CHUNK == 0 or i == len(examples):
            log.info("streamed %d of %d answers", i, len(examples))
    return streams


def over_refusal(guard, path: str | None = None) -> OverRefusal:
    """The share of safe prompts that look unsafe (charter.evaluate.refusal's set) the guard would block."""
    from charter.evaluate.refusal import DATA, load_over_refusal

    items = load_over_refusal(path=path or DATA)
    scores = score_all(guard, [it.messages() for it in items])
    blocked = [s >= guard.threshold for s in scores]
    cats: dict[str, list[bool]] = {}
    for it, b in zip(items, blocked):
        cats.setdefault(it.category, []).append(b)
    shown: list[Blocked] = [{"id": it.id, "category": it.category, "prompt": it.prompt, "score": s}
                            for it, s, b in zip(items, scores, blocked) if b][:SHOWN]
    return {"file": str(path or DATA), "blocked": wilson(sum(blocked), len(blocked)),
            "by_category": {c: wilson(sum(v), len(v)) for c, v in sorted(cats.items())}, "examples": shown}


def firing(streams: Sequence[Sequence[float]], labels: Sequence[int], label: int, threshold: float) -> Firing:
    """Where the streaming guard first blocks the answers with `label`: the answer tokens read by then
    (the first prefix scoring >= threshold, as GuardClassifier.first_block finds it)."""
    from charter.stats import quantile

    chosen = [s for s, y in zip(streams, labels) if y == label]
    hits = []  # (answer tokens read when it fired, answer tokens)
    for s in chosen:
        at = next((i for i, p in enumerate(s) if p >= threshold), None)
        if at is not None:
            hits.append((at + 1, len(s)))
    tokens = [t for t, _ in hits]
    q = (lambda v, p: float(quantile(v, p))) if hits else (lambda v, p: None)
    return {"n": len(chosen), "fired": wilson(len(hits), len(chosen)), "tokens": tokens, "median": q(tokens, 0.5),
            "p10": q(tokens, 0.1), "p90": q(tokens, 0.9), "median_share": q([t / n for t, n in hits], 0.5)}


__all__ = ["ClassifierEvalConfig", "ClassifierEvalResult", "evaluate_classifier", "evaluate_guard",
           "read_classifier_eval", "over_refusal", "firing", "guard_dirs", "SCHEMA", "FILE"]
