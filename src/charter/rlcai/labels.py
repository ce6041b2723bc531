"""`charter label`: RL-CAI soft preference labels from a feedback model's multiple-choice answers.

For each prompt the policy samples answers; for each pair a feedback model is asked the paper's
question (charter.rlcai.questions) in both option orders, averaged (position bias), with one
principle drawn per comparison (seeded) or K drawn and averaged (ensemble). In chain-of-thought
mode the near-certain probabilities are clamped (paper: 40-60%). Rows: TRL preference rows
{prompt, chosen, rejected, score = P(chosen better)} plus OUT.transcripts.jsonl (every question
asked), written batch by batch and resumable.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from charter.choice import LETTERS
from charter.config import FORMATS, build_config, fingerprint, read_config_file
from charter.errors import ConfigError, RunError
from charter.rlcai.data import (  # noqa: F401 (re-exported for callers of the old charter.feedback)
    ANSWER, ANSWER_CUE, AFTER_COT, COT, COT_CUE, FeedbackExample, FeedbackPrinciple, FeedbackSet, draw_principles,
    load_feedback, load_feedback_examples, load_feedback_principles,
)
from charter.rlcai.questions import (  # noqa: F401
    Answered, ask, few_shot_prefix, pair_preference, question, render_options,
)
from charter.templates import TEXT_STOPS, text_initial
from charter.types import Message, Sampling

# ---- labelling ------------------------------------------------------------------------------------


@dataclass
class LabelConfig:
    """Everything that defines a `charter label` run."""

    policy: str = "embedded"
    backend: str = "transformers"
    feedback_model: str | None = None  # default: the policy model
    feedback_backend: str | None = None  # default: the policy's backend
    backend_options: dict[str, Any] = field(default_factory=dict)
    prompts: str = "default"
    prompt_field: str | None = None
    principles: str = "default"
    few_shot: str = "default"
    format: str = "chat"  # how the feedback model is asked
    policy_format: str | None = None  # how the policy is sampled (default: same as format)
    samples: int = 2
    ensemble: int = 1
    cot: bool = False
    clamp_low: float = 0.4
    clamp_high: float = 0.6
    limit: int | None = None
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    cot_max_tokens: int = 256
    cot_temperature: float = 0.0
    batch_size: int = 8  # prompts per batch (each batch is written as it completes)
    out: str = "runs/labels.jsonl"

    NON_RESULT_KEYS = ("backend_options", "limit", "batch_size", "out")

    def validate(self, where: str = "config") -> "LabelConfig":
        from charter.backends import check_backend_name

        check_backend_name(self.backend)
        if self.feedback_backend:
            check_backend_name(self.feedback_backend)
        for name in ("format", "policy_format"):
            v = getattr(self, name)
            if v is not None and v not in FORMATS:
                raise ConfigError(f"{where}: {name} must be one of {FORMATS}, not '{v}'")
        for name, low in (("samples", 2), ("ensemble", 1), ("max_tokens", 1), ("cot_max_tokens", 1), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}: {name} must be >= {low}, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"{where}: limit must be >= 0")
        if not (0 <= self.clamp_low <= 0.5 <= self.clamp_high <= 1) or abs(self.clamp_low + self.clamp_high - 1) > 1e-9:
            raise ConfigError(f"{where}: the clamp band must be symmetric around 0.5 (e.g. 0.4 0.6), "
                              f"got {self.clamp_low} {self.clamp_high}")
        if not 0 <= self.temperature <= 5 or not 0 <= self.cot_temperature <= 5 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: temperatures must be in [0, 5] and top_p in (0, 1]")
        suffix = Path(self.out).suffix.lower()
        if suffix not in (".jsonl", ".parquet"):
            raise ConfigError(f"{where}: out must end in .jsonl or .parquet, got '{self.out}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, extra: str = "") -> str:
        return fingerprint(self.to_dict(), self.NON_RESULT_KEYS, extra)


def load_label_config(path: str | None, overrides: dict[str, Any]) -> LabelConfig:
    data = read_config_file(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    where = path or "command line"
    return build_config(LabelConfig, data, where).validate(where)


def transcripts_path(out: str | Path) -> Path:
    """labels.jsonl -> labels.transcripts.jsonl (also for .parquet outputs)."""
    p = Path(out)
    return p.with_name(p.stem + ".transcripts.jsonl")


def _append(path: Path, rows: Sequence[dict]) -> None:
    import os

    if not rows:
        return
    with path.open("a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_transcripts(path: Path) -> list[dict]:
    """Transcript lines of a labels run, skipping a torn final line."""
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            if line.strip():
                out.append(json.loads(line))
    return out


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

    def line(self) -> str:
        ms = f", mean score {self.mean_score:.3f}" if self.mean_score is not None else ""
        return (f"{self.rows} preference rows from {self.comparisons} comparisons over {self.prompts} prompts "
                f"({self.skipped} skipped, {self.failures} failed, {self.resumed} prompts resumed{ms}) "
                f"in {self.seconds:.1f}s -> {self.out}")


def _same_backend(cfg: LabelConfig) -> bool:
    return (cfg.feedback_model or cfg.policy) == cfg.policy and (cfg.feedback_backend or cfg.backend) == cfg.backend


def sample_answers(policy, prompts: Sequence[Sequence[Message]], n: int, fmt: str, sampling: Sampling) -> list[list[str]]:
    """n answers per prompt from the policy (chat: template applied; text: raw transcript)."""
    flat = [list(p) for p in prompts for _ in range(n)]
    if fmt == "chat":
        done = policy.chat(flat, sampling)
    else:
        stops = tuple(dict.fromkeys(tuple(sampling.stop) + TEXT_STOPS))
        done = policy.complete([text_initial(p) for p in flat], replace(sampling, stop=stops))
    texts = [c.text.strip() for c in done]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def label_comparisons(feedback, fs: FeedbackSet, items: Sequence[dict], cfg: LabelConfig) -> list[dict]:
    """Label comparisons {"id", "prompt", "answers": [x, y]}: transcript dicts with score = P(x better)."""
    fmt = cfg.format
    prefix = few_shot_prefix(fs.examples, fmt, cfg.cot)
    cot = Sampling(max_tokens=cfg.cot_max_tokens, temperature=cfg.cot_temperature, top_p=cfg.top_p, seed=cfg.seed) if cfg.cot else None
    band = (cfg.clamp_low, cfg.clamp_high) if cfg.cot else None
    questions: list[tuple[str, int]] = []
    plan = []
    for item in items:
        x, y = item["answers"]
        drawn = draw_principles(fs.principles, cfg.seed, item["id"], cfg.ensemble)
        for p in drawn:
            questions.append((question(item["prompt"], p.text, [x, y]), 2))
            questions.append((question(item["prompt"], p.text, [y, x]), 2))
        plan.append(drawn)
    answered = ask(feedback, prefix, questions, fmt, cot)
    out, k = [], 0
    for item, drawn in zip(items, plan):
        asks, prefs = [], []
        for p in drawn:
            first, second = answered[k], answered[k + 1]
            k += 2
            pref = pair_preference(first.probs, second.probs, band)
            prefs.append(pref)
            for order, a in (("xy", first), ("yx", second)):
                asks.append({"principle": p.id, "principle_text": p.text, "order": order, "context": a.context,
                             "probs": a.probs, "reasoning": a.reasoning})
        out.append({**item, "principles": [p.id for p in drawn], "per_principle": prefs,
                    "score_first": sum(prefs) / len(prefs), "asks": asks})
    return out


def preference_row(t: dict) -> dict:
    """TRL conversational preference row; score = P(chosen better) >= 0.5."""
    x, y = t["answers"]
    s = t["score_first"]
    chosen, rejected, score = (x, y, s) if s >= 0.5 else (y, x, 1.0 - s)
    return {"prompt": t["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "score": score, "id": t["id"]}


def _open_backends(cfg: LabelConfig, policy, feedback) -> tuple[Any, Any, list]:
    """The policy and feedback backends (created unless given); `own` are the ones to close."""
    from charter.backends import create_backend

    own = []
    if policy is None:
        policy = create_backend(cfg.backend, cfg.policy, **cfg.backend_options)
        own.append(policy)
    if feedback is None:
        if _same_backend(cfg):
            feedback = policy
        else:
            feedback = create_backend(cfg.feedback_backend or cfg.backend, cfg.feedback_model or cfg.policy,
                                      **cfg.backend_options)
            own.append(feedback)
    return policy, feedback, own


def _comparisons(batch, answers: list[list[str]], meta: dict) -> tuple[list[dict], list[dict]]:
    """Every pair of a prompt's answers: (to label, skipped as empty or identical)."""
    comps, skipped = [], []
    for it, ans in zip(batch, answers):
        for i, j in itertools.combinations(range(len(ans)), 2):
            c = {"id": f"{it.id}:{i}-{j}", "prompt_id": it.id, "prompt": list(it.messages),
                 "answers": [ans[i], ans[j]], "samples": [i, j], **meta}
            why = "empty answer" if not ans[i] or not ans[j] else "identical answers" if ans[i] == ans[j] else None
            (skipped if why else comps).append({**c, "skipped": why, "score_first": None} if why else c)
    return comps, skipped


