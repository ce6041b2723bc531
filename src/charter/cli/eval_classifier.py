"""`charter eval classifier DIR --data FILE`: a guard classifier's ROC, TPR at a chosen FPR, calibration,
over-refusal and streaming -> DIR/eval_classifier.json, and a table here."""
from __future__ import annotations

import argparse

from charter.cli.common import add_config, add_settings, given
from charter.classifier.evaluate import ClassifierEvalConfig, ClassifierEvalResult

HELP = "a trained guard classifier on a labelled file: ROC AUC, TPR at a chosen FPR, calibration, over-refusal"


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=HELP + " -> CLASSIFIER/eval_classifier.json")
    add_config(p, "eval classifier")
    add_settings(p, ClassifierEvalConfig)
    p.set_defaults(func=cmd_eval_classifier)
    return p


def cmd_eval_classifier(a: argparse.Namespace) -> int:
    from charter.classifier.evaluate import evaluate_classifier

    cfg = ClassifierEvalConfig.load(a.config, given(a, ClassifierEvalConfig))
    for res in evaluate_classifier(cfg):
        print(summary_text(res))
    return 0


def _rate(r: dict | None) -> str:
    if not r or r["rate"] is None:
        return "–"
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}] ({r['k']}/{r['n']})"


def _num(v: float | None, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _row(name: str, m: dict) -> list[str]:
    at, fp = m["at_threshold"], m["at_fpr"] or {}
    auc = _num(m["auc"]) + (f" [{_num(m['auc_low'])}, {_num(m['auc_high'])}]" if m["auc_low"] is not None else "")
    tpr = _num(fp.get("tpr"), ".1%") + (f" [{fp['low']:.1%}, {fp['high']:.1%}]" if fp.get("low") is not None else "")
    return [name, str(m["positives"]), str(m["negatives"]), auc, tpr,
            _num(fp.get("threshold")), _rate(at["tpr"]), _rate(at["fpr"]), _num(m["calibration"]["ece"])]


def summary_text(res: ClassifierEvalResult) -> str:
    """The terminal table: overall then each category, and the notes on what small samples allow."""
    fpr = res.settings["fpr"]
    head = ["", "harmful", "harmless", "AUC [95%]", f"TPR@FPR<={fpr:g}", "its threshold",
            f"TPR @ {res.threshold:.3g}", f"FPR @ {res.threshold:.3g}", "ECE"]
    rows = [_row("overall", res.overall)] + [_row(c, m) for c, m in res.categories.items()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"{res.kind} classifier {res.classifier} (threshold {res.threshold:.3g}) on {res.n} rows of "
             f"{res.settings['data']}" + (f" ({res.skipped} rows for the other kind skipped)" if res.skipped else "")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines += [f"note ({name}): {'; '.join(m['notes'])}" for name, m in [("overall", res.overall),
                                                                        *res.categories.items()] if m["notes"]]
    if res.over_refusal:
        lines.append(f"over-refusal: would block {_rate(res.over_refusal['blocked'])} of safe prompts that look unsafe")
    if res.streaming:
        h, ok = res.streaming["harmful"], res.streaming["harmless"]
        lines.append(f"streaming: fires on {_rate(h['fired'])} harmful answers, after median {_num(h['median'], '.0f')} "
                     f"tokens (p10 {_num(h['p10'], '.0f')}, p90 {_num(h['p90'], '.0f')}; median "
                     f"{_num(h['median_share'], '.0%')} of the answer)"
                     + (f"; on {_rate(ok['fired'])} harmless answers" if ok else ""))
    return "\n".join(lines)
