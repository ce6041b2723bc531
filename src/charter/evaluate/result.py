"""What `charter eval` returns and writes to eval.json, as types (in the manner of lm-eval's result
schema), and the one reader of eval.json: `charter eval`, the report and anyone else read it here.

eval.json (schema "charter.eval/1"); every part but the header is present only if it was computed:
  run, records, created, charter_version, settings {models, judge, pm, limit, seed, bootstrap, sampling}
  models: {label: {spec, revision_preference, evasive}}
      revision_preference: mean over red-team records of logp(final revision) - logp(initial) per token
      under that model (mean_delta), the share of records where the revision is likelier, by round too.
  elo: {harmless|helpful: {players: {label: {elo, low, high}}, comparisons, position_bias}}
      harmless: judged on red-team prompts; helpful: on helpfulness prompts (all prompts if none).
      Elo is centred at mean 0; low/high: 95% bootstrap interval; position_bias: mean P("(A)").
  revisions: [{run, label, records, curves: {harmless|helpful: {rounds: [CurvePoint]}}}]
      p_revision = mean P(revision k preferred over the initial answer); elo: revision k's Elo with
      the initial answer at 0.
  answers: [{id, kind, prompt, answers: {label: text}, evasive: {label: bool}}]
  verdicts: [{id, question, a, b, p_a, swapped, p_first}]  (the model comparisons behind elo)
  pm: PM scores of the initial answer (revision 0) and each revision (charter.evaluate.revision_scores)
  over_refusal: refusal rate on safe prompts that look unsafe (charter.evaluate.refusal)
  bias: the judge's position, length and self-preference bias over the verdicts (charter.rlcai.bias)
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Union

from charter.errors import InputError
from charter.rlcai.bias import JudgeBias

SCHEMA = "charter.eval/1"
FIX = "rerun `charter eval` on the run"


class Settings(TypedDict):
    models: list[str]
    judge: str | None
    pm: str | None
    limit: int | None
    seed: int
    bootstrap: int
    sampling: dict[str, Any]


class RoundPreference(TypedDict):
    round: int
    n: int
    mean_delta: float
    share_preferred: float


class RevisionPreference(TypedDict):
    n: int
    mean_delta: float
    share_preferred: float
    by_round: list[RoundPreference]
    logp_initial: float
    logp_final: float


class Evasiveness(TypedDict, total=False):
    n: int
    rate: float | None
    red_team_rate: float | None
    helpful_rate: float | None
    judge_rate: float | None  # with --judge-evasive


class ModelResult(TypedDict, total=False):
    spec: str
    revision_preference: RevisionPreference
    evasive: Evasiveness


class Player(TypedDict):
    elo: float
    low: float
    high: float


class Elo(TypedDict):
    players: dict[str, Player]
    comparisons: int
    position_bias: float


class CurvePoint(TypedDict):
    round: int
    n: int
    p_revision: float
    elo: float
    elo_low: float
    elo_high: float


class Curve(TypedDict):
    rounds: list[CurvePoint]


class RevisionRun(TypedDict):
    run: str
    label: str
    records: int
    curves: dict[str, Curve]


class AnswerRow(TypedDict):
    id: str
    kind: str
    prompt: list[dict[str, str]]
    answers: dict[str, str]
    evasive: dict[str, bool]


class VerdictRow(TypedDict):
    id: str
    question: str
    a: str
    b: str
    p_a: float
    swapped: bool
    p_first: float


class MeanCI(TypedDict):
    n: int
    mean: float
    low: float
    high: float


class RevisionScore(MeanCI):
    revision: int
    evasive: float


class PrincipleEffect(MeanCI):
    principle: str


class ScoredItem(TypedDict):
    id: str
    principles: list[str]
    scores: list[float]


class PMRun(TypedDict):
    run: str
    label: str
    direct: bool
    items: list[ScoredItem]
    by_revision: list[RevisionScore]
    per_principle: list[PrincipleEffect]


class CritiqueDiff(TypedDict):
    revision: int
    critique: float
    direct: float
    diff: float
    paired: bool
    low: float
    high: float
    n_critique: int
    n_direct: int


class CritiqueVsDirect(TypedDict):
    critique: str
    direct: str
    by_revision: list[CritiqueDiff]


class PMResult(TypedDict, total=False):
    pm: str
    runs: list[PMRun]
    critique_vs_direct: CritiqueVsDirect


class Refusals(TypedDict, total=False):
    n: int
    refused: int
    rate: float | None
    judge_rate: float | None  # with --judge


class ModelRefusals(Refusals, total=False):
    by_category: dict[str, Refusals]


class RefusalPoint(TypedDict):
    model: str
    refusal_rate: float | None
    judge_refusal_rate: float | None
    harmless_elo: float | None
    harmless_low: float | None
    harmless_high: float | None
    helpful_elo: float | None


class SafeAnswer(TypedDict, total=False):
    id: str
    category: str
    prompt: str
    answers: dict[str, str]
    refused: dict[str, bool]
    judge: dict[str, float]  # with --judge


class OverRefusal(TypedDict):
    n: int
    categories: dict[str, int]
    models: dict[str, ModelRefusals]
    points: list[RefusalPoint]
    answers: list[SafeAnswer]


@dataclass
class EvalResult:
    """One `charter eval`: its header, then each part it computed (None: not asked for)."""

    run: str
    records: int
    charter_version: str
    created: str
    settings: Settings
    models: dict[str, ModelResult] = field(default_factory=dict)
    verdicts: list[VerdictRow] = field(default_factory=list)
    answers: list[AnswerRow] | None = None
    elo: dict[str, Elo] | None = None
    over_refusal: OverRefusal | None = None
    revisions: list[RevisionRun] | None = None
    pm: PMResult | None = None
    bias: JudgeBias | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """eval.json's object: the schema first, then every part that was computed."""
        out = {"schema": self.schema}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name != "schema" and getattr(self, f.name) is not None})
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "eval.json") -> "EvalResult":
        """The result `data` holds, every part checked against its type: an InputError naming the
        first value of another shape (a hand-edited, foreign or damaged eval.json)."""
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("charter.eval/"):
            raise InputError(f"not an evaluation made by `charter eval` (no \"schema\": \"{SCHEMA}\"); {FIX}", where)
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"not an evaluation of this Charter: unknown key '{unknown[0]}'; {FIX}", where)
        for f in dataclasses.fields(cls):
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(f"not an evaluation: '{f.name}' is missing; {FIX}", where)
            if f.name in data:
                check(data[f.name], hints[f.name], f.name, where)
        return cls(**data)


