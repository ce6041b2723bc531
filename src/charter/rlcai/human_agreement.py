"""`charter eval-labeler --reviews RUN_or_FILE`: does AI feedback agree with the people who picked
the better answer of `label` pairs on the review page?

Each pick a reviewer made is one judgment. The feedback model under evaluation is asked about
each picked pair with label's own question (charter.rlcai.label_steps.label_comparisons: both
option orders, a principle drawn per pair), and it agrees with a judgment when its probability
for the picked answer is above 0.5 (a tie counts as disagreement, as eval-labeler's accuracy
does). The labels as `label` recorded them (score_first) are scored the same way. Intervals are
Wilson score intervals (95 %), which stay inside [0, 1] and behave at the few dozen picks a
person makes. Picks on answers that have changed since are stale and left out.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from charter.errors import InputError
from charter.runs.reviews import Marks, digest, read_marks


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reviewed_pairs(marks: Marks) -> tuple[list[dict], int]:
    """The pairs people picked ({"id", "prompt", "answers", "label_p", "choices"}: the picks as
    answer indices), and how many picks were stale (the pair is gone or its answers changed)."""
    from charter.rlcai.label_store import read_transcripts

    pairs: dict[tuple, dict] = {}
    stale = 0
    loaded: dict[Path, dict[str, dict]] = {}
    for m in marks.pairs:
        if m.labels not in loaded:
            if not m.labels.is_file():
                raise InputError(f"the label output that {m.reviewer}'s picks were made on is gone; restore it or "
                                 "remove those marks", str(m.labels))
            loaded[m.labels] = {c["id"]: c for c in read_transcripts(m.labels)}
        c = loaded[m.labels].get(m.pair)
        if c is None or c.get("score_first") is None or digest(*c["answers"]) != m.digest:
            stale += 1
            continue
        pair = pairs.setdefault((m.labels, m.pair), {"id": m.pair, "prompt": c["prompt"], "answers": list(c["answers"]),
                                                     "label_p": c["score_first"], "choices": []})
        pair["choices"].append(m.chosen)
    return list(pairs.values()), stale


def agreement(pairs: Sequence[dict], p_first: Sequence[float]) -> dict[str, Any] | None:
    """How often P(first answer better) sides with the picks: n, agreeing, rate, Wilson interval,
    and the mean probability given to the picked answer."""
    picked = [p if chosen == 0 else 1 - p for pair, p in zip(pairs, p_first) for chosen in pair["choices"]]
    if not picked:
        return None
    k, n = sum(p > 0.5 for p in picked), len(picked)
    low, high = wilson(k, n)
    return {"n": n, "agree": k, "rate": k / n, "low": low, "high": high, "mean_p_picked": sum(picked) / n}


def label_settings(cfg: Any):
    """label's settings for asking the question as eval-labeler's `cfg` asks it."""
    from charter.rlcai.labels import LabelConfig

    return LabelConfig(format=cfg.format, cot=cfg.cot, seed=cfg.seed, cot_max_tokens=cfg.max_tokens,
                       cot_temperature=cfg.temperature, batch_size=cfg.batch_size or 16)


def human_agreement(backend: Any, cfg: Any) -> dict[str, Any]:
    """eval-labeler's `human` section: the feedback model (`backend`, asked as `cfg` says) and the
    recorded labels against the picks in cfg.reviews, and the revision marks counted."""
    from charter.rlcai.data import load_feedback
    from charter.rlcai.label_steps import label_comparisons

    marks = read_marks(cfg.reviews)
    pairs, stale = reviewed_pairs(marks)
    model = None
    if pairs:
        items = [{"id": p["id"], "prompt": p["prompt"], "answers": p["answers"]} for p in pairs]
        asked = label_comparisons(backend, load_feedback(cfg.principles, cfg.few_shot), items, label_settings(cfg))
        model = agreement(pairs, [x["score_first"] for x in asked])
    return {"reviews": str(cfg.reviews), "reviewers": marks.reviewers, "pairs": len(pairs), "stale": stale,
            "model": model, "labels": agreement(pairs, [p["label_p"] for p in pairs]), "revisions": marks.summary()}


def _rate(a: dict | None) -> str:
    if a is None:
        return "no picks"
    return f"{a['agree']} of {a['n']} picks ({a['rate']:.3f}, 95% CI {a['low']:.3f}-{a['high']:.3f})"


def human_line(h: dict[str, Any]) -> str:
    """The `human` section in one line, for the command's output."""
    who = ", ".join(h["reviewers"]) or "no reviewer"
    r = h["revisions"]["revisions"]
    stale = f"; {h['stale']} stale picks left out" if h["stale"] else ""
    return (f"human picks ({who}, {h['pairs']} pairs): the model agrees on {_rate(h['model'])}; the recorded labels "
            f"on {_rate(h['labels'])}{stale}. Revisions marked: better {r['better']}, worse {r['worse']}, "
            f"same {r['same']}")
