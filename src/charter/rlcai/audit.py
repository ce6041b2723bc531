"""`charter audit`: which principles of a constitution explain a set of preferences.

Input: preference pairs, AI labels (`charter label`'s --out) or human comparisons (hh-rlhf rows,
`chosen`/`rejected` as whole "Human: ... Assistant: ..." transcripts, or TRL preference rows),
read by charter.inputs.rows.read_pairs; a pair whose score is exactly 0.5 prefers nothing and is
left out. For each principle alone the judge is asked the feedback question
(charter.rlcai.questions) in both option orders, from option log-probs; how often its verdict
agrees with the labels, whether it holds when the order is swapped, and which principles pick
different winners are charter.rlcai.audit_stats. This is the check of Inverse Constitutional AI
(arXiv 2406.06560) for a constitution one already has; the judge's own position and length bias
over the same answers (charter.rlcai.bias) comes with it, beside how often the labels themselves
chose the longer answer.

A pair is one program on the scheduler (charter.pipeline.scheduler): batched or streamed as the
engine allows. Each pair's answers are appended to OUT.pairs.jsonl in the run store
(charter.runs.store: one writer, a settings fingerprint, torn lines set aside) as it finishes, so
a stopped audit resumes; the result JSON is written whole at the end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from charter.config import FORMATS, Config, backend_setting, seed_setting, setting
from charter.errors import ConfigError, InputError
from charter.rlcai.audit_stats import Disagreement, PrincipleAudit, disagreements, ensemble, principle_audit
from charter.rlcai.bias import Compared, JudgeBias, Share, judge_bias, p_first, share
from charter.runs.store import Layout
from charter.types import Message

log = logging.getLogger("charter.audit")
SCHEMA = "charter.audit/1"
KIND = "Charter audit"  # what charter.runs.files records the result as


@dataclass
class AuditConfig(Config):
    """Everything that defines a `charter audit` run."""

    data: str = setting("", "preference pairs: label's --out, hh-rlhf rows (chosen/rejected transcripts) or TRL "
                        "preference rows (.jsonl, .json or .parquet); or a run directory whose label pairs people "
                        "picked in `charter review` (its reviews/)", flag="data")
    model: str = setting("embedded", "judge model (default: embedded), or BACKEND:MODEL")
    backend: str = backend_setting("for --model")
    backend_options: dict[str, Any] = setting({}, "passed to the backend's constructor", result=False)
    principles: str = setting("default", "the constitution to audit: feedback principles as Charter YAML, the "
                              "paper's RLMadisonInstructions.json, or 'default'")
    few_shot: str = setting("none", "feedback examples before each question: 'none' (default), 'default' or a file")
    format: str = setting("chat", "how the judge is asked: one chat user message (default) or raw text",
                          choices=FORMATS)
    limit: int | None = setting(None, "the first N pairs only", bounds=">= 1")
    seed: int = seed_setting("bootstrap resampling")
    bootstrap: int = setting(1000, "bootstrap resamples for the agreement intervals (default 1000)", bounds=">= 1")
    batch_size: int = setting(16, "questions per backend call on an engine that batches per call (default 16)",
                              bounds=">= 1", result=False)
    out: str = setting("runs/audit.json", "result JSON (default runs/audit.json); the judge's answers go to "
                       "OUT.pairs.jsonl beside it, so a stopped audit resumes", result=False)
    REQUIRED = ("data",)

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name

        check_backend_name(self.backend)
        if Path(self.out).suffix.lower() != ".json":
            raise ConfigError(f"{where}: out must end in .json, got '{self.out}'")


# What the judge's answers do not depend on: the summary's settings, and which file the pairs came
# from (an answer is stored under its pair's content).
SUMMARY_ONLY = (*AuditConfig.NON_RESULT_KEYS, "seed", "bootstrap", "limit", "data")


@dataclass(frozen=True)
class AuditPair:
    """One preference: `chosen` is the answer the labels prefer."""

    id: str
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str


@dataclass
class AuditResult:
    data: str
    model: str
    backend: str
    format: str
    few_shot: str
    constitution: str
    pairs: int = 0  # pairs judged under every principle
    ties: int = 0  # pairs whose label prefers neither answer (score 0.5): left out
    failed: int = 0
    seed: int = 0
    bootstrap: int = 0
    principles: list[PrincipleAudit] = field(default_factory=list)
    all_principles: PrincipleAudit | None = None  # verdicts averaged over every principle
    disagreements: list[Disagreement] = field(default_factory=list)
    longer_chosen: Share | None = None  # how often the labels chose the longer answer
    bias: JudgeBias | None = None
    seconds: float = 0.0
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(cfg: AuditConfig, backend=None, overwrite: bool = False, force: bool = False,
          progress: bool = False) -> AuditResult:
    """Judge every pair of cfg.data under each principle alone, both orders; writes cfg.out
    (the answers as they come to OUT.pairs.jsonl: a rerun resumes; `overwrite` starts again)."""
    from charter.runs.files import check_out, write_out
    from charter.runs.store import RunStore
    from charter.rlcai.data import load_feedback

    cfg.validate()
    start = time.time()
    fs = load_feedback(cfg.principles, cfg.few_shot)
    inputs = [p for p in (cfg.data, cfg.principles, cfg.few_shot) if p not in ("default", "none")]
    out = check_out(cfg.out, KIND, inputs=inputs)
    pairs, ties = load_pairs(cfg.data, cfg.limit)
    with RunStore(out.parent, audit_layout(out)) as store:
        fingerprint, parts = fingerprint_of(cfg, fs)
        store.open(cfg.to_dict(), fingerprint, force=force or overwrite, parts=parts, ignore=SUMMARY_ONLY)
        if overwrite:
            store.clear()
        todo = [p for p in pairs if p.id not in store.done_ids()]
        log.info("audit: %d pairs x %d principles, both orders (%d pairs already judged)", len(pairs),
                 len(fs.principles), len(pairs) - len(todo))
        if todo:
            judge_pairs(cfg, fs, todo, store, backend, progress)
        answers = read_answers(store.records_path)
    res = summarise(cfg, fs, pairs, answers)
    res.ties, res.seconds = ties, time.time() - start
    write_out(out, KIND, json.dumps(res.to_dict(), indent=1, ensure_ascii=False))
    return res


def audit_layout(out: str | Path) -> Layout:
    stem = Path(out).stem
    return Layout(records=f"{stem}.pairs.jsonl", config=f"{stem}.config.yaml", meta=f"{stem}.meta.json",
                  set_aside=f"{stem}.pairs.bad.jsonl", lock=f"{stem}.lock", status=_line_status, own_dir=False,
                  what="pair", redo="judged again")


def _line_status(raw: bytes) -> tuple[str, bool]:
    from charter.jsonl import loads

    line = loads(raw)
    if not isinstance(line, dict) or not isinstance(line.get("id"), str) or "orders" not in line:
        raise ValueError("not an audit line (an object with 'id' and 'orders')")
    return line["id"], line.get("error") is None


def fingerprint_of(cfg: AuditConfig, fs) -> tuple[str, dict[str, str]]:
    """What the judge's answers depend on (not SUMMARY_ONLY), and the parts a refusal names when they changed."""
    from charter.config import fingerprint

    principles, examples = [asdict(p) for p in fs.principles], [asdict(e) for e in fs.examples]
    parts = {"principles": json.dumps(principles, sort_keys=True), "few-shot": json.dumps(examples, sort_keys=True)}
    return fingerprint(cfg.to_dict(), SUMMARY_ONLY, json.dumps(principles + examples, sort_keys=True)), parts


