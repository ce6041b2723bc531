"""The dataset card `charter export` writes beside its rows, and the upload to the Hub.

The card is a README.md with the YAML header the Hub reads (license, task_categories,
size_categories, language, tags, configs/data_files, so `datasets.load_dataset(DIR)` finds the
splits) and a body recording where the data came from: the constitution (name, principle ids,
digest), the model, sampling, rounds, counts, cleaning and filters, and Charter's version.
A README.md that Charter did not write is never replaced: the card is skipped with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from charter.errors import ConfigError, RunError
from charter.types import Record

# charter.export imports this module, so its types are named, not imported (no cycle)
ExportConfig = ExportResult = Any
log = logging.getLogger("charter.export.card")

CARD = "README.md"
MARK = "# charter dataset card (written by `charter export`; rewritten by the next export here)"
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
ROWS = {"sft": "`messages`: the prompt, then the assistant's revision (red-team) or answer (helpfulness); "
               "TRL's conversational SFT format",
        "dpo": "`prompt`, `chosen` (the final revision), `rejected` (the initial answer); TRL's "
               "conversational preference format",
        "trace": "whole Charter records: prompt, initial answer, every round's principle, critique and revision"}


KIND = "Charter dataset card"  # what charter.runs.files records the card as


def check_card(folder: Path, run: str | Path) -> Path | None:
    """Where the card goes, or None (logged) where a README.md that is not ours would be replaced."""
    from charter.runs.files import check_out

    path = folder / CARD
    try:
        return check_out(path, KIND, inputs=[run])
    except ConfigError:
        log.warning("warning: %s is not a dataset card written by Charter, so it is kept and no card is written; "
                    "export into a directory of its own to get one (or pass --no-card)", path)
        return None


@dataclass
class RunSummary:
    """What the card says about a run's records, counted as they stream past (none is kept)."""

    records: int = 0
    kinds: Counter = field(default_factory=Counter)
    failed: int = 0
    rounds: int = 0  # the most rounds of any record
    drawn: set[str] = field(default_factory=set)  # principles drawn (a constitution's worth at most)
    first_ok: Record | None = None  # model, backend and sampling come from it

    def add(self, rec: Record) -> Record:
        self.records += 1
        self.kinds[rec.kind] += 1
        self.failed += rec.error is not None
        self.rounds = max(self.rounds, len(rec.rounds))
        self.drawn.update(x.principle for x in rec.rounds)
        if self.first_ok is None and rec.error is None:
            self.first_ok = Record(rec.id, rec.kind, [], model=rec.model, backend=rec.backend, sampling=rec.sampling)
        return rec

    @classmethod
    def of(cls, records: Iterable[Record]) -> "RunSummary":
        summary = cls()
        for r in records:
            summary.add(r)
        return summary


def size_category(n: int) -> str:
    return next((name for limit, name in SIZES if n < limit), "n>100M")


def _meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def constitution_info(run_config: dict, meta: dict, summary: RunSummary) -> dict[str, Any]:
    """Name, principle ids and digest of the run's constitution; the ids drawn in the records
    stand in when the file is gone or changed since the run (its digest is the run's meta.json's)."""
    from charter.inputs.constitution import load_constitution
    from charter.errors import CharterError

    source = str(run_config.get("constitution") or "default")
    drawn = sorted(summary.drawn)
    recorded = (meta.get("parts") or {}).get("constitution")
    try:
        c = load_constitution(source, "none")
    except (CharterError, OSError):
        return {"name": source, "ids": drawn, "digest": recorded, "source": "ids drawn in the run (file not found)"}
    digest = hashlib.sha256(str(c.principles).encode()).hexdigest()[:16]  # as generate records it
    if recorded and recorded != digest:
        return {"name": c.name, "ids": drawn, "digest": recorded, "source": "ids drawn in the run (file changed since)"}
    return {"name": c.name, "ids": [p.id for p in c.principles], "digest": digest, "source": source}


def draw_row(run_config: dict) -> list[tuple[str, str]]:
    """How the run drew its principles, where not as the paper (by relevance, from one group,
    priorities named); no row for the paper's random draw."""
    how, group, named = run_config.get("principles") or "random", run_config.get("principle_group"), \
        run_config.get("name_priority")
    if how == "random" and not group and not named:
        return []
    from charter.pipeline.relevance import relevance_k

    k = relevance_k(how) if how != "random" else None
    parts = [f"by relevance: drawn among the {k} principles the model ranked most relevant to the "
             "conversation (P(Yes) to 'is this principle relevant?'; each round's scores in its `relevance`)"
             if how != "random" else "at random (the paper's draw)"]
    if group:
        parts.append(f"from the constitution's group '{group}' only")
    if named:
        parts.append("critique requests name the principle's priority")
    return [("principle draw", "; ".join(parts))]


