"""A classifier-data run's lines -> OUT/train.jsonl, OUT/test.jsonl and a dataset card OUT/README.md.

Deduplication, kept simple on purpose (datasketch's MinHash would be the next step at scale):
- seed queries: a query whose normalised request equals an earlier one's, or shares at least
  `near_duplicate` Jaccard similarity of character 5-grams with one (a pairwise comparison:
  quadratic in the number of queries, which is fine for thousands), is dropped with every example
  made from it: its augmentations would otherwise be near-copies of the earlier query's;
- examples: an example whose normalised text equals an earlier example's (a paraphrase that came
  back unchanged, a request too short to split over turns) is dropped.
The split is by seed query within each category (seeded), so the augmentations and the answer of
one query never straddle train and test.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from charter.jsonl import loads, read_lines as raw_lines, write_jsonl

KIND = "Charter classifier data"  # what charter.runs.files records train.jsonl and test.jsonl as
SPLITS = ("train", "test")
SHINGLE = 5
MARK = "# charter dataset card (written by `charter classifier data`; rewritten by the next run here)"


def check_outputs(out: Path, cfg) -> dict[str, Path]:
    """train.jsonl and test.jsonl in `out`, refused (a ConfigError, nothing written) where they are
    files Charter did not write as classifier data, or the run's constitution."""
    from charter.runs.files import check_out

    inputs = [cfg.constitution] if cfg.constitution != "default" else []
    return {s: check_out(out / f"{s}.jsonl", KIND, inputs=inputs) for s in SPLITS}


def read_lines(path: Path, ids: Sequence[str]) -> list[dict]:
    """The last line of each of `ids` (in that order) that the store holds; damaged lines are
    skipped (the store set them aside when it opened)."""
    last: dict[str, dict] = {}
    if path.exists():
        for _, raw in raw_lines(path):
            try:
                t = loads(raw)
            except ValueError:
                continue
            if isinstance(t, dict) and isinstance(t.get("id"), str):
                last[t["id"]] = t
    return [last[i] for i in ids if i in last]


# ---- deduplication ----------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, words only, single spaces: what two copies of a request share."""
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    t = normalise(text)
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def dedup(lines: Iterable[dict], threshold: float) -> tuple[list[dict], dict[str, int]]:
    """The examples of the lines that are not duplicates (module docstring), in order, and counts."""
    counts = Counter(queries=0, exact_queries=0, near_queries=0, exact_examples=0)
    seen_queries: set[str] = set()
    kept_shingles: list[set[str]] = []
    seen_texts: set[tuple[str, str]] = set()
    rows: list[dict] = []
    for t in lines:
        if not t.get("examples"):
            continue
        counts["queries"] += 1
        query = normalise(t.get("query") or t["examples"][0]["text"])
        grams = shingles(query)
        if query in seen_queries:
            counts["exact_queries"] += 1
            continue
        if any(jaccard(grams, other) >= threshold for other in kept_shingles):
            counts["near_queries"] += 1
            continue
        seen_queries.add(query)
        kept_shingles.append(grams)
        for ex in t["examples"]:
            key = (ex.get("kind", "input"), normalise(ex["text"]))
            if key in seen_texts:
                counts["exact_examples"] += 1
                continue
            seen_texts.add(key)
            rows.append(ex)
    counts["examples"] = len(rows)
    return rows, dict(counts)


# ---- split ------------------------------------------------------------------------------------------