def check(value: Any, hint: Any, path: str, where: str) -> None:
    """`value` has the shape `hint` describes (TypedDicts, list[X], dict[str, X], X | None, scalars)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        return check(value, hint, path, where)
    if typing.is_typeddict(hint):
        return _check_typeddict(value, hint, path, where)
    expected = origin or hint
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, float))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise InputError(f"not an evaluation: {path} should be {_name(hint)}, not {type(value).__name__}; {FIX}",
                         where)
    if origin is list:
        for i, item in enumerate(value):
            check(item, args[0], f"{path}[{i}]", where)
    elif origin is dict:
        for key, item in value.items():
            check(item, args[1], f"{path}.{key}", where)


def _check_typeddict(value: Any, hint: Any, path: str, where: str) -> None:
    if not isinstance(value, dict):
        raise InputError(f"not an evaluation: {path} should be an object, not {type(value).__name__}; {FIX}", where)
    fields = typing.get_type_hints(hint)
    missing = sorted(hint.__required_keys__ - set(value))
    if missing:
        raise InputError(f"not an evaluation: {path}.{missing[0]} is missing; {FIX}", where)
    for key, item in value.items():
        if key not in fields:
            raise InputError(f"not an evaluation: unknown key {path}.{key}; {FIX}", where)
        check(item, fields[key], f"{path}.{key}", where)


def _name(hint: Any) -> str:
    names = {list: "a list", dict: "an object", str: "a string", int: "an integer", float: "a number",
             bool: "true/false"}
    return names.get(typing.get_origin(hint) or hint, str(hint))


def read_eval(path: str | Path) -> EvalResult:
    """eval.json as an EvalResult; unreadable, damaged or of another shape: an InputError naming it."""
    from charter.runs import files
    from charter.jsonl import loads, read_error

    try:
        data = loads(files.check_input(path, "eval.json").read_bytes())
    except OSError as exc:
        raise read_error(path, exc) from exc
    except ValueError as exc:  # JSON, UTF-8 and nesting errors are ValueErrors
        raise InputError(f"cannot be read ({str(exc).splitlines()[0]}); {FIX}", str(path)) from exc
    return EvalResult.from_dict(data, str(path))


__all__ = ["SCHEMA", "EvalResult", "read_eval", "Settings", "ModelResult", "Elo", "RevisionRun", "AnswerRow",
           "VerdictRow", "PMResult", "OverRefusal"]