def header(cfg: ExportConfig, result: ExportResult, hub: bool) -> dict[str, Any]:
    files = [{"split": s, "path": f"data/{s}-*" if hub else p.name} for s, p in result.files.items()]
    return {"license": cfg.license, "language": list(cfg.language), "task_categories": ["text-generation"],
            "size_categories": [size_category(sum(result.rows.values()))],
            "tags": ["constitutional-ai", "charter", "synthetic", cfg.format],
            "pretty_name": f"Charter {cfg.format} export",
            "configs": [{"config_name": "default", "data_files": files}]}


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def provenance(cfg: ExportConfig, result: ExportResult, summary: RunSummary, run_config: dict,
               folder: Path) -> list[tuple[str, object]]:
    meta, ok = _meta(folder), summary.first_ok
    c = constitution_info(run_config, meta, summary)
    s = ok.sampling if ok else {}
    kinds = summary.kinds
    dropped = result.dropped_totals()
    export = {k: getattr(cfg, k) for k in ("revision", "upto", "helpful_ratio", "seed", "test_share")
              if getattr(cfg, k) is not None}
    return [("constitution", f"{c['name']} ({len(c['ids'])} principles, sha256 {c['digest'] or 'unknown'})"),
            ("principles", f"{', '.join(c['ids'])} ({c['source']})"),
            *draw_row(run_config),
            ("model", ok.model if ok else run_config.get("model", "")),
            ("backend", ok.backend if ok else run_config.get("backend", "")),
            ("sampling", ", ".join(f"{k} {s[k]}" for k in ("temperature", "top_p", "max_tokens", "seed") if k in s)),
            ("rounds", f"{run_config.get('rounds', '?')} (critique: {run_config.get('critique', '?')}, "
                       f"context: {run_config.get('context', '?')}, format: {run_config.get('format', '?')})"),
            ("prompts", f"red-team {run_config.get('prompts', '?')}, "
                        f"helpfulness {run_config.get('helpful_prompts', '?')}"),
            ("records", f"{summary.records} ({kinds['red_team']} red-team, {kinds['helpful']} helpfulness, "
                        f"{result.failed} failed and skipped)"),
            ("export", f"format {cfg.format}" + "".join(f", {k} {v}" for k, v in export.items())),
            ("cleaning", "none" if cfg.format == "trace" else f"patterns: {cfg.clean_patterns}"),
            ("filters", (", ".join(result.filters) or "none") + ("; dropped rounds: " + ", ".join(
                f"{f} {dropped.get(f, 0)}" for f in result.filters) if result.filters else "")),
            *([("reviews", result.reviewed)] if getattr(result, "reviewed", None) else []),
            ("Charter", f"run made with {meta.get('charter_version', 'unknown')}, exported with {_version()}")]


def _version() -> str:
    from charter import __version__

    return __version__


def card_text(cfg: ExportConfig, result: ExportResult, summary: RunSummary, run_config: dict,
              folder: Path, hub: bool = False, earlier: list["Entry"] | None = None) -> str:
    """The card; `earlier`: the other exports in the same directory (see `earlier_entries`), each
    kept as a config of its own so `load_dataset(DIR, NAME)` finds every one."""
    head = header(cfg, result, hub)
    body = section(cfg, result, summary, run_config, folder, hub)
    if earlier:
        mine = Entry(export_name(cfg, earlier), head["configs"][0]["data_files"], body, list(head["tags"]))
        entries = [*earlier, mine]
        head["configs"] = [{"config_name": e.name, "data_files": e.files, **({"default": True} if not i else {})}
                           for i, e in enumerate(entries)]
        head["tags"] = sorted({*head["tags"], *(t for e in earlier for t in e.tags)})
        listing = "\n".join(f"| `{e.name}` | {', '.join(f['path'] for f in e.files)} |" for e in entries)
        body = ("Exports in this directory, each a config: `load_dataset(DIR, NAME)`.\n\n| config | files |\n"
                f"|---|---|\n{listing}\n\n" + "\n".join(marked(e) for e in entries))
    elif not hub:  # marked, so the next export into this directory keeps this one's section
        body = marked(Entry(export_name(cfg, []), [], body, head["tags"]), heading=False)
    title = "Charter exports" if earlier else f"Charter {cfg.format} export"
    head["pretty_name"] = title
    return (f"---\n{MARK}\n{yaml.safe_dump(head, sort_keys=False, allow_unicode=True)}---\n\n# {title}\n\n"
            "Constitutional AI data made with Charter: red-team prompts answered by the model below, then "
            "critiqued and revised against principles drawn from the constitution (Bai et al. 2022, "
            "arXiv 2212.08073). Raw outputs of a generative model: read before training on them.\n\n" + body)


