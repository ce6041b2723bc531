"""One self-contained HTML report for one or more runs: no server, no network, inline CSS/JS/PNGs.

Every input file is untrusted (records, config.yaml, eval.json): everything dynamic goes through
`esc` (html.escape) or `table`, nothing reaches the script, and a Content-Security-Policy allows
only the report's own script (by hash), so even a missed escape could not run code. An eval.json
of an unexpected shape is an InputError naming it. Filtering toggles `hidden` from data attributes.
Here: loading the runs, the run sections, the page; eval.json's section is charter.report.evaluation.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from charter.runs import files
from charter.errors import InputError
from charter.evaluate.result import EvalResult, read_eval
from charter.redact import redact
from charter.report import assets
from charter.report.digest import Digest, digest
from charter.report.classifier import classifiers_section, find_classifier_evals
from charter.report.evaluation import render_evaluation
from charter.report.markup import card, esc, first_user, fmt, img, table, turn
from charter.runs.runread import RECORDS, iter_run, load_run_config
from charter.types import Record

GENERATOR = '<meta name="generator" content="charter report">'


@dataclass
class RunData:
    name: str
    path: Path
    records: list[Record]  # the chains shown: the first CHAINS records (all of a small run)
    config: dict
    evaluation: EvalResult | None
    digest: Digest  # the numbers over every record (one streamed pass)
    classifiers: list = field(default_factory=list)  # (name, ClassifierEvalResult) found in or under the folder
    is_run: bool = True  # False: a classifier directory with only eval_classifier.json to show


def load_report_run(path: str | Path) -> RunData:
    from charter.pipeline.cost import engine_gpus

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    classifiers = find_classifier_evals(folder)
    if classifiers and not (folder / RECORDS).exists():  # a classifier directory, not a run
        return RunData(folder.name or str(folder), folder, [], {}, None, digest(iter(()), {}, 1), classifiers, False)
    config = load_run_config(folder)
    d = digest(iter_run(p), config, engine_gpus(config))
    eval_path = folder / "eval.json"
    evaluation = read_eval(eval_path) if eval_path.exists() else None  # its shape checked, or an InputError
    return RunData(folder.name or str(folder), folder, d.sample, config, evaluation, d, classifiers)


# ---- sections ----------------------------------------------------------------------------------


def summary_section(run: RunData) -> str:
    d, cfg = run.digest, run.config
    first = d.first
    cards = "".join([card(d.records, "records"), card(d.kinds.get("red_team", 0), "red-team"),
                     card(d.kinds.get("helpful", 0), "helpfulness"), card(d.failures, "failures"),
                     card(f"{d.tokens_out:,}", "tokens generated"), card(f"{d.tokens_in:,}", "prompt tokens")]
                    + ([card(sum(d.stopped.values()), f"stopped clean ({d.checks} checks)")] if d.checks else []))
    settings = [("model", first.model if first else cfg.get("model", "")),
                ("backend", first.backend if first else cfg.get("backend", "")),
                ("format", cfg.get("format", first.format if first else "")),
                ("rounds", cfg.get("rounds", d.max_rounds)),
                ("critique", cfg.get("critique", "")),
                ("sampling", json.dumps(first.sampling) if first else ""),
                ("constitution", cfg.get("constitution", "")), ("prompts", cfg.get("prompts", ""))]
    return (f'<h3>{esc(run.name)} <span class="muted">{esc(str(run.path))}</span></h3>'
            f'<div class="cards">{cards}</div>' + table(["setting", "value"], [(k, str(v)) for k, v in settings]))


def principle_counts(runs: Sequence[RunData]) -> Counter:
    return sum((run.digest.principles for run in runs), Counter())


def principles_section(runs: Sequence[RunData]) -> str:
    from charter.report.plots import principle_plot

    counts = principle_counts(runs)
    if not counts:
        return '<p class="muted">No critique/revision rounds yet.</p>'
    return ('<div class="plots">' + img(principle_plot(dict(counts)), "principle usage") + "</div>"
            + table(["principle", "rounds"], counts.most_common()))


def filters_section(runs: Sequence[RunData]) -> str:
    """Rounds `charter export --filter all` would drop, per principle (the same function: clean.filter_counts)."""
    from charter.export.clean import FILTERS

    rows = []
    for run in runs:
        dropped, total = run.digest.dropped, run.digest.principles_ok
        rows += [(run.name, p, n, *[dropped.get(p, Counter()).get(f, 0) for f in FILTERS]) for p, n in sorted(total.items())]
    note = '<p class="muted">Rounds <code>charter export --filter</code> drops (default clean patterns).</p>'
    return note + table(["run", "principle", "rounds", *FILTERS], rows) if rows else '<p class="muted">No rounds.</p>'


def length_series(run: RunData) -> list[float]:
    """Mean words of the answer after each round (0 = initial), red-team records only."""
    return run.digest.length_series()


def lengths_section(runs: Sequence[RunData]) -> str:
    from charter.report.plots import lengths_plot

    series = {run.name: length_series(run) for run in runs}
    if not any(series.values()):
        return '<p class="muted">No red-team answers.</p>'
    depth = max(len(s) for s in series.values())
    head = ["run"] + ["initial"] + [f"revision {k}" for k in range(1, depth)]
    rows = [[name] + [f"{v:.1f}" for v in s] for name, s in series.items()]
    return '<div class="plots">' + img(lengths_plot(series), "answer lengths by round") + "</div>" + table(head, rows)


def cost_section(runs: Sequence[RunData]) -> str:
    """What each run cost (charter.pipeline.cost): tokens, engine seconds, throughput, projected time and device-hours."""
    from charter.pipeline.cost import PROJECTIONS, format_duration

    costs = [(run.name, run.digest.cost) for run in runs]
    rows = [[name, c.records, c.prompts, c.tokens_in, c.tokens_out, fmt(c.engine_seconds, ".1f") or "–",
             fmt(c.tokens_per_second, ".1f") or "–"] for name, c in costs]
    proj = [[name, f"{n:,}", format_duration(t) if (t := c.projected_seconds(n)) is not None else "–",
             fmt(c.projected_gpu_hours(n), ".2f") or "–", c.gpus] for name, c in costs for n in PROJECTIONS]
    return (table(["run", "records", "prompts", "tokens in", "tokens out", "engine seconds", "tokens/s out"], rows)
            + "<p class=\"muted\">Engine seconds: time with at least one record in flight (no model loading, no gaps "
            "between resumed sessions). A run of N prompts of the same shape (model, engine, hardware, rounds, "
            "lengths); 182,831 is the paper's red-team set.</p>"
            + table(["run", "prompts", "projected time", "device-hours", "devices"], proj))


def failures_section(runs: Sequence[RunData]) -> str:
    rows = [(run.name, rid, kind, error) for run in runs for rid, kind, error in run.digest.failed]
    more = sum(run.digest.failures for run in runs) - len(rows)
    note = (f'<p class="muted">and {more:,} more failed records: <code>charter export RUN --format trace</code> '
            "lists them all (their <code>error</code> field)</p>") if more > 0 else ""
    return table(["run", "record", "kind", "error"], rows) + note if rows else '<p class="muted">No failures.</p>'


def evaluation_section(runs: Sequence[RunData]) -> str:
    parts = [_checked_evaluation(run) for run in runs if run.evaluation]
    return "".join(parts) or '<p class="muted">No eval.json next to the run(s); run <code>charter eval</code> first.</p>'


def _checked_evaluation(run: RunData) -> str:
    """A hand-edited or foreign eval.json of another shape is named, not a traceback."""
    try:
        return render_evaluation(run.name, run.evaluation)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"not an evaluation made by `charter eval` ({type(exc).__name__}: {exc}); "
                         "rerun `charter eval` on the run", str(run.path / "eval.json")) from exc


def chain(run: RunData, r: Record, show_run: bool = False) -> str:
    pids = "|" + "|".join(dict.fromkeys(x.principle for x in r.rounds)) + "|"
    turns = [turn("prompt", m["role"], m["content"]) for m in r.prompt]
    turns.append(turn("initial", "initial answer", r.initial))
    for k, x in enumerate(r.rounds, 1):
        tag = f'round {k} <span class="badge">{esc(x.principle)}</span>'
        if x.critique is not None:
            turns.append(turn("critique", f"critique · {tag}", x.critique, raw_label=True))
        turns.append(turn("revision", f"revision · {tag}", x.revision, raw_label=True))
    badges = f'<span class="badge kind">{esc(r.kind)}</span>'
    badges += f'<span class="badge kind">{esc(run.name)}</span>' if show_run else ""
    badges += "".join(f'<span class="badge">{esc(p)}</span>' for p in dict.fromkeys(x.principle for x in r.rounds))
    if r.error:
        badges += '<span class="badge err">failed</span>'
        turns.append(f'<div class="turn failure">{esc(redact(r.error))}</div>')
    return (f'<details class="chain" data-principles="{esc(pids)}" data-run="{esc(run.name)}" data-kind="{esc(r.kind)}">'
            f"<summary>{esc(first_user(r.prompt)[:140])} {badges}</summary>{''.join(turns)}</details>")


def _select(id_: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return f'<label>{esc(label)} <select id="{id_}"><option value="">all</option>{opts}</select></label>'


def chains_section(runs: Sequence[RunData]) -> str:
    controls = ['<input id="search" type="search" placeholder="search prompts, answers, critiques…">',
                _select("principle", "principle", sorted(principle_counts(runs))),
                _select("kind", "kind", sorted({k for run in runs for k in run.digest.kinds}))]
    if len(runs) > 1:
        controls.append(_select("run", "run", [run.name for run in runs]))
    many = len(runs) > 1
    body = "".join(chain(run, r, many) for run in runs for r in sorted(run.records, key=lambda r: r.kind != "red_team"))
    return f'<div class="controls">{"".join(controls)}<span id="shown" class="muted"></span></div>{sampled(runs)}{body}'


def sampled(runs: Sequence[RunData]) -> str:
    """A note when the page shows only some chains (a big run), and how to see every one."""
    cut = [(run, run.digest.records) for run in runs if run.digest.records > len(run.records)]
    if not cut:
        return ""
    counts = "; ".join(f"{esc(run.name)}: the first {len(run.records):,} of {n:,}" for run, n in cut)
    return (f'<p class="muted">Chains shown ({counts}); search and filters apply to these. Every chain: '
            f"<code>charter export RUN --format trace --out trace.jsonl</code>.</p>")


SECTIONS = [("summary", "Run summary"), ("principles", "Principle usage"), ("filters", "Round filters"),
            ("lengths", "Answer lengths"),
            ("cost", "Run cost"), ("failures", "Failures"), ("evaluation", "Evaluation"),
            ("training", "Training"), ("labels", "Labels"),
            ("bias", "Judge biases"), ("audit", "Constitution audit"), ("sides", "Critiqued vs direct"),
            ("chains", "Chains"),
            ("classifiers", "Classifiers")]


def render(runs: Sequence[RunData], feedback: Sequence = (), training: Sequence = ()) -> str:
    """The page; `feedback`: label outputs, eval-labeler and audit results (charter.report.bias);
    `training`: charter.report.training logs."""
    from charter.report.audit import audit_section
    from charter.report.bias import bias_section

    names = ", ".join([*(r.name for r in runs), *(f.name for f in feedback)])
    found = [(f"{r.name}/{n}" if r.is_run else n, res) for r in runs for n, res in r.classifiers]
    runs = [r for r in runs if r.is_run]  # a classifier directory adds only the Classifiers section
    bodies = {"summary": "".join(summary_section(r) for r in runs), "principles": principles_section(runs),
              "filters": filters_section(runs),
              "lengths": lengths_section(runs), "cost": cost_section(runs), "failures": failures_section(runs),
              "evaluation": evaluation_section(runs), "chains": chains_section(runs)} if runs else {}
    if found:
        bodies["classifiers"] = classifiers_section(found)
    for key, body in (("bias", bias_section(runs, feedback)), ("audit", audit_section(feedback)),
                      *loop_sections(runs, feedback, training)):
        if body:
            bodies[key] = body
    shown = [(k, t) for k, t in SECTIONS if k in bodies]
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in shown)
    main = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{bodies[k]}</section>' for k, t in shown)
    digest = base64.b64encode(hashlib.sha256(assets.JS.encode()).digest()).decode()
    script = f"<script>{assets.JS}</script>" if "chains" in bodies else ""  # the chains' filters
    what = "Constitutional AI critique → revision runs" if runs else "guard classifiers"
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR}'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Charter report: {esc(names)}</title><style>{assets.CSS}</style></head><body>"
            f"<header><h1>Charter report</h1><p>{esc(names)} · {what}</p></header>"
            f"<nav>{nav}</nav><main>{main}</main>{script}</body></html>")


def loop_sections(runs: Sequence[RunData], feedback: Sequence, training: Sequence) -> list[tuple[str, str | None]]:
    """The rest of the loop beside generation: training curves, label statistics, critiqued vs direct chains."""
    from charter.report.bias import LABEL, LABELER
    from charter.report.chains import side_by_side_section
    from charter.report.labels import labels_section, read_label_stats
    from charter.report.training import training_section

    stats = [read_label_stats(f.path) for f in feedback if f.kind == LABEL]
    labelers = [(f.name, f.data) for f in feedback if f.kind == LABELER]
    return [("training", training_section(training)), ("labels", labels_section(stats, labelers)),
            ("sides", side_by_side_section(runs))]


def distinct_names(paths: Sequence[Path]) -> list[str]:
    """Each path's shortest trailing part that no other path ends with: cmpA/run, cmpB/run."""
    parts = [p.absolute().parts for p in paths]
    names = []
    for mine in parts:
        k = 1
        while k < len(mine) and any(o != mine and o[-k:] == mine[-k:] for o in parts):
            k += 1
        names.append("/".join(mine[-k:]))
    return names