def _label_batch(policy, feedback, fs: FeedbackSet, batch, cfg: LabelConfig, sampling: Sampling, meta: dict) -> list[dict]:
    """Transcript lines of one batch; a failure is a set of `error` lines, redone on resume."""
    try:
        answers = sample_answers(policy, [it.messages for it in batch], cfg.samples, cfg.policy_format or cfg.format,
                                 sampling)
        comps, skipped = _comparisons(batch, answers, meta)
        return (label_comparisons(feedback, fs, comps, cfg) if comps else []) + skipped
    except Exception as exc:  # noqa: BLE001 - recorded per prompt, the run goes on
        return [{"id": f"{it.id}:error", "prompt_id": it.id, "prompt": list(it.messages), **meta,
                 "error": f"{type(exc).__name__}: {exc}", "score_first": None} for it in batch]


def _resume(tpath: Path, fingerprint: str, force: bool, overwrite: bool) -> list[dict]:
    """Finished transcript lines to keep (a prompt's last line says whether it is done)."""
    old = [] if overwrite else read_transcripts(tpath)
    if old and not force and any(t.get("fingerprint") != fingerprint for t in old):
        raise RunError(f"{tpath} was made with different settings; use a new --out, pass --overwrite to start "
                       "again, or --force to continue it anyway")
    status = {t["prompt_id"]: not t.get("error") for t in old}
    return [t for t in old if status[t["prompt_id"]]]