def section(cfg: ExportConfig, result: ExportResult, summary: RunSummary, run_config: dict, folder: Path,
            hub: bool) -> str:
    """One export's part of the card: its files, how it was made, how to load it."""
    table = "\n".join(f"| {k} | {_cell(v)} |" for k, v in provenance(cfg, result, summary, run_config, folder))
    splits = "\n".join(f"| {s} | `{'data/' + s + '-*' if hub else p.name}` | {result.rows[s]} |"
                       for s, p in result.files.items())
    data_files = {s: p.name for s, p in result.files.items()}
    where = f'load_dataset("{cfg.push_to_hub}")' if hub else \
        (f'load_dataset("{"parquet" if Path(cfg.out).suffix == ".parquet" else "json"}", data_files={data_files})'
         "  # or load_dataset(DIR): this card names the files")
    return (f"## Files\n\n| split | file | rows |\n|---|---|---|\n{splits}\n\nRows: {ROWS[cfg.format]}.\n\n"
            f"## How it was made\n\n| | |\n|---|---|\n{table}\n\n"
            f"## Load it\n\n```python\nfrom datasets import load_dataset\nds = {where}\n```\n")


# ---- several exports in one directory: one card, a config per export -------------------------------

_SECTION = re.compile(r"<!-- charter export (?P<name>[\w.-]+) tags=(?P<tags>[\w,.-]*) -->\n(?P<body>.*?)"
                      r"<!-- end charter export -->\n", re.S)


@dataclass
class Entry:
    """One export described by a card: its config name, data_files and section."""

    name: str
    files: list[dict]
    body: str
    tags: list[str] = field(default_factory=list)


def marked(e: Entry, heading: bool = True) -> str:
    body = f"## `{e.name}`\n\n" + re.sub(r"^## ", "### ", e.body, flags=re.M) if heading else e.body
    return f"<!-- charter export {e.name} tags={','.join(e.tags)} -->\n{body}<!-- end charter export -->\n"


def earlier_entries(card: Path, files: dict[str, Path]) -> list[Entry]:
    """The other exports an earlier card here describes whose files are all still there (this
    export's own files replace theirs); none for a card that cannot be read."""
    try:
        text = card.read_text(encoding="utf-8")
        head = yaml.safe_load(text.split("---\n")[1]) or {}
    except (OSError, IndexError, UnicodeDecodeError, yaml.YAMLError):
        return []
    sections = {m["name"]: m for m in _SECTION.finditer(text)}
    mine, out = {p.name for p in files.values()}, []
    for c in head.get("configs") or []:
        paths = [f.get("path") for f in c.get("data_files") or [] if isinstance(f, dict)]
        if not paths or set(paths) & mine or not all(isinstance(p, str) and (card.parent / p).is_file() for p in paths):
            continue
        name = c.get("config_name") if c.get("config_name") != "default" else _stem(paths[0])
        got = sections.get(name)
        body = got["body"] if got else ""
        if body.startswith("## `"):  # a section of a several-export card: its heading off, one level up
            body = re.sub(r"^### ", "## ", body.split("\n\n", 1)[-1], flags=re.M)
        tags = got["tags"].split(",") if got and got["tags"] else list(head.get("tags") or [])
        out.append(Entry(name, c["data_files"], body, [t for t in tags if t]))
    return out


def export_name(cfg: ExportConfig, earlier: list[Entry]) -> str:
    """This export's config name: its file's stem (sft.jsonl -> sft), made unique."""
    taken, name = {e.name for e in earlier}, _stem(Path(cfg.out).name)
    return name if name not in taken else f"{name}-{cfg.format}"


def _stem(path: str) -> str:
    stem = Path(path).name.split(".")[0]
    return re.sub(r"-(train|test)$", "", stem) or "data"


def write_card(path: Path, text: str) -> Path:
    from charter.runs.files import write_out

    return write_out(path, KIND, text)


def push(files: dict[str, Path], cfg: ExportConfig, card: str) -> None:
    """The written files through `datasets`' own upload (DatasetDict.push_to_hub: Parquet shards under
    data/), then the card as the repo's README.md. Any failure is a RunError; the local files stay.
    The files are loaded memory-mapped (an Arrow cache in a temporary folder beside them), not as lists."""
    import tempfile

    import datasets
    from huggingface_hub import HfApi

    repo = cfg.push_to_hub
    kind = "parquet" if Path(cfg.out).suffix.lower() == ".parquet" else "json"
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the library prints nothing (its "Generating train split" bar)
    try:
        with tempfile.TemporaryDirectory(prefix=".charter-hub-", dir=Path(cfg.out).parent) as cache:
            dd = datasets.load_dataset(kind, data_files={s: str(p) for s, p in files.items()}, cache_dir=cache)
            dd.push_to_hub(repo, private=True if cfg.private else None)
        HfApi().upload_file(path_or_fileobj=card.encode(), path_in_repo=CARD, repo_id=repo, repo_type="dataset",
                            commit_message="Dataset card from charter export")
    except Exception as exc:  # network, auth, repo name: all end the same way for the user
        why = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RunError(f"--push-to-hub {repo} failed ({type(exc).__name__}: {why}); the local files are written. "
                       "Log in (`hf auth login` or HF_TOKEN), check the repo name (ORG/NAME) and the network, "
                       "then export again") from exc
    finally:
        if bars:
            datasets.enable_progress_bars()
