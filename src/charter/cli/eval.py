"""`charter eval`: compare models and judge revisions on a run's held-out prompts -> RUN/eval.json."""
from __future__ import annotations

import argparse

from charter.cli.common import add_config, add_settings, given
from charter.evaluate.result import EvalResult
from charter.evaluate.suite import EvalConfig


class EvalParser(argparse.ArgumentParser):
    """`charter eval`, whose first word `classifier` hands the rest to `charter eval classifier`'s own
    parser: beside eval's optional RUN positional, an argparse sub-command would be read as the run."""

    classifier: argparse.ArgumentParser | None = None

    def parse_known_args(self, args=None, namespace=None):
        if args and args[0] == "classifier" and self.classifier is not None:
            return self.classifier.parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


def register(sub) -> None:
    from charter.cli import eval_classifier

    p = sub.add_parser("eval", help="compare models and judge revisions on a run's held-out prompts -> RUN/eval.json",
                       epilog="charter eval classifier CLASSIFIER --data FILE: evaluate a guard classifier (see "
                       "`charter eval classifier --help`); a run directory named classifier: pass ./classifier")
    p.__class__ = EvalParser  # subparsers make every parser of the top parser's class
    p.classifier = eval_classifier.build_parser(f"{p.prog} classifier")
    add_config(p, "eval")
    add_settings(p, EvalConfig)
    p.set_defaults(func=cmd_eval)


def cmd_eval(a: argparse.Namespace) -> int:
    from charter.evaluate.suite import evaluate

    print(summary_text(evaluate(EvalConfig.load(a.config, given(a, EvalConfig)))))
    return 0


def summary_text(result: EvalResult) -> str:
    lines = [f"{result.records} prompts from {result.run}"]
    for label, m in result.models.items():
        pref, ev = m["revision_preference"], m.get("evasive", {})
        lines.append(f"{label}: logp(revision)-logp(initial) {pref['mean_delta']:+.3f}/token, revision preferred "
                     f"on {pref['share_preferred']:.0%} of {pref['n']}; evasive {ev.get('rate') or 0:.0%}")
    for q, e in (result.elo or {}).items():
        players = ", ".join(f"{k} {v['elo']:+.0f} [{v['low']:+.0f}, {v['high']:+.0f}]" for k, v in e["players"].items())
        lines.append(f"Elo {q}: {players} ({e['comparisons']} comparisons, P(A) {e['position_bias']:.2f})")
    for run in result.revisions or []:
        for q, c in run["curves"].items():
            pts = " ".join(f"r{r['round']}:{r['p_revision']:.2f}" for r in c["rounds"])
            lines.append(f"{run['label']} {q}: P(revision preferred over initial) {pts}")
    if result.bias:
        from charter.rlcai.bias import text_lines

        lines += text_lines(result.bias, "judge bias")
    return "\n".join(lines + refusal_summary(result.over_refusal) + pm_summary(result.pm))


def refusal_summary(o: dict | None) -> list[str]:
    if not o:
        return []
    lines = []
    for p in o["points"]:
        m = o["models"][p["model"]]
        judged = f", judge {p['judge_refusal_rate']:.0%}" if p.get("judge_refusal_rate") is not None else ""
        harm = f"; harmless Elo {p['harmless_elo']:+.0f}" if p.get("harmless_elo") is not None else ""
        rate = f"{p['refusal_rate']:.0%}{judged}"
        lines.append(f"{p['model']}: refused {m['refused']} of {m['n']} safe prompts ({rate}){harm}")
    return lines


def pm_summary(pm: dict | None) -> list[str]:
    if not pm:
        return []
    lines = []
    for run in pm["runs"]:
        pts = " ".join(f"r{r['revision']}:{r['mean']:+.2f}" for r in run["by_revision"])
        lines.append(f"{run['label']}: PM score by revision (0 = initial) {pts}")
    c = pm.get("critique_vs_direct")
    if c:
        pts = " ".join(f"r{r['revision']}:{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]" for r in c["by_revision"])
        lines.append(f"critique - direct PM score: {pts}")
    return lines
