"""The prompt file `charter redteam` writes, and its card.

The prompt file is JSONL that `generate --prompts FILE` reads: a row holds `prompt` (one user turn)
or `messages` (a multi-turn conversation ending with the user's turn), and its provenance: `id`,
`topic`, `principle` (null for a topic not taken from a constitution), `style`, `template` and
`source` (the model, backend, seed and request that wrote it). It is rewritten whole from the topic
lines at the end of every run, so a resumed run writes each prompt once, and --styles can change
without generating anything again. A prompt that nearly repeats one of an earlier topic is left out.

The card (prompts.card.json beside it) says how the file was made: settings, instruction, templates,
and per topic what the model gave and what was dropped, by reason.
"""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from charter.jsonl import loads, read_lines, write_json, write_jsonl
from charter.redteam.parse import Deduper
from charter.redteam.seeds import PLAIN, Seeds, Template
from charter.redteam.steps import check_line

KIND = "Charter red-team prompts"  # what charter.runs.files records the outputs as
CARD_KIND = "Charter red-team card"
ACROSS = "near duplicate of another topic's"


def card_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.card.json")


def topic_lines(path: Path, order: Iterable[str]) -> list[dict]:
    """The last line of each topic in `order` that has one (damaged lines skipped: the store has
    set them aside when it opened)."""
    last: dict[str, dict] = {}
    for _, raw in read_lines(path) if path.exists() else ():
        try:
            t = check_line(loads(raw))
        except ValueError:
            continue
        last[t["id"]] = t
    return [last[tid] for tid in order if tid in last]


def decap(prompt: str) -> str:
    """'How do I ...' -> 'how do I ...' inside a sentence; 'I ...', 'AI ...' stay as they are."""
    return prompt[0].lower() + prompt[1:] if len(prompt) > 1 and prompt[0].isupper() and prompt[1].islower() else prompt


def dress(prompt: str, topic: str, template: Template | None) -> dict[str, Any]:
    """The row's `prompt` or `messages`: the prompt as it is (plain) or inside a style's template."""
    if template is None:
        return {"prompt": prompt}
    if template.text is not None:
        return {"prompt": _fill(template.text, prompt, topic)}
    return {"messages": [{"role": m["role"], "content": _fill(m["content"], prompt, topic)} for m in template.messages]}


def _fill(text: str, prompt: str, topic: str) -> str:
    """The slots filled in; the prompt's first letter lowered where it goes on a sentence ("Max, how ...")."""
    before = text.split("{prompt}", 1)[0].rstrip()
    return text.replace("{prompt}", decap(prompt) if before.endswith(",") else prompt).replace("{topic}", topic)


def pick_template(seeds: Seeds, style: str, key: str) -> Template | None:
    """A style's template for one prompt, drawn seeded by the prompt's key (None: plain)."""
    if style == PLAIN:
        return None
    return random.Random(f"{key}:{style}").choice(seeds.styles[style])


def rows_of(lines: list[dict], styles: list[str], seeds: Seeds, threshold: float, seed: int,
            across: Counter, written: Counter) -> list[dict]:
    """Every kept prompt in every style, in topic order; repeats across topics left out. Counted
    per topic id: `across` (left out), `written` (rows)."""
    dedup, rows = Deduper(threshold), []
    for t in lines:
        if t.get("error") is not None:
            continue
        request_of = {p: r["key"] for r in t["requests"] for p in r.get("kept", ())}
        for i, prompt in enumerate(t["prompts"]):
            if dedup.keep(prompt):
                across[t["id"]] += 1
                continue
            written[t["id"]] += len(styles)
            for style in styles:
                template = pick_template(seeds, style, f"{seed}:{t['id']}:{i}")
                rows.append({"id": f"{t['id']}-{i}-{style}", **dress(prompt, t["topic"], template),
                             "topic": t["topic"], "principle": t.get("principle"), "style": style,
                             "template": template.name if template else PLAIN,
                             "source": {**(t.get("source") or {}), "seed": seed, "request": request_of.get(prompt)}})
    return rows


def write_prompts(out: Path, lines: list[dict], cfg, seeds: Seeds, card: dict) -> dict:
    """The prompt file and its card, each recorded as Charter's (charter.runs.files); the card."""
    from charter.runs.files import mark_written

    across, written = Counter(), Counter()
    rows = rows_of(lines, list(cfg.styles), seeds, cfg.dedup_threshold, cfg.seed, across, written)
    write_jsonl(out, rows)
    mark_written(out, KIND)
    backends = sorted({(t.get("source") or {}).get("backend") for t in lines} - {None})
    card = {**card, "backend": ", ".join(backends) or card["backend"], "rows": len(rows),
            "topics": [topic_card(t, written[t["id"]], across[t["id"]]) for t in lines]}
    card["dropped"] = dict(sum((Counter(t["dropped"]) for t in card["topics"]), Counter()))
    write_json(card_path(out), card)
    mark_written(card_path(out), CARD_KIND)
    return card


def topic_card(t: dict, rows: int, across: int) -> dict:
    """One topic's account: prompts kept, rows written, requests, those that gave nothing, drops."""
    dropped: Counter = Counter()
    for r in t.get("requests") or ():
        dropped.update(r.get("dropped") or {})
    if across:
        dropped[ACROSS] += across
    return {"id": t["id"], "topic": t["topic"], "about": t.get("about"), "principle": t.get("principle"),
            "prompts": len(t.get("prompts") or ()) - across,
            "rows": rows,
            "requests": len(t.get("requests") or ()), "parse_failures": t.get("parse_failures", 0),
            "dropped": dict(sorted(dropped.items())), "error": t.get("error")}


def card_head(cfg, seeds: Seeds, examples: tuple, version: str) -> dict:
    """What the card says about the whole file before its counts: method, settings, templates."""
    styles = {s: [{"template": t.name, **({"text": t.text} if t.text else {"messages": list(t.messages)})}
                  for t in seeds.styles[s]] for s in cfg.styles if s != PLAIN}
    return {
        "kind": "charter red-team prompts",
        "method": "topic-guided red-teaming (SELF-ALIGN, arXiv 2305.03047): per topic, a model is shown the "
                  "instruction with a few example prompts and writes new ones; its answers are parsed, copies of "
                  "the examples and (near) duplicates dropped, and each kept prompt written in every style",
        "charter_version": version,
        "model": cfg.model, "backend": cfg.backend, "seed": cfg.seed,
        "sampling": {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p},
        "constitution": None if cfg.topics else cfg.constitution,
        "topics_file": cfg.topics, "examples_file": cfg.examples, "examples": len(examples),
        "per_topic": cfg.per_topic, "tries": cfg.tries, "dedup_threshold": cfg.dedup_threshold,
        "instruction": seeds.instruction, "styles": {PLAIN: "the generated prompt as it is", **styles},
        "fields": {"id": "TOPIC-INDEX-STYLE", "prompt / messages": "what generate reads",
                   "topic": "the topic's name", "principle": "the constitution principle it tests, or null",
                   "style": "plain or an attack style", "template": "STYLE/TEMPLATE (plain: none)",
                   "source": "model, backend, run seed and the request (TOPIC:ROUND:INDEX) that wrote it"},
    }