# ---- the pairs -----------------------------------------------------------------------------------


def answer_text(messages: Sequence[Message]) -> str:
    """One answer: its text, or the turns after the shared prompt rendered as a transcript."""
    from charter.inputs.transcripts import render

    if len(messages) == 1:
        return str(messages[0]["content"]).strip()
    return render(messages).strip()


def load_pairs(path: str, limit: int | None = None) -> tuple[list[AuditPair], int]:
    """The pairs of a preference file (or of people's picks, for a run directory), each oriented
    chosen-first, and how many were ties (left out)."""
    from charter.inputs.rows import read_pairs

    if Path(path).is_dir():
        return reviewed(path, limit)
    pairs, ties = [], 0
    for row in read_pairs(path):
        if limit is not None and len(pairs) >= limit:
            break
        if row["score"] == 0.5:
            ties += 1
            continue
        chosen, rejected = answer_text(row["chosen"]), answer_text(row["rejected"])
        if row["score"] < 0.5:  # a soft label below one half prefers the other answer
            chosen, rejected = rejected, chosen
        key = json.dumps([row["prompt"], chosen, rejected], sort_keys=True, ensure_ascii=False)
        pid = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        pairs.append(AuditPair(pid, tuple(row["prompt"]), chosen, rejected))
    if not pairs:
        raise InputError(f"no pairs to audit ({ties} ties, whose score 0.5 prefers neither answer)", path)
    return pairs, ties


def reviewed(run: str, limit: int | None) -> tuple[list[AuditPair], int]:
    """The label pairs people picked in `charter review`: the answer most of their picks chose is
    `chosen`; a pair whose picks split evenly prefers nothing (a tie). Stale picks are skipped."""
    from charter.rlcai.human_agreement import reviewed_pairs
    from charter.runs.reviews import read_marks

    picked, stale = reviewed_pairs(read_marks(run))
    if stale:
        log.warning("%s: %d picks left out: their pair's answers changed since they were made", run, stale)
    pairs, ties = [], 0
    for p in picked:
        if limit is not None and len(pairs) >= limit:  # as for a file: the first `limit` pairs judged
            break
        firsts = sum(1 for c in p["choices"] if c == 0)
        if 2 * firsts == len(p["choices"]):
            ties += 1
            continue
        c = 0 if 2 * firsts > len(p["choices"]) else 1
        pairs.append(AuditPair(p["id"], tuple(p["prompt"]), p["answers"][c], p["answers"][1 - c]))
    if not pairs:
        raise InputError(f"no pairs to audit: no label pair was picked by a reviewer ({ties} evenly split); mark "
                         "some with `charter review RUN`", run)
    return pairs, ties


