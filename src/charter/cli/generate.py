"""`charter generate`: red-team prompts -> critiques and revisions (SL-CAI data)."""
from __future__ import annotations

import argparse
import sys

from charter.cli.common import add_backend_option, add_config, add_settings, given, parse_backend_options
from charter.generate import GenerateConfig
from charter.errors import ConfigError
from charter.redact import redact


def register(sub) -> None:
    p = sub.add_parser("generate", help="red-team prompts -> critiques and revisions (SL-CAI data)")
    add_config(p, "generate")
    add_settings(p, GenerateConfig)
    p.add_argument("--base-url", help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 (key from $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=int, help="requests in flight for engines that batch internally (openai, llamacpp)")
    add_backend_option(p, "passed to the backend's constructor (repeatable; VALUE parsed as YAML)")
    p.add_argument("--force", action="store_true", help="continue a run directory even if its settings changed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the model, constitution, prompts and --out without starting the engine; print the number "
                   "of prompts, requests and generated tokens (at most); write nothing")
    p.set_defaults(func=cmd_generate)


def backend_options(a: argparse.Namespace) -> dict:
    """--backend-option pairs plus the --base-url / --concurrency shortcuts."""
    options = parse_backend_options(a.backend_option)
    if a.base_url:
        options["base_url"] = a.base_url
    if a.concurrency is not None:
        if a.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {a.concurrency}")
        options["concurrency"] = a.concurrency
    return options


def cmd_generate(a: argparse.Namespace) -> int:
    from charter.generate import generate

    cfg = GenerateConfig.load(a.config, {**given(a, GenerateConfig), "backend_options": backend_options(a)})
    if cfg.rounds == 0:
        print("warning: rounds is 0: red-team prompts get initial answers only (no critiques or revisions), "
              "so `export --format dpo` will have no rows and `--format sft` only helpfulness answers", file=sys.stderr)
    print(f"charter generate: model={cfg.model} backend={cfg.backend} format={cfg.format} rounds={cfg.rounds} "
          f"critique={cfg.critique} -> {cfg.out}", file=sys.stderr)
    if a.dry_run:
        from charter.generate import settings_from
        from charter.pipeline.workload import dry_run

        projection = dry_run(cfg, settings_from(cfg), force=a.force)
        print(f"dry run: {projection.line()}; nothing written")
        print(redact("checked: " + "; ".join(projection.checked)))  # a model may be a URL with a key
        return 0
    summary = generate(cfg, force=a.force, progress=not a.quiet)
    print(redact(summary.line()))  # it quotes records' errors
    print(cost_line(cfg))
    return 1 if summary.failures else 0


def cost_line(cfg: GenerateConfig) -> str:
    """What the whole run cost so far (every session's records) and what 10,000 such prompts would."""
    from dataclasses import asdict

    from charter.pipeline.cost import RunCost, engine_device, engine_gpus, run_cost
    from charter.runs.runread import cached, iter_run

    gpus = engine_gpus(cfg.to_dict())
    cost = cached(cfg.out, f"cost_gpus{gpus}", lambda: asdict(run_cost(iter_run(cfg.out), gpus)))
    return RunCost(**{**cost, "device": engine_device(cfg.to_dict())}).line()  # this session's device
