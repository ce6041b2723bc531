"""How good is a feedback model? Accuracy and calibration on multiple-choice comparison sets.

Input: JSONL rows {"prompt", "corrects", "incorrects"} in the paper's format, e.g. the released
438 HHH comparisons. Two row styles are understood:

- label style (the HHH file): the prompt already holds the conversation, the question, the
  options " (A) [[[...]]]" / " (B) [[[...]]]" and ends with "The answer is:"; corrects and
  incorrects are option labels like " (A)". The options are parsed so they can be swapped.
- answer style (like RLMadisonFewShotPrompts.json): corrects and incorrects are answer texts. A
  "\\n\\nHuman: ...\\n\\nAssistant:" prompt becomes Charter's question with a principle drawn per
  row (or --principle); any other prompt is taken as the question and the options are appended
  in the file's style ("\\n (A) [[[...]]]\\n (B) [[[...]]]\\n\\nThe answer is:").

Every correct is compared with every incorrect in both option orders; P(correct) is the
position-averaged probability; a row is correct when its mean P(correct) > 0.5 (a tie is wrong).
Calibration: each comparison gives two points (P(correct), 1) and (1 - P(correct), 0); bins of
predicted probability vs the observed frequency, ECE and Brier score.

A trained preference model (`--pm`) is scored on the same sets: P(correct) = sigmoid(r_correct -
r_incorrect) over whole conversations (the HHH file's text_correct / text_incorrect transcripts,
or an answer-style row's transcript + each answer), and also on held-out preference rows
(prompt/chosen/rejected), so the PM and the prompted feedback model compare on one scale.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from charter.config import Config, backend_setting, max_tokens_setting, seed_setting, setting, temperature_setting
from charter.errors import ConfigError, RunError
from charter.rlcai.bias_rows import labeler_bias
from charter.rlcai.data import load_feedback
from charter.rlcai.questions import few_shot_prefix
from charter.rlcai.mc_file import MCRow, comparisons, load_mc_file, pm_pairs
from charter.types import Sampling

log = logging.getLogger("charter.eval_labeler")


def reliability(points: Sequence[tuple[float, int]], bins: int = 10) -> tuple[list[dict], float]:
    """Bins of predicted probability vs observed frequency, and the expected calibration error."""
    out = []
    total = len(points)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            pred = sum(p for p, _ in inside) / len(inside)
            obs = sum(y for _, y in inside) / len(inside)
            ece += len(inside) / total * abs(pred - obs)
        else:
            pred = obs = None
        out.append({"low": lo, "high": hi, "count": len(inside), "mean_predicted": pred, "observed": obs})
    return out, ece


@dataclass
class LabelerResult:
    file: str
    model: str
    backend: str
    format: str
    cot: bool
    few_shot: str
    n_rows: int = 0
    n_comparisons: int = 0
    accuracy: float = 0.0
    accuracy_first_order: float = 0.0  # without position averaging: only the file's own order
    mean_p_correct: float = 0.0
    position_bias: float = 0.0  # mean P(A) over every question asked; 0.5 = none
    ece: float = 0.0
    brier: float = 0.0
    bins: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    plot: str | None = None
    bias: dict | None = None  # the judge's position and length bias (charter.rlcai.bias.JudgeBias)
    human: dict | None = None  # --reviews: agreement with people's picks (charter.rlcai.human_agreement)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def line(self) -> str:
        if self.format == "pm":
            return (f"preference model {self.model}: accuracy {self.accuracy:.3f} on {self.n_rows} rows "
                    f"({self.n_comparisons} comparisons; mean P(correct) {self.mean_p_correct:.3f}; ECE {self.ece:.3f}; "
                    f"Brier {self.brier:.3f}) in {self.seconds:.0f}s")
        mode = "with CoT" if self.cot else "without CoT"
        return (f"{self.model} ({self.format}, {mode}): accuracy {self.accuracy:.3f} on {self.n_rows} rows "
                f"(first order only {self.accuracy_first_order:.3f}; mean P(correct) {self.mean_p_correct:.3f}; "
                f"P(A) {self.position_bias:.3f}; ECE {self.ece:.3f}; Brier {self.brier:.3f}) in {self.seconds:.0f}s")


@dataclass
class LabelerEvalConfig(Config):
    """Everything that defines a `charter eval-labeler` run."""

    file: str = setting("", "JSONL of {prompt, corrects, incorrects} rows, e.g. 438HHHEvaluations.jsonl", flag="file")
    model: str = setting("embedded", "feedback model (default: embedded), or BACKEND:MODEL")
    pm: str | None = setting(None, "score a preference model (`charter train pm` directory) instead of a prompted "
                             "feedback model; FILE may also be held-out preference rows (prompt/chosen/rejected)")
    backend: str = backend_setting("for --model")
    backend_options: dict[str, Any] = setting({}, "passed to the backend's constructor", result=False)
    format: str = setting("text", "raw text as in the file (default) or one chat user message",
                          choices=("text", "chat"))
    cot: bool = setting(False, "chain of thought before the answer")
    few_shot: str = setting("none", "feedback examples to prepend: 'none' (default), 'default' or a file")
    principles: str = setting("default", "principles for answer-style rows (Charter YAML or "
                              "RLMadisonInstructions.json)")
    principle: str | None = setting(None, "one fixed principle text for answer-style rows (default: drawn per row)")
    limit: int | None = setting(None, "first N rows only", bounds=">= 1")
    seed: int = seed_setting("principle draws and CoT sampling")
    max_tokens: int = max_tokens_setting(256, "CoT reasoning")
    temperature: float = temperature_setting(0.0, "CoT reasoning")
    batch_size: int | None = setting(None, "backend batch size", bounds=">= 1", result=False)
    bins: int = setting(10, "calibration bins (default 10)", bounds=">= 1")
    out: str = setting("runs/labeler.json", "results JSON (default runs/labeler.json)", result=False)
    plot: str | None = setting(None, "reliability plot PNG (default: OUT with .png; 'none' to skip)", result=False)
    reviews: str | None = setting(None, "also score the label pairs people picked in `charter review` (a run, whose "
                                  "reviews/ are read, or one marks file): agreement with their picks")

    def check(self, where: str) -> None:
        if not self.file and not self.reviews:
            raise ConfigError(f"{where}: 'file' is required (pass FILE or set it in the config file), or --reviews RUN")
        if self.reviews and self.pm:
            raise ConfigError("--reviews scores a prompted feedback model, not --pm; drop one of them")


def evaluate_labeler(cfg: LabelerEvalConfig, backend=None, progress: bool = False) -> LabelerResult:
    """Score cfg.model (or the preference model cfg.pm) on cfg.file; writes cfg.out and the reliability plot."""
    cfg.validate()  # a config made in Python has not been checked yet
    inputs = [p for p in (cfg.file, cfg.pm, cfg.principles, cfg.few_shot, cfg.reviews) if p]
    out, plot = check_outputs(cfg.out, cfg.plot, inputs)  # before any model loads
    res = _score_pm(cfg) if cfg.pm else _score_model(cfg, backend, progress)
    write_result(res, out, plot if res.n_rows else None, inputs)  # --reviews alone: no calibration to plot
    return res


RESULT, PLOT = "Charter eval-labeler result", "Charter eval-labeler plot"  # as charter.runs.files records them


def check_outputs(out: str | Path, plot: str | Path | None,
                  inputs: Sequence[str | Path] = ()) -> tuple[Path, Path | None]:
    """The result JSON and the plot (None: 'none'; default OUT with .png) as Paths, each refused
    where it would replace anything but this command's own earlier output (charter.runs.files)."""
    from charter.runs.files import check_out

    default = plot is None
    plot = None if plot == "none" else Path(plot or Path(out).with_suffix(".png"))
    path = check_out(out, RESULT, inputs=inputs)
    if plot is not None:
        if plot.absolute() == path.absolute():
            raise ConfigError(f"--plot {plot} is the --out file too; give the plot another name (or --plot none)")
        check_out(plot, PLOT, inputs=inputs, flag="--plot",
                  instead="pass --plot PATH (default: OUT with .png) or --plot none" if default else None)
    return path, plot


