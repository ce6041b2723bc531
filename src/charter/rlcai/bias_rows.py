"""The comparisons of `label` and `eval-labeler` as charter.rlcai.bias rows (`Compared`).

label: each labelled comparison of a transcript line (charter.rlcai.label_store) keeps every
question it asked, one principle in orders "xy" and "yx", with the raw option probabilities (before
any chain-of-thought clamp), so its biases are read back from the transcripts of any run, finished
or not. eval-labeler: x is the correct answer, y the incorrect one; each of a row's two orders
shows one of them first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from charter.rlcai.bias import Compared, JudgeBias, judge_bias, p_first


def label_compared(t: dict, source: str | None = None) -> Iterator[Compared]:
    """A label transcript line's labelled comparisons; both answers come from `source` (the policy)."""
    if t.get("error") is not None:
        return
    for c in t.get("comparisons") or ():
        if c.get("skipped") or c.get("score_first") is None:
            continue
        orders: dict[str, list[float | None]] = {}
        for ask in c.get("asks") or ():
            slot = orders.setdefault(str(ask.get("principle")), [None, None])
            slot[0 if ask.get("order") == "xy" else 1] = p_first(ask["probs"])
        i, j = c["samples"]
        x, y = t["answers"][i], t["answers"][j]
        yield Compared(tuple((a, b) for a, b in orders.values()), len(x), len(y), source, source)


def label_bias(transcripts: str | Path, judge: str | None, policy: str | None) -> JudgeBias:
    """The feedback model's biases over a label run's transcripts (streamed, the last line of each prompt)."""
    from charter.rlcai.label_store import iter_lines

    return judge_bias((c for t in iter_lines(Path(transcripts)) for c in label_compared(t, policy)), judge)


def labeler_compared(rows: Sequence, comps: Sequence[list], results: Sequence[dict]) -> Iterator[Compared]:
    """eval-labeler's comparisons (its MC rows, their Comparisons and its row results), x = correct."""
    from charter.rlcai.data import OPTION
    from charter.rlcai.mc_file import LABEL

    for row, row_comps, res in zip(rows, comps, results):
        texts = dict(OPTION.findall(row.prompt))  # label-style rows name options by letter
        for comp, got in zip(row_comps, res["comparisons"]):
            x, y = (texts.get(m.group(1), o) if (m := LABEL.match(o)) else o for o in (comp.correct, comp.incorrect))
            slots: list[float | None] = [None, None]
            for (_q, _n, ic, iw), p in zip(comp.orders, got["p_correct_by_order"]):
                if ic < iw:  # correct shown first: P(first) = P(correct)
                    slots[0] = p
                else:
                    slots[1] = 1.0 - p
            yield Compared(((slots[0], slots[1]),), len(x), len(y))


def labeler_bias(rows: Sequence, comps: Sequence[list], results: Sequence[dict], judge: str | None) -> JudgeBias:
    return judge_bias(labeler_compared(rows, comps, results), judge)


__all__ = ["label_compared", "label_bias", "labeler_compared", "labeler_bias"]
