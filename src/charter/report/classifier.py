"""The report's Classifiers section: each eval_classifier.json (`charter eval classifier`) found in a
report's folder or one level below it (a `--kind both` directory holds input/ and output/): the ROC
curves, the per-category table, calibration, over-refusal and where the streaming classifier fires.
The files are untrusted input: read by charter.classifier.evaluate.read_classifier_eval (its shape
checked), and every value escaped (charter.report.markup)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from charter.classifier.evaluate import FILE, ClassifierEvalResult, read_classifier_eval
from charter.report.markup import esc, fmt, img, pct, table
from charter.report.plots import COLORS, _styled, _subplots, to_png

CURVES = 6  # category ROC curves drawn beside the overall one (the table lists every category)


def find_classifier_evals(folder: Path) -> list[tuple[str, ClassifierEvalResult]]:
    """(name, result) of FOLDER/eval_classifier.json and FOLDER/*/eval_classifier.json, in name order."""
    found = ([folder / FILE] if (folder / FILE).is_file() else []) + sorted(folder.glob(f"*/{FILE}"))
    return [(str(p.parent.relative_to(folder)) if p.parent != folder else folder.name, read_classifier_eval(p))
            for p in found]


def _rate(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return "–"
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}]"


def _auc(m: dict) -> str:
    if m["auc"] is None:
        return "–"
    return f"{m['auc']:.3f}" + (f" [{m['auc_low']:.3f}, {m['auc_high']:.3f}]" if m["auc_low"] is not None else "")


def _row(name: str, m: dict) -> list[object]:
    fp, at = m["at_fpr"] or {}, m["at_threshold"]
    return [name, m["positives"], m["negatives"], _auc(m), pct(fp.get("tpr")), fmt(fp.get("threshold"), ".3f") or "–",
            _rate(at["tpr"]), _rate(at["fpr"]), m["calibration"]["ece"], "; ".join(m["notes"])]


def render_classifier(name: str, res: ClassifierEvalResult) -> str:
    fpr = res.settings["fpr"]
    head = ["examples", "harmful", "harmless", "ROC AUC [95%]", f"TPR at FPR ≤ {fpr:g}", "its threshold",
            f"TPR at {res.threshold:.3g}", f"FPR at {res.threshold:.3g}", "ECE", "notes"]
    rows = [_row("all", res.overall)] + [_row(c, m) for c, m in res.categories.items()]
    out = [f'<h3>{esc(name)}: {esc(res.kind)} classifier on {esc(res.n)} examples '
           f'<span class="badge">threshold {esc(fmt(res.threshold, ".3g"))}</span></h3>'
           f'<p class="muted">{esc(res.classifier)} · {esc(res.settings["data"])}'
           + (f" · {esc(res.skipped)} rows for the other kind skipped" if res.skipped else "") + "</p>",
           '<div class="plots">' + img(roc_plot(res), "ROC curves")
           + img(calibration_plot(res.overall["calibration"]), "calibration (reliability bins)") + "</div>",
           table(head, rows)]
    if res.over_refusal:
        out.append(_over_refusal(res.over_refusal))
    if res.streaming:
        out.append(_streaming(res.streaming))
    return "".join(out)


def _over_refusal(o: dict) -> str:
    rows = [[c, r["n"], r["k"], _rate(r)] for c, r in o["by_category"].items()]
    shown = table(["id", "category", "prompt", "P(harmful)"],
                  [[x["id"], x["category"], x["prompt"], x["score"]] for x in o["examples"]]) if o["examples"] else ""
    return (f"<h4>Over-refusal: would block {esc(_rate(o['blocked']))} of {esc(o['blocked']['n'])} safe prompts "
            "that look unsafe</h4>" + table(["category", "prompts", "blocked", "rate [95%]"], rows) + shown)


def _streaming(s: dict) -> str:
    h = s["harmful"]
    rows = [[name, f["n"], _rate(f["fired"]), *[_opt(f[k], ".0f") for k in ("median", "p10", "p90")],
             _opt(f["median_share"], ".0%")] for name, f in (("harmful", h), ("harmless", s["harmless"])) if f]
    plot = '<div class="plots">' + img(firing_plot(h["tokens"]), "answer tokens read when it fired") + "</div>"
    return ("<h4>Streaming: answer tokens read when the output classifier first fires</h4>"
            + (plot if h["tokens"] else "")
            + table(["answers", "n", "fired [95%]", "median tokens", "p10", "p90", "median share of answer"], rows))


def _opt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def classifiers_section(found: Sequence[tuple[str, ClassifierEvalResult]]) -> str:
    return "".join(render_classifier(name, res) for name, res in found)


@_styled
def roc_plot(res: ClassifierEvalResult) -> str:
    """The overall ROC curve, the first categories' curves, the saved threshold's point and the FPR target."""
    fig, ax = _subplots(figsize=(4.6, 3.6))
    curves = [("all", res.overall)] + [(c, m) for c, m in res.categories.items() if m["roc"]][:CURVES]
    for i, (name, m) in enumerate(curves):
        if m["roc"]:
            ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], color=COLORS[i % len(COLORS)], lw=2 if i == 0 else 1,
                    label=f"{name} (AUC {m['auc']:.3f})")
    at = res.overall["at_threshold"]
    if at["fpr"]["rate"] is not None and at["tpr"]["rate"] is not None:
        ax.plot([at["fpr"]["rate"]], [at["tpr"]["rate"]], "o", color="black", label=f"threshold {res.threshold:.3g}")
    ax.axvline(res.settings["fpr"], color="grey", lw=0.8, ls="--")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (harmless flagged)",
           ylabel="true-positive rate (harmful flagged)", title=f"{res.kind} classifier ROC")
    ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)


@_styled
def calibration_plot(cal: dict) -> str:
    fig, ax = _subplots(figsize=(3.6, 3.6))
    bins = cal["bins"]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.plot([b["mean_score"] for b in bins], [b["harmful_share"] for b in bins], "-o", color=COLORS[0])
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean P(harmful) in bin", ylabel="harmful share",
           title=f"calibration (ECE {cal['ece']:.3f})")
    return to_png(fig)


@_styled
def firing_plot(tokens: Sequence[int]) -> str:
    fig, ax = _subplots(figsize=(4.6, 3))
    ax.hist(tokens, bins=min(30, max(5, len(set(tokens)))), color=COLORS[3])
    ax.set(xlabel="answer tokens read when it fired", ylabel="harmful answers")
    return to_png(fig)
