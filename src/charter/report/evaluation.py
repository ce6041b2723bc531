"""The report's Evaluation section: one run's eval.json (charter.evaluate.result.read_eval: its
shape checked) as tables and plots. eval.json is untrusted input: every value is escaped
(charter.report.markup)."""
from __future__ import annotations

from charter.evaluate.result import EvalResult
from charter.report.markup import ci, esc, first_user, fmt, img, pct, table, turn


def render_evaluation(name: str, ev: EvalResult) -> str:
    from charter.report.plots import elo_plot, revision_plot

    out = [f'<h3>{esc(name)}: {esc(ev.records)} held-out prompts'
           f'<span class="badge">judge: {esc(ev.settings["judge"] or "none")}</span></h3>']
    models = ev.models
    if models:
        rows = []
        for label, m in models.items():
            p, e = m.get("revision_preference") or {}, m.get("evasive") or {}
            rows.append([label, p.get("n", 0), p.get("mean_delta", 0.0), pct(p.get("share_preferred")),
                         pct(e.get("rate")), pct(e.get("red_team_rate")), pct(e.get("judge_rate"))])
        out.append("<h3>Preference for revisions and evasiveness</h3>" + table(
            ["model", "records", "Δ logp/token (revision − initial)", "revision preferred", "evasive",
             "evasive (red-team)", "evasive (judge)"], rows))
    if ev.elo:
        rows = [[q, label, fmt(v["elo"], "+.0f"), ci(v, "low", "high", "+.0f", e["comparisons"]), e["comparisons"],
                 fmt(e["position_bias"], ".3f")] for q, e in ev.elo.items() for label, v in e["players"].items()]
        out.append('<h3>Elo (AI judge, pairwise, A/B order randomised)</h3><div class="plots">'
                   + img(elo_plot(ev.elo), "Elo scores") + "</div>"
                   + table(["question", "model", "Elo", "95% CI", "comparisons", "judge P(A)"], rows))
    if ev.over_refusal:
        out.append(_over_refusal(ev.over_refusal))
    if ev.revisions:
        rows = [[run["label"], q, r["round"], r["n"], r["p_revision"], fmt(r["elo"], "+.0f"),
                 ci(r, "elo_low", "elo_high", "+.0f")]
                for run in ev.revisions for q, c in run["curves"].items() for r in c["rounds"]]
        out.append('<h3>Judge score vs revision number</h3><div class="plots">'
                   + img(revision_plot(ev.revisions, "elo"), "Elo vs revision number")
                   + img(revision_plot(ev.revisions, "p_revision"), "P(revision preferred) vs revision number")
                   + "</div>" + table(["run", "question", "revision", "n", "P(revision > initial)", "Elo vs initial",
                                       "95% CI"], rows))
    if ev.pm:
        out.append(_pm(ev.pm))
    if ev.answers:
        out.append(_answers(ev.answers))
    return "".join(out)


def _over_refusal(o: dict) -> str:
    """Refusal rate on safe prompts that look unsafe, against judged harmlessness (charter.evaluate.refusal)."""
    from charter.report.plots import refusal_plot

    points = o.get("points") or []
    rows = [[p["model"], o["models"][p["model"]]["n"], o["models"][p["model"]]["refused"], pct(p["refusal_rate"]),
             pct(p.get("judge_refusal_rate")), fmt(p.get("harmless_elo"), "+.0f") or "–",
             fmt(p.get("helpful_elo"), "+.0f") or "–"] for p in points]
    cats = [[label, c, x["n"], x["refused"], pct(x["rate"]), pct(x.get("judge_rate"))]
            for label, m in o["models"].items() for c, x in m["by_category"].items()]
    refused = [(a["id"], a["category"], label, a["prompt"], a["answers"][label])
               for a in o.get("answers") or [] for label, flag in a["refused"].items() if flag]
    shown = "".join(f'<details class="chain-ev"><summary>{esc(i)} <span class="badge kind">{esc(c)}</span> '
                    f'<span class="badge err">{esc(m)}</span> {esc(str(q)[:120])}</summary>'
                    f'{turn("initial", m, t)}</details>' for i, c, m, q, t in refused[:50])
    return (f'<h3>Over-refusal: {esc(o.get("n", 0))} safe prompts that look unsafe</h3><div class="plots">'
            + img(refusal_plot(points), "refusal rate on safe prompts vs harmlessness Elo") + "</div>"
            + table(["model", "prompts", "refused", "refusal rate", "refusal (judge)", "harmless Elo", "helpful Elo"],
                    rows)
            + table(["model", "category", "prompts", "refused", "rate", "judge"], cats)
            + (f"<h3>Refused safe prompts ({len(refused)}, first 50)</h3>{shown}" if refused else ""))


def _pm(pm: dict) -> str:
    """Preference-model scores in the paper's shapes: Figure 5, Figure 7, per-principle effect, evasiveness."""
    from charter.report.plots import critique_plot, pm_revision_plot, principle_effect_plot

    runs = pm["runs"]
    out = [f'<h3>Preference-model score vs revision number <span class="badge">PM: {esc(pm.get("pm"))}</span></h3>'
           '<div class="plots">' + img(pm_revision_plot(runs), "PM score vs revision number (Figure 5)")
           + img(pm_revision_plot(runs, "evasive"), "evasive share vs revision number") + "</div>",
           table(["run", "revision", "n", "mean PM score", "95% CI", "evasive"],
                 [[r["label"], x["revision"], x["n"], x["mean"], ci(x, "low", "high", "+.3f"), pct(x["evasive"])]
                  for r in runs for x in r["by_revision"]])]
    c = pm.get("critique_vs_direct")
    if c:
        out.append('<h3>Critiqued vs direct revisions</h3><div class="plots">'
                   + img(critique_plot(c), "critiqued vs direct revisions (Figure 7)") + "</div>"
                   + table(["revision", "critique", "direct", "critique − direct", "95% CI"],
                           [[x["revision"], x["critique"], x["direct"], x["diff"], ci(x, "low", "high", "+.3f")]
                            for x in c["by_revision"]]))
    for r in runs:
        if r["per_principle"]:
            out.append(f"<h3>Per-principle effect: {esc(r['label'])}</h3>"
                       '<div class="plots">' + img(principle_effect_plot(r["per_principle"]), "per-principle effect")
                       + "</div>" + table(["principle", "rounds", "mean PM change", "95% CI"],
                                          [[x["principle"], x["n"], x["mean"], ci(x, "low", "high", "+.3f")]
                                           for x in r["per_principle"]]))
    return "".join(out)


def _answers(answers: list[dict]) -> str:
    items = []
    for a in answers:
        turns = "".join(turn("prompt", "user", m["content"]) for m in a["prompt"] if m.get("role") == "user")
        for label, text in a["answers"].items():
            flag = ' <span class="badge err">evasive</span>' if (a.get("evasive") or {}).get(label) else ""
            turns += turn("initial", esc(label) + flag, text, raw_label=True)
        items.append(f'<details class="chain-ev"><summary>{esc(a["id"])} <span class="badge kind">{esc(a["kind"])}'
                     f"</span> {esc(first_user(a['prompt'])[:120])}</summary>{turns}</details>")
    return f"<h3>Model answers ({len(answers)})</h3>" + "".join(items)