def _score_pm(cfg: LabelerEvalConfig) -> LabelerResult:
    from charter.scorer import load_pm

    pm = load_pm(cfg.pm)
    try:
        return evaluate_pm(pm, cfg.file, limit=cfg.limit, bins=cfg.bins)
    finally:
        pm.close()


def _score_model(cfg: LabelerEvalConfig, backend, progress: bool) -> LabelerResult:
    from charter.backends import open_model

    options = dict(cfg.backend_options)
    if cfg.batch_size:
        options.setdefault("batch_size", cfg.batch_size)
    own = backend is None
    backend = open_model(cfg.model, cfg.backend, budget=labeler_budget(cfg), **options) if own else backend
    try:
        res = score_labeler(backend, cfg.file, fmt=cfg.format, cot=cfg.cot, limit=cfg.limit, few_shot=cfg.few_shot,
                            principles=cfg.principles, principle=cfg.principle, seed=cfg.seed, max_tokens=cfg.max_tokens,
                            temperature=cfg.temperature, bins=cfg.bins, progress=progress) if cfg.file else \
            LabelerResult(str(cfg.reviews), getattr(backend, "model_id", "?"), getattr(backend, "name", "?"), cfg.format,
                          cfg.cot, cfg.few_shot)
        if cfg.reviews:
            from charter.rlcai.human_agreement import human_agreement

            res.human = human_agreement(backend, cfg)
        return res
    finally:
        if own:
            backend.close()


