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
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from charter.choice import LETTERS
from charter.config import FORMATS, Config, setting
from charter.errors import ConfigError, RunError
from charter.jsonl import append_jsonl, loads, read_lines, set_aside
from charter.redact import error_text
from charter.rlcai.data import (  # noqa: F401 (re-exported for callers of the old charter.feedback)
    ANSWER, ANSWER_CUE, AFTER_COT, COT, COT_CUE, FeedbackExample, FeedbackPrinciple, FeedbackSet, draw_principles,
    load_feedback, load_feedback_examples, load_feedback_principles,
)
from charter.rlcai.questions import (  # noqa: F401
    Answered, ask, few_shot_prefix, pair_preference, question, render_options, sample,
)
from charter.templates import TEXT_STOPS, text_initial
from charter.types import Message, Sampling

log = logging.getLogger("charter.label")

# ---- labelling ------------------------------------------------------------------------------------


def float_list(text: str) -> list[float]:
    """'0.6,1.0,1.4' -> [0.6, 1.0, 1.4] (a flag's value; a ValueError is argparse's usage error)."""
    return [float(x) for x in text.split(",") if x.strip()]


@dataclass
class LabelConfig(Config):
    """Everything that defines a `charter label` run."""

    policy: str = setting("embedded", "model that samples the answers: your SL-CAI checkpoint, a local path, "
                          "or 'embedded' (default)")
    backend: str = setting("transformers", "backend for the policy (and the feedback model unless "
                           "--feedback-backend): transformers (default) | llamacpp | fake ...")
    feedback_model: str | None = setting(None, "model that labels the pairs (default: the policy)")
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
    cot: bool = setting(False, "chain of thought: reason step by step, then score; probabilities clamped")
    clamp_low: float = setting(0.4, "CoT clamp band, low end", cli=False)
    clamp_high: float = setting(0.6, "CoT clamp band, high end", cli=False)
    limit: int | None = setting(None, "use at most N prompts", bounds=">= 1", result=False)
    seed: int = setting(0, "seeds principle draws and sampling")
    temperature: float = setting(1.0, "policy sampling temperature (default 1.0)", bounds="[0, 5]")
    temperatures: list[float] = setting([], "sample each prompt's answers across these temperatures, answer i at "
                                        "the (i mod n)-th, e.g. 0.6,1.0,1.4 (default: --temperature for all)",
                                        cli={"type": float_list, "nargs": None, "metavar": "T,T,..."},
                                        since="issue 24")
    top_p: float = setting(1.0, "nucleus sampling (default 1.0)", bounds="(0, 1]")
    max_tokens: int = setting(256, "tokens per policy answer (default 256)", bounds=">= 1")
    cot_max_tokens: int = setting(256, "tokens of CoT reasoning (default 256)", bounds=">= 1")
    cot_temperature: float = setting(0.0, "CoT sampling temperature (default 0: greedy)", bounds="[0, 5]")
    batch_size: int = setting(8, "prompts per batch; each batch is written when it finishes (default 8)",
                              bounds=">= 1", result=False)
    out: str = setting("runs/labels.jsonl", "preference rows, .jsonl or .parquet (default runs/labels.jsonl); "
                       "transcripts go to OUT.transcripts.jsonl", result=False)

    def check(self, where: str) -> None:
        from charter.backends import check_backend_name

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
        if Path(self.out).suffix.lower() not in (".jsonl", ".parquet"):
            raise ConfigError(f"{where}: out must end in .jsonl or .parquet, got '{self.out}'")


def load_label_config(path: str | None, overrides: dict[str, Any]) -> LabelConfig:
    return LabelConfig.load(path, overrides)


def transcripts_path(out: str | Path) -> Path:
    """labels.jsonl -> labels.transcripts.jsonl (also for .parquet outputs)."""
    p = Path(out)
    return p.with_name(p.stem + ".transcripts.jsonl")


def transcript_line(raw: bytes | str) -> dict:
    """One transcript line, or ValueError: damaged JSON, or JSON that is not a line `label` wrote."""
    t = loads(raw)
    if not isinstance(t, dict) or not all(isinstance(t.get(k), str) for k in ("id", "prompt_id")):
        raise ValueError("not a transcript line (a JSON object with 'id' and 'prompt_id')")
    s, answers = t.get("score_first"), t.get("answers")
    if s is not None and not (isinstance(s, (int, float)) and isinstance(answers, list) and len(answers) == 2
                              and isinstance(t.get("prompt"), list)):
        raise ValueError("a labelled line needs a numeric 'score_first', a 'prompt' and two 'answers'")
    return t


def read_transcripts(path: Path) -> list[dict]:
    """Transcript lines of a labels run, without a torn final line or damaged lines (set aside on start)."""
    if not Path(path).exists():
        return []
    out = []
    for _, raw in read_lines(path):
        try:
            out.append(transcript_line(raw))
        except ValueError:
            continue
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