KIND = "Charter report"  # what charter.runs.files records a report as


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, train: Sequence[str | Path] = (),
                 labels: Sequence[str | Path] = ()) -> Path:
    """The report of `paths` at `out` (default RUN/report.html), never over an input or another
    program's file (charter.runs.files.check_out), written whole. A training output among `paths`
    (or in `train`) adds its curves; a label output (or one in `labels`) its statistics."""
    from charter.report.bias import is_feedback, load_feedback_file
    from charter.report.training import is_training, read_training

    paths = [*paths, *labels]
    trained = [p for p in paths if is_training(p)] + list(train)
    feedback = [load_feedback_file(p) for p in paths if is_feedback(p)]
    runs = [load_report_run(p) for p in paths  # a classifier's training folder also has its evaluations
            if not is_feedback(p) and (p not in trained or find_classifier_evals(Path(p)))]
    training = [read_training(p, n, must=True) for p, n in zip(trained, distinct_names([Path(p) for p in trained]))]
    for run, name in zip(runs, distinct_names([r.path for r in runs])):
        run.name = name
    target = Path(out) if out else (runs[0].path if runs else Path(paths[0]).parent) / "report.html"
    inputs = [run.path / name for run in runs for name in ("eval.json", "config.yaml")] + [Path(p) for p in paths]
    files.check_out(target, KIND, inputs=inputs)
    return files.write_out(target, KIND, render(runs, feedback, training))