def labeler_budget(cfg: LabelerEvalConfig) -> int:
    """The most tokens the model generates, which `auto` sizes to: CoT reasoning for each question,
    every correct against every incorrect in both orders (a scored question weighs SCORED_QUESTION_TOKENS)."""
    from charter.backends import SCORED_QUESTION_TOKENS

    rows = load_mc_file(cfg.file, cfg.limit) if cfg.file else []  # --reviews alone: a few dozen picked pairs
    questions = sum(2 * len(r.corrects) * len(r.incorrects) for r in rows)
    return questions * ((cfg.max_tokens if cfg.cot else 0) + SCORED_QUESTION_TOKENS)


def score_labeler(backend, file: str | Path, fmt: str = "text", cot: bool = False, limit: int | None = None,
                  few_shot: str = "none", principles: str = "default", principle: str | None = None,
                  seed: int = 0, max_tokens: int = 256, temperature: float = 0.0, batch_rows: int = 16,
                  bins: int = 10, progress: bool = False) -> LabelerResult:
    """Accuracy and calibration of `backend` as a feedback model on `file`: one scheduler program
    per row (charter.pipeline.scheduler), so an engine that batches internally keeps every row in flight;
    `batch_rows`: rows gathered into each call on an engine that batches per call."""
    if fmt not in ("text", "chat"):
        raise ConfigError(f"format must be 'text' or 'chat', not '{fmt}'")
    start = time.time()
    rows = load_mc_file(file, limit)
    fs = load_feedback(principles, few_shot)
    prefix = few_shot_prefix(fs.examples, fmt, cot)
    sampling = Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed) if cot else None
    res = LabelerResult(str(file), getattr(backend, "model_id", "?"), getattr(backend, "name", "?"), fmt, cot, few_shot)
    comps = [comparisons(r, str(file), fs, principle, seed) for r in rows]  # a bad row fails before any request
    answers = ask_rows(backend, rows, comps, prefix, fmt, sampling, batch_rows, progress)
    p_a: list[float] = []
    for row, row_comps, answered in zip(rows, comps, answers):
        res.rows.append(row_result(row, row_comps, iter(answered), cot, p_a))
    summarise(res, p_a, bins)
    res.bias = labeler_bias(rows, comps, res.rows, res.model)
    res.seconds = time.time() - start
    return res


def ask_rows(backend, rows: Sequence[MCRow], comps: Sequence[list], prefix, fmt: str, cot: Sampling | None,
             batch_size: int, progress: bool) -> list[list[tuple[list[float], str | None]]]:
    """(P(option i), reasoning) of every question of every row, in order, through run_programs;
    the few-shot block is shared once (Backend.share_prefix). A failed row stops the evaluation."""
    from charter.pipeline.jobrun import progress_bar
    from charter.rlcai.questions import asking
    from charter.pipeline.scheduler import run_programs

    if prefix:
        backend.share_prefix(prefix)
    got: list = [None] * len(rows)

    def program(i: int):
        return asking(prefix, [(q, n) for c in comps[i] for q, n, _, _ in c.orders], fmt, cot)

    def on_done(i: int, answered, error: str | None) -> None:
        if error is not None:
            raise RunError(f"the row at line {rows[i].line} failed: {error}; fix the cause and run eval-labeler again")
        got[i] = [(a.probs, a.reasoning) for a in answered]
        bar.update(1)

    with progress_bar(len(rows), progress, unit="row") as bar:
        run_programs(backend, range(len(rows)), program, on_done, batch_size=2 * batch_size)  # 2+ questions a row
    return got


def row_result(row: MCRow, row_comps: list, answered, cot: bool, p_a: list[float]) -> dict:
    """One row's comparisons (P(correct) per order, position-averaged), from its answered questions."""
    out = []
    for c in row_comps:
        per_order, reasons = [], []
        for _q, _n, ic, iw in c.orders:
            probs, reasoning = next(answered)
            per_order.append(probs[ic] / (probs[ic] + probs[iw]))
            p_a.append(probs[0])
            reasons.append(reasoning)
        out.append({"correct": c.correct, "incorrect": c.incorrect, "p_correct": sum(per_order) / len(per_order),
                    "p_correct_by_order": per_order, "reasoning": reasons if cot else None})
    p_row = sum(x["p_correct"] for x in out) / len(out)
    return {"line": row.line, "p_correct": p_row, "correct": p_row > 0.5, "comparisons": out}