def _start_files(out: Path, tpath: Path, kept: list[dict], overwrite: bool) -> None:
    """Called once the backends are up, so a failed start leaves OUT as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and tpath.exists():
        tpath.unlink()
    if tpath.exists():  # cut a torn final line before appending
        data = tpath.read_bytes()
        if data and not data.endswith(b"\n"):
            tpath.write_bytes(data[: data.rfind(b"\n") + 1])
    if out.suffix.lower() == ".jsonl":  # rows are appended as batches finish; rewritten whole at the end
        _write_rows_atomic([preference_row(t) for t in kept if t.get("score_first") is not None], out)


def _write_rows_atomic(rows: list[dict], out: Path) -> None:
    import os

    from charter.export import write_rows

    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    write_rows(rows, tmp)
    os.replace(tmp, out)


def _append_rows(out: Path, lines: list[dict]) -> None:
    if out.suffix.lower() == ".jsonl":
        _append(out, [preference_row(t) for t in lines if t.get("score_first") is not None])


def label(cfg: LabelConfig, policy=None, feedback=None, overwrite: bool = False, force: bool = False,
          progress: bool = True) -> LabelSummary:
    """Sample answers, label every pair, and write rows + transcripts batch by batch (resumable)."""
    from charter.prompts import load_prompts

    start = time.time()
    fs = load_feedback(cfg.principles, cfg.few_shot)
    items = load_prompts(cfg.prompts, "red_team", cfg.prompt_field, cfg.limit, samples=1)
    extra = json.dumps([asdict(p) for p in fs.principles] + [asdict(e) for e in fs.examples], sort_keys=True)
    fingerprint = cfg.fingerprint(extra)
    out, tpath = Path(cfg.out), transcripts_path(cfg.out)
    kept = _resume(tpath, fingerprint, force, overwrite)
    done = {t["prompt_id"] for t in kept}
    todo = [it for it in items if it.id not in done]
    summary = LabelSummary(prompts=len(items), resumed=len(items) - len(todo), out=str(out))
    own: list = []
    try:
        if todo:
            policy, feedback, own = _open_backends(cfg, policy, feedback)
        _start_files(out, tpath, kept, overwrite)
        sampling = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        meta = {"fingerprint": fingerprint, "policy": cfg.policy, "feedback_model": cfg.feedback_model or cfg.policy,
                "format": cfg.format, "cot": cfg.cot}
        for b in range(0, len(todo), cfg.batch_size):
            lines = _label_batch(policy, feedback, fs, todo[b:b + cfg.batch_size], cfg, sampling, meta)
            _append(tpath, lines)
            _append_rows(out, lines)
            if progress:
                n = min(b + cfg.batch_size, len(todo))
                print(f"  label: {n}/{len(todo)} prompts ({time.time() - start:.0f}s)", file=sys.stderr)
    finally:
        for bk in own:
            bk.close()
    return _finish(tpath, out, summary, start)


def _finish(tpath: Path, out: Path, summary: LabelSummary, start: float) -> LabelSummary:
    """Rewrite OUT from the transcripts (the last line of an id wins: a retried failure replaces its error)."""
    last: dict[str, dict] = {t["id"]: t for t in read_transcripts(tpath)}
    ok_prompts = {t["prompt_id"] for t in last.values() if not t.get("error")}
    lines = [t for t in last.values() if not (t.get("error") and t["prompt_id"] in ok_prompts)]
    rows = [preference_row(t) for t in lines if t.get("score_first") is not None]
    _write_rows_atomic(rows, out)
    summary.comparisons = sum(1 for t in lines if not t.get("error"))
    summary.skipped = sum(1 for t in lines if t.get("skipped"))
    summary.rows = len(rows)
    summary.failures = sum(1 for t in lines if t.get("error"))
    summary.mean_score = sum(r["score"] for r in rows) / len(rows) if rows else None
    summary.seconds = time.time() - start
    return summary


__all__ = ["FeedbackPrinciple", "FeedbackExample", "FeedbackSet", "LabelConfig", "LabelSummary", "load_feedback",
           "load_feedback_principles", "load_feedback_examples", "draw_principles", "question", "few_shot_prefix",
           "ask", "pair_preference", "label", "label_comparisons", "preference_row", "transcripts_path",
           "LETTERS"]
