"""`charter eval`: registered from charter.cli; imports nothing heavy until the command runs."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("eval", help="compare models and judge revisions on a run's held-out prompts -> RUN/eval.json")
    p.add_argument("run", help="run directory of held-out prompts (made by `charter generate`)")
    p.add_argument("runs", nargs="*", help="more runs for the revision curves (e.g. a --no-critique run of the same prompts)")
    p.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                   help="models to compare: 'embedded', a path, or BACKEND:MODEL (e.g. fake:base)")
    p.add_argument("--judge", help="judge model (same forms); enables Elo and revision curves")
    p.add_argument("--backend", default="transformers", help="backend for models given without BACKEND: (default transformers)")
    p.add_argument("--pm", help="preference model directory (`charter train pm`): PM score of every revision "
                   "(Figure 5), critique vs direct when a --no-critique run is given (Figure 7)")
    p.add_argument("--judge-evasive", action="store_true", help="also ask the judge whether each answer is evasive")
    p.add_argument("--limit", type=int, help="at most N prompts of each kind")
    p.add_argument("--max-tokens", type=int, default=128, help="answer length for model answers (default 128)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of model answers (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, A/B order and bootstrap")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for Elo intervals (default 200)")
    p.add_argument("--out", help="output JSON (default RUN/eval.json)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(a: argparse.Namespace) -> int:
    from charter.errors import ConfigError
    from charter.evaluate.suite import evaluate, open_backend
    from charter.store import load_run
    from charter.types import Sampling

    if not a.models and not a.judge and not a.pm:
        raise ConfigError("nothing to evaluate: pass --models M1 [M2 ...], --judge MODEL and/or --pm DIR")
    sampling = Sampling(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, seed=a.seed)
    result = evaluate(a.run, load_run(a.run), a.models, a.judge, [(r, load_run(r)) for r in a.runs], a.limit,
                      sampling, a.seed, a.bootstrap, a.judge_evasive,
                      factory=lambda spec: open_backend(spec, a.backend), out=a.out, pm=a.pm)
    print(summary_text(result))
    return 0


def summary_text(result: dict) -> str:
    lines = [f"{result['records']} prompts from {result['run']}"]
    for label, m in result.get("models", {}).items():
        pref, ev = m["revision_preference"], m.get("evasive", {})
        lines.append(f"{label}: logp(revision)-logp(initial) {pref['mean_delta']:+.3f}/token, revision preferred "
                     f"on {pref['share_preferred']:.0%} of {pref['n']}; evasive {ev.get('rate') or 0:.0%}")
    for q, e in result.get("elo", {}).items():
        players = ", ".join(f"{k} {v['elo']:+.0f} [{v['low']:+.0f}, {v['high']:+.0f}]" for k, v in e["players"].items())
        lines.append(f"Elo {q}: {players} ({e['comparisons']} comparisons, P(A) {e['position_bias']:.2f})")
    for run in result.get("revisions", []):
        for q, c in run["curves"].items():
            pts = " ".join(f"r{r['round']}:{r['p_revision']:.2f}" for r in c["rounds"])
            lines.append(f"{run['label']} {q}: P(revision preferred over initial) {pts}")
    lines += pm_summary(result.get("pm"))
    return "\n".join(lines)


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