def summarise(res: LabelerResult, p_a: list[float], bins: int) -> None:
    """Accuracy (position-averaged and first order only), mean P(correct), P(A), Brier and calibration."""
    first_correct = sum(sum(c["p_correct_by_order"][0] for c in r["comparisons"]) / len(r["comparisons"]) > 0.5
                        for r in res.rows)
    res.n_rows = len(res.rows)
    res.n_comparisons = sum(len(r["comparisons"]) for r in res.rows)
    res.accuracy = sum(r["correct"] for r in res.rows) / res.n_rows
    res.accuracy_first_order = first_correct / res.n_rows
    all_p = [c["p_correct"] for r in res.rows for c in r["comparisons"]]
    res.mean_p_correct = sum(all_p) / len(all_p)
    res.position_bias = sum(p_a) / len(p_a)
    res.brier = sum((1.0 - p) ** 2 for p in all_p) / len(all_p)
    res.bins, res.ece = reliability([pt for p in all_p for pt in ((p, 1), (1.0 - p, 0))], bins)


def plot_reliability(result: LabelerResult, path: str | Path) -> Path | None:
    """Reliability diagram as PNG; None when matplotlib is not installed."""
    from charter import plotting

    made = plotting.subplots(figsize=(4.5, 4.5), dpi=120)
    if made is None:
        return None
    fig, ax = made
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    xs = [b["mean_predicted"] for b in result.bins if b["count"]]
    ys = [b["observed"] for b in result.bins if b["count"]]
    sizes = [20 + 200 * b["count"] / max(1, 2 * result.n_comparisons) for b in result.bins if b["count"]]
    ax.plot(xs, ys, "-", color="tab:blue", linewidth=1)
    ax.scatter(xs, ys, s=sizes, color="tab:blue", zorder=3, label="bins (size = count)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    mode = "CoT" if result.cot else "no CoT"
    ax.set_title(f"Labeler calibration ({mode})\naccuracy {result.accuracy:.1%}, ECE {result.ece:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return plotting.save(fig, path)


def write_result(result: LabelerResult, out: str | Path, plot: str | Path | None = None,
                 inputs: Sequence[str | Path] = ()) -> Path:
    """The result JSON at `out` and the reliability plot at `plot` (None: no plot), written whole
    and only over this command's own earlier outputs (check_outputs)."""
    import json

    from charter.runs.files import mark_written, write_out

    out, plot = check_outputs(out, plot or "none", inputs)
    if plot:
        made = plot_reliability(result, plot)
        if made:
            mark_written(made, PLOT)
        result.plot = str(made) if made else None
    return write_out(out, RESULT, json.dumps(result.to_dict(), indent=1, ensure_ascii=False))


# ---- a trained preference model on the same sets -------------------------------------------------


def evaluate_pm(pm, file: str | Path, limit: int | None = None, bins: int = 10) -> LabelerResult:
    """Accuracy and calibration of a preference model: P(better) = sigmoid(r_better - r_worse)."""
    import math

    start = time.time()
    pairs = pm_pairs(file, limit)
    better = pm.score([b for _, b, _ in pairs])
    worse = pm.score([w for _, _, w in pairs])
    res = LabelerResult(str(file), getattr(pm, "path", "?"), "pm", "pm", False, "none", position_bias=0.5)
    ps = [1 / (1 + math.exp(w - b)) for b, w in zip(better, worse)]
    by_line: dict[int, list[float]] = {}
    for (line, _, _), p in zip(pairs, ps):
        by_line.setdefault(line, []).append(p)
    res.rows = [{"line": line, "p_correct": sum(v) / len(v), "correct": sum(v) / len(v) > 0.5} for line, v in by_line.items()]
    res.n_rows, res.n_comparisons = len(res.rows), len(ps)
    res.accuracy = res.accuracy_first_order = sum(r["correct"] for r in res.rows) / res.n_rows
    res.mean_p_correct = sum(ps) / len(ps)
    res.brier = sum((1 - p) ** 2 for p in ps) / len(ps)
    res.bins, res.ece = reliability([pt for p in ps for pt in ((p, 1), (1 - p, 0))], bins)
    res.seconds = time.time() - start
    return res


__all__ = ["LabelerEvalConfig", "LabelerResult", "evaluate_labeler", "score_labeler", "evaluate_pm", "reliability",
           "plot_reliability", "write_result"]