# ---- the judge's work ---------------------------------------------------------------------------


def pair_program(pair: AuditPair, fs, prefix, fmt: str):
    """One pair under every principle, both orders, asked at once; returns its store line."""
    from charter.rlcai.questions import asking, question

    questions = []
    for p in fs.principles:
        questions += [(question(pair.prompt, p.text, [pair.chosen, pair.rejected]), 2),
                      (question(pair.prompt, p.text, [pair.rejected, pair.chosen]), 2)]
    answered = yield from asking(prefix, questions, fmt, None)
    it = iter(answered)
    orders = {p.id: [p_first(next(it).probs), p_first(next(it).probs)] for p in fs.principles}
    return {"id": pair.id, "orders": orders, "error": None}


def judge_pairs(cfg: AuditConfig, fs, pairs: Sequence[AuditPair], store, backend, progress: bool) -> None:
    """The pairs through the scheduler on `backend` (opened here unless given); each line appended as it finishes."""
    from charter.backends import SCORED_QUESTION_TOKENS, open_model
    from charter.pipeline.jobrun import progress_bar
    from charter.pipeline.scheduler import run_programs
    from charter.rlcai.questions import few_shot_prefix

    prefix = few_shot_prefix(fs.examples, cfg.format, False)
    own = backend is None
    if own:
        budget = len(pairs) * 2 * len(fs.principles) * SCORED_QUESTION_TOKENS
        backend = open_model(cfg.model, cfg.backend, budget=budget, **cfg.backend_options)
    try:
        if prefix:
            backend.share_prefix(prefix)

        def on_done(pair: AuditPair, line, error: str | None) -> None:
            store.append(line if error is None else {"id": pair.id, "orders": None, "error": error})
            bar.update(1)

        with progress_bar(len(pairs), progress, unit=" pairs") as bar:
            run_programs(backend, pairs, lambda p: pair_program(p, fs, prefix, cfg.format), on_done,
                         batch_size=cfg.batch_size)
    finally:
        if own:
            backend.close()


def read_answers(path: Path) -> dict[str, dict[str, list[float]]]:
    """pair id -> principle id -> [P(first) chosen first, P(first) rejected first]; the last line of an id wins."""
    from charter.jsonl import read_jsonl

    got: dict[str, dict] = {}
    if path.exists():
        for _, line in read_jsonl(path, skip_damaged=True):
            if isinstance(line, dict) and isinstance(line.get("id"), str):
                if line.get("error") is None and isinstance(line.get("orders"), dict):
                    got[line["id"]] = line["orders"]
                else:
                    got.pop(line["id"], None)
    return got


# ---- the result ------------------------------------------------------------------------------------


def summarise(cfg: AuditConfig, fs, pairs: Sequence[AuditPair], answers: dict) -> AuditResult:
    """The per-principle numbers over the pairs judged under every principle."""
    ids = [p.id for p in fs.principles]
    done = [p for p in pairs if all(pid in answers.get(p.id, {}) for pid in ids)]
    res = AuditResult(cfg.data, cfg.model, cfg.backend, cfg.format, cfg.few_shot, cfg.principles, pairs=len(done),
                      failed=len(pairs) - len(done), seed=cfg.seed, bootstrap=cfg.bootstrap)
    by_principle = {pid: [tuple(answers[p.id][pid]) for p in done] for pid in ids}
    res.principles = [principle_audit(p.id, p.text, by_principle[p.id], cfg.seed, cfg.bootstrap)
                      for p in fs.principles]
    if done:
        res.all_principles = principle_audit("all", "every principle, averaged", ensemble(by_principle), cfg.seed,
                                             cfg.bootstrap)
    res.disagreements = disagreements(by_principle)
    differ = [p for p in done if len(p.chosen) != len(p.rejected)]
    res.longer_chosen = share(sum(len(p.chosen) > len(p.rejected) for p in differ), len(differ), "longer", {})
    res.bias = judge_bias((Compared(tuple(tuple(answers[p.id][pid]) for pid in ids), len(p.chosen), len(p.rejected))
                           for p in done), cfg.model)  # the pairs' sources are not known: no self-preference
    if res.failed:
        log.warning("audit: %d pairs failed (see %s); run the same command again to retry them", res.failed,
                    Path(cfg.out).with_suffix("").name + ".pairs.jsonl")
    return res


def read_audit(path: str | Path) -> dict[str, Any]:
    """An audit result JSON, its schema checked; an InputError naming it otherwise."""
    from charter.jsonl import loads

    try:
        data = loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be read ({exc}); rerun `charter audit`", str(path)) from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"not an audit made by `charter audit` (no \"schema\": \"{SCHEMA}\")", str(path))
    return data


__all__ = ["AuditConfig", "AuditResult", "AuditPair", "audit", "load_pairs", "read_audit"]