def answer_temperatures(n: int, temperatures: Sequence[float], default: float) -> list[float]:
    """The temperature of answer i of a prompt: temperatures[i % len] (NeMo's CAI recipe), else `default`."""
    return [float(temperatures[i % len(temperatures)]) if temperatures else default for i in range(n)]


def sample_answers(policy, prompts: Sequence[Sequence[Message]], n: int, fmt: str, sampling: Sampling,
                   temperatures: Sequence[float] = ()) -> list[list[str]]:
    """n answers per prompt from the policy (chat: template applied; text: raw transcript), one backend
    call per temperature (answer_temperatures)."""
    temps = answer_temperatures(n, temperatures, sampling.temperature)
    texts: dict[tuple[int, int], str] = {}
    for t in dict.fromkeys(temps):
        idx = [(k, i) for k in range(len(prompts)) for i in range(n) if temps[i] == t]
        flat = [list(prompts[k]) for k, _ in idx]
        got = sample(policy, flat if fmt == "chat" else [text_initial(p) for p in flat], fmt,
                     replace(sampling, temperature=t), TEXT_STOPS)
        texts.update(zip(idx, got))
    return [[texts[k, i] for i in range(n)] for k in range(len(prompts))]


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
    row = {"prompt": t["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
           "rejected": [{"role": "assistant", "content": rejected}], "score": score, "id": t["id"]}
    if t.get("temperatures"):  # --temperatures: the temperature each answer was sampled at
        tx, ty = t["temperatures"]
        row["chosen_temperature"], row["rejected_temperature"] = (tx, ty) if s >= 0.5 else (ty, tx)
    return row


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
                                 sampling, cfg.temperatures)
        comps, skipped = _comparisons(batch, answers, meta)
        if cfg.temperatures:  # each answer's temperature, kept in the transcripts and the rows
            temps = answer_temperatures(cfg.samples, cfg.temperatures, cfg.temperature)
            for c in comps + skipped:
                c["temperatures"] = [temps[i] for i in c["samples"]]
        return (label_comparisons(feedback, fs, comps, cfg) if comps else []) + skipped
    except Exception as exc:  # noqa: BLE001 - recorded per prompt, the run goes on
        return [{"id": f"{it.id}:error", "prompt_id": it.id, "prompt": list(it.messages), **meta,
                 "error": error_text(exc), "score_first": None} for it in batch]


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
    aside = tpath.with_name(tpath.stem + ".bad.jsonl")
    for n, _, why in set_aside(tpath, aside, transcript_line):  # a torn tail must not glue onto the next append
        if not why.startswith("torn"):
            log.warning("warning: %s:%d: damaged line (%s); moved to %s", tpath, n, why, aside)
    if out.suffix.lower() == ".jsonl":  # rows are appended as batches finish; rewritten whole at the end
        _write_rows([preference_row(t) for t in kept if t.get("score_first") is not None], out)


def _write_rows(rows: list[dict], out: Path) -> None:
    from charter.export import write_rows  # atomic

    write_rows(rows, out)


def _append_rows(out: Path, lines: list[dict]) -> None:
    if out.suffix.lower() == ".jsonl":
        append_jsonl(out, [preference_row(t) for t in lines if t.get("score_first") is not None])


def label(cfg: LabelConfig, policy=None, feedback=None, overwrite: bool = False, force: bool = False,
          progress: bool = True) -> LabelSummary:
    """Sample answers, label every pair, and write rows + transcripts batch by batch (resumable)."""
    from charter.prompts import load_prompts

    cfg.validate()  # a config built in Python has not been checked yet
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
            append_jsonl(tpath, lines)
            _append_rows(out, lines)
            if progress:
                n = min(b + cfg.batch_size, len(todo))
                log.info("  label: %d/%d prompts (%.0fs)", n, len(todo), time.time() - start)
    finally:
        for bk in own:
            bk.close()
    return _check_rows(_finish(tpath, out, summary, start), tpath)


def _check_rows(summary: LabelSummary, tpath: Path) -> LabelSummary:
    """A run that made no rows and had no failures (which the summary reports) is an error, not a result."""
    if summary.rows or summary.failures:
        return summary
    raise RunError(f"no preference rows: all {summary.skipped} comparisons over {summary.prompts} prompts were "
                   f"skipped, their answers identical or empty (see {tpath}); sample distinct answers with a higher "
                   "--temperature, more --max-tokens or --samples, or another --policy")


def _finish(tpath: Path, out: Path, summary: LabelSummary, start: float) -> LabelSummary:
    """Rewrite OUT from the transcripts (the last line of an id wins: a retried failure replaces its error)."""
    last: dict[str, dict] = {t["id"]: t for t in read_transcripts(tpath)}
    ok_prompts = {t["prompt_id"] for t in last.values() if not t.get("error")}
    lines = [t for t in last.values() if not (t.get("error") and t["prompt_id"] in ok_prompts)]
    rows = [preference_row(t) for t in lines if t.get("score_first") is not None]
    _write_rows(rows, out)
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
