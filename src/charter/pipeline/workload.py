"""What a generate run asks of the engine: its prompts as a stream, counted before it starts.

A counting pass reads the prompt sources once (and so checks them before anything is written),
keeping 8 bytes per prompt, never the prompts: the number of prompts, of requests (steps), and
an upper bound on generated tokens. `charter generate --dry-run` prints it; a real run logs it,
then a projected time once the first steps have set the rate.
"""
from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass, field
from typing import Iterator

from charter.runs.idset import IdSet, key
from charter.pipeline.cai import Settings, plan
from charter.types import PromptItem

log = logging.getLogger("charter.pipeline.workload")


def iter_items(cfg) -> Iterator[PromptItem]:
    """The run's prompts, streamed: red-team, then helpfulness (each answered helpful_samples times)."""
    from charter.inputs.prompts import iter_prompts

    yield from iter_prompts(cfg.prompts, "red_team", cfg.prompt_field, cfg.limit)
    if cfg.helpful_prompts != "none" and cfg.helpful_samples > 0:
        yield from iter_prompts(cfg.helpful_prompts, "helpful", cfg.prompt_field, cfg.limit, cfg.helpful_samples)


def completion_key(cfg, fingerprint: str) -> str | None:
    """What decides that a finished run is still finished (RunStore.mark_complete / finished):
    the results' fingerprint, every setting (the prompt selection among them), Charter's version
    (its default prompt sets) and each prompt file's path, size and mtime_ns. None when a source
    cannot be vouched for that cheaply (a hub dataset, a missing file): such runs always count."""
    import hashlib
    import json
    import os

    from charter import __version__
    from charter.errors import InputError
    from charter.inputs.prompts import source_files

    sources = [(cfg.prompts, "red_team")]  # a job without helpfulness prompts (label) has red-team ones only
    if getattr(cfg, "helpful_prompts", "none") != "none" and cfg.helpful_samples > 0:
        sources.append((cfg.helpful_prompts, "helpful"))
    stamps = []
    try:
        for source, kind in sources:
            files = source_files(source, kind)
            if files is None:
                return None
            stamps += [(os.path.abspath(f), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)]]
    except (OSError, InputError):
        return None
    blob = json.dumps([fingerprint, cfg.to_dict(), __version__, stamps], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Projection:
    prompts: int = 0  # prompts to run (x samples for helpfulness prompts)
    requests: int = 0  # engine requests (steps) for them, every round run
    max_tokens: int = 0
    skipped: int = 0  # prompts already done in the run directory
    keys: dict[int, array] = field(default_factory=dict, repr=False)  # steps per prompt -> its prompts' id keys
    checked: list[str] = field(default_factory=list)  # what a dry run checked, one phrase each

    @property
    def tokens(self) -> int:
        """Generated tokens at most (a request may stop before max_tokens)."""
        return self.requests * self.max_tokens

    def line(self) -> str:
        done = f" ({self.skipped:,} already done)" if self.skipped else ""
        return (f"{self.prompts:,} prompts to run{done}: {self.requests:,} requests, at most {self.tokens:,} generated "
                f"tokens ({self.max_tokens} per request)")

    def resume(self, done: IdSet) -> None:
        """Take out the prompts the run has already done."""
        for steps, keys in self.keys.items():
            hit = sum(1 for k in keys if done.has_key(k))
            self.skipped, self.prompts, self.requests = self.skipped + hit, self.prompts - hit, self.requests - hit * steps


def project(cfg, settings: Settings, keys: bool = True) -> Projection:
    """Count the run by reading its prompt sources once (an InputError names a bad line); `keys`:
    keep each prompt's id key (8 bytes), which `resume` needs and a new run does not."""
    proj, per_kind = Projection(max_tokens=cfg.max_tokens), {}
    for item in iter_items(cfg):
        steps = per_kind.get(item.kind) or per_kind.setdefault(item.kind, len(plan(item, settings)))
        proj.prompts, proj.requests = proj.prompts + 1, proj.requests + steps
        if keys:
            proj.keys.setdefault(steps, array("Q")).append(key(item.id))
    return proj


def run_identity(cfg, constitution) -> tuple[dict[str, str], str]:
    """A generate run's parts (what a refusal to resume can name) and its fingerprint."""
    import json

    parts = {"constitution": str(constitution.principles), "few-shot": str(constitution.few_shots)}
    return parts, cfg.fingerprint(json.dumps(list(parts.values())))


def dry_run(cfg, settings: Settings, force: bool = False) -> Projection:
    """What `charter generate` would do with this config (`settings`: generate.settings_from(cfg)),
    minus what its run directory already holds, after every check that needs no engine: the model
    found, the constitution and the prompts read, the output usable (`force`: as --force would).
    Reads; writes nothing. `checked` on the projection says what was checked."""
    from pathlib import Path

    from charter.backends import check_backend_name, split_spec
    from charter.inputs.constitution import in_group, load_constitution
    from charter.backends.models import check_model
    from charter.runs.runread import RECORDS
    from charter.runs.store import RunStore

    cfg.validate()
    check_backend_name(cfg.backend)
    backend, model = split_spec(cfg.model, cfg.backend)
    check_backend_name(backend)
    checked = [f"model {check_model(model, backend)} on backend {backend}"]
    constitution = load_constitution(cfg.constitution, cfg.few_shot)
    group = in_group(constitution.principles, cfg.principle_group, constitution.source or constitution.name)
    in_it = f", {len(group)} in group '{cfg.principle_group}'" if cfg.principle_group else ""
    checked.append(f"constitution {cfg.constitution} ({len(constitution.principles)} principles{in_it}, "
                   f"{len(constitution.few_shots)} few-shot examples)")
    proj = project(cfg, settings)
    store = RunStore(cfg.out)
    parts, fingerprint = run_identity(cfg, constitution)
    store.check(cfg.to_dict(), fingerprint, force, parts, cfg.NON_RESULT_KEYS)
    if (Path(cfg.out) / RECORDS).is_file():
        proj.resume(store.done_ids())  # read-only: an unopened store moves nothing
    checked += ["prompts read", f"--out {cfg.out} ({'resumes a run' if store.has_records() else 'a new run'})"]
    proj.checked = checked
    return proj


class RateLog:
    """Once steps have run for `after` seconds, one log line: the measured rate and the projected
    time for the rest. The clock starts at the first finished step: that one also waited for the
    engine to start, which would make the rate (and the projection) wrong by minutes."""

    def __init__(self, total: int, after: float = 10.0):
        self.total, self.after, self.steps, self.said = total, after, 0, False
        self.t0: float | None = None  # when the first step finished
        self.first = 0  # steps finished by then (not counted in the rate)

    def step(self, n: int = 1) -> None:
        now, self.steps = time.monotonic(), self.steps + n
        if self.t0 is None:
            self.t0, self.first = now, self.steps
        if self.said:
            return
        elapsed = now - self.t0
        if self.steps >= self.total:  # done before the rate was worth saying: nothing to project
            self.said = True
        elif elapsed >= self.after and self.steps > self.first:
            self.said = True
            rate = (self.steps - self.first) / elapsed
            left = (self.total - self.steps) / rate
            log.info("projection: %d of %d requests done, %.1f requests/s since the first: about %s to go",
                     self.steps, self.total, rate, _duration(left))


def _duration(seconds: float) -> str:
    from charter.pipeline.cost import format_duration

    return format_duration(seconds)