def split(rows: Sequence[dict], share: float, seed: int) -> dict[str, list[dict]]:
    """Train/test by seed query ("group"), drawn per category: round(share x its queries) of them
    (at least one where a category has two or more, never all) go to test, with all their examples."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        ids = groups.setdefault(r["category"], [])
        if r["group"] not in ids:
            ids.append(r["group"])
    test: set[str] = set()
    for category, ids in groups.items():
        if share <= 0 or len(ids) < 2:
            continue
        drawn = sorted(ids)
        random.Random(f"{seed}:{category}").shuffle(drawn)
        test.update(drawn[:min(len(ids) - 1, max(1, round(len(ids) * share)))])
    return {"train": [r for r in rows if r["group"] not in test], "test": [r for r in rows if r["group"] in test]}


# ---- files ------------------------------------------------------------------------------------------


def write_dataset(cfg, constitution, lines: list[dict], out: Path, summary) -> None:
    """train.jsonl, test.jsonl (when test_share > 0) and README.md from the run's lines; the counts
    go into `summary` (a ClassifierDataSummary)."""
    from charter.runs.files import mark_written

    summary.failures = sum(1 for t in lines if t.get("error") is not None)
    summary.skipped = sum(1 for t in lines if t.get("error") is None and t.get("skipped"))
    rows, counts = dedup((t for t in lines if t.get("error") is None), cfg.near_duplicate)
    splits = split(rows, cfg.test_share, cfg.seed)
    written = {}
    for name in SPLITS:
        if name == "test" and cfg.test_share <= 0:
            (out / "test.jsonl").unlink(missing_ok=True)  # an earlier run's (check_outputs: ours) would now leak
            continue
        path = write_jsonl(out / f"{name}.jsonl", splits[name])
        mark_written(path, KIND)
        written[name] = path
    summary.splits = {name: len(splits[name]) for name in written}
    summary.examples, summary.dedup = sum(summary.splits.values()), counts
    if cfg.check_labels:
        summary.disagreements = sum(1 for r in rows if (r.get("check") or {}).get("disagrees"))
    write_card(cfg, constitution, rows, written, summary, out)


def write_card(cfg, constitution, rows: list[dict], files: dict[str, Path], summary, out: Path) -> None:
    from charter.export.card import check_card, write_card as write

    path = check_card(out, out / "queries.jsonl")
    if path is not None:
        write(path, card_text(cfg, constitution, rows, files, summary))


def _table(head: tuple[str, ...], rows: Iterable[tuple]) -> str:
    from charter.export.card import _cell

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def _header(cfg, files: dict[str, Path], n: int) -> dict[str, Any]:
    from charter.export.card import size_category

    langs = ["en"] + (["fr", "es", "de"] if "translate" in cfg.augment else [])
    return {"license": "other", "language": langs, "task_categories": ["text-classification"],
            "size_categories": [size_category(n)], "tags": ["constitutional-classifiers", "charter", "synthetic"],
            "pretty_name": "Charter classifier data",
            "configs": [{"config_name": "default",
                         "data_files": [{"split": s, "path": p.name} for s, p in files.items()]}]}


def provenance(cfg, constitution, summary) -> list[tuple[str, str]]:
    """The card's "How it was made" rows."""
    from charter import __version__

    d = summary.dedup
    checked = f"{summary.disagreements} rows disagree (feedback model {cfg.feedback_model or cfg.model})"
    return [("constitution", f"{constitution.name} ({len(constitution.restricted)} restricted, "
                             f"{len(constitution.permitted)} permitted categories; {cfg.constitution})"),
            ("model", f"{cfg.model} (backend {cfg.backend})"),
            ("sampling", f"temperature {cfg.temperature}, top_p {cfg.top_p}, max_tokens {cfg.max_tokens}, "
                         f"seed {cfg.seed}"),
            ("seed queries", f"{cfg.per_category} per category; {summary.queries} in all, {summary.skipped} empty, "
                             f"{summary.failures} failed"),
            ("augmentations", ", ".join(cfg.augment) or "none"),
            ("outputs", "answers written (kind output)" if cfg.outputs else "none (inputs only)"),
            ("dedup", f"{d.get('exact_queries', 0)} exact and {d.get('near_queries', 0)} near-duplicate seed queries "
                      f"(5-gram Jaccard >= {cfg.near_duplicate}) dropped with their examples; "
                      f"{d.get('exact_examples', 0)} duplicate examples dropped"),
            ("label check", checked if cfg.check_labels else "not run"),
            ("split", f"by seed query within each category, test share {cfg.test_share}, seed {cfg.seed}"),
            ("Charter", __version__)]


def counts(cfg, constitution, rows: list[dict]) -> str:
    """The card's counts: labels, then rows per category and kind, then per augmentation."""
    per = Counter((r["category"], r["kind"]) for r in rows)
    labels = Counter(r["label"] for r in rows)
    used = [c for c in constitution.categories if not cfg.categories or c.id in cfg.categories]
    cats = _table(("category", "kind", "label", "input rows", "output rows"),
                  ((c.id, "restricted" if c.restricted else "permitted", c.label, per[(c.id, "input")],
                    per[(c.id, "output")]) for c in used))
    augs = _table(("augmentation", "rows"), sorted(Counter(r["augmentation"] for r in rows).items()))
    return f"{labels[1]} rows labelled 1, {labels[0]} labelled 0.\n\n{cats}\n\n{augs}"


def card_text(cfg, constitution, rows: list[dict], files: dict[str, Path], summary) -> str:
    head = yaml.safe_dump(_header(cfg, files, len(rows)), sort_keys=False, allow_unicode=True)
    data_files = {s: p.name for s, p in files.items()}
    split_table = _table(("split", "file", "rows"), ((s, p.name, summary.splits[s]) for s, p in files.items()))
    return (f"---\n{MARK}\n{head}---\n\n# Charter classifier data\n\n"
            "Synthetic requests (and answers) for training a constitutional classifier (Sharma et al. 2025, "
            "arXiv 2501.18837): a model wrote them for each category of the constitution below; restricted "
            "categories are labelled 1, permitted ones 0. Labels come from the category the model was asked to "
            "write for, not from reading the text: raw outputs of a generative model, read before training on "
            f"them.\n\n## Files\n\n{split_table}\n\nRows: `text`, `messages` (TRL conversational), `kind` (input: "
            "a request; output: request and answer), `label`, `category`, `restricted`, `augmentation`, `source`"
            f"{', `check`' if cfg.check_labels else ''}, `id`, `group` (the seed query).\n\n"
            f"## Counts\n\n{counts(cfg, constitution, rows)}\n\n"
            f"## How it was made\n\n{_table(('', ''), provenance(cfg, constitution, summary))}\n\n"
            "## Load it\n\n```python\nfrom datasets import load_dataset\n"
            f"ds = load_dataset(\"json\", data_files={data_files})  # in this directory; or load_dataset(DIR)\n```\n")
