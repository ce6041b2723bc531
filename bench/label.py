"""Benchmark: `charter label` and `charter eval-labeler` against the same jobs written by hand on vLLM.

    .venv/bin/python bench/label.py --limit 64 --max-tokens 128 --eval-limit 438 \\
        --fake-sizes 10000,100000,300000                                  # the full run
    .venv/bin/python bench/label.py --limit 1 --max-tokens 8 --rows label-transformers --fake-sizes 1000  # smoke

All six engine rows at --limit 4 --max-tokens 16 --eval-limit 8 took 19.5 min on a 2-core VM
shared with other jobs (each vLLM row starts its own engine); --rows picks fewer.

One run prints one table. Every row runs in its own process (vLLM needs a fresh one):
  * label: `charter.label(LabelConfig(limit, max_tokens, out))` with the default backend (`auto`:
    vLLM, except for runs so short that transformers finishes first), the same on
    backend="transformers", and the script a user writes by hand with vLLM's offline `vllm.LLM`:
    every answer sampled with `LLM.generate` (2 per prompt), then every feedback question, both
    option orders, scored with `prompt_logprobs` on context + "(A)" and context + "(B)". The
    script asks Charter's own questions (charter.rlcai.questions: default principles drawn as
    Charter draws them, default few-shot block, chat format), so the work is equal; its engine has
    Charter's settings for this machine (engine_defaults, engine_env), so the rows differ only in
    how the job drives the engine.
  * eval-labeler on the paper's 438 HHH comparisons (../shared/data/anthropic-cai): the same three
    rows (`charter.evaluate_labeler(LabelerEvalConfig(...))`; by hand: `prompt_logprobs` on every
    option's context, both orders).
  * fake backend (instant answers: what is left is Charter's own cost) at --fake-sizes comparisons
    (one prompt, two answers, one comparison each), `charter label` on the command line: peak RSS
    (VmHWM, read by the command itself at exit), the resume of the finished run, and the overhead
    per comparison (the run's wall time, process start included, over its comparisons).
Columns: "start s" is the engines' start inside the row (backend constructors, `LLM(...)`); rates
are comparisons per second of the whole row ("/s") and after the start ("/s after start").
A row that fails prints its error in place of numbers and the bench goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
HHH = HERE.parent.parent / "shared" / "data" / "anthropic-cai" / "438HHHEvaluations.jsonl"
LABEL_ROWS = {"label-default": "label: charter.label, default backend",
              "label-transformers": "label: charter.label, transformers",
              "label-by-hand": "label: by hand, vllm.LLM generate + prompt_logprobs"}
EVAL_ROWS = {"eval-default": "eval-labeler: charter, default backend",
             "eval-transformers": "eval-labeler: charter, transformers",
             "eval-by-hand": "eval-labeler: by hand, vllm.LLM prompt_logprobs"}
ENGINE_ROWS = {**LABEL_ROWS, **EVAL_ROWS}


# ---- the rows, each run in a child process (--row) --------------------------------------------------


def time_starts(starts: list) -> None:
    """Every engine constructor this process runs adds (backend, seconds) to `starts`."""
    from charter.backends.hf import HFBackend
    from charter.backends.vllm_backend import VLLMBackend

    for cls in (HFBackend, VLLMBackend):
        def timed(self, *a, _init=cls.__init__, **k):
            t0 = time.perf_counter()
            _init(self, *a, **k)
            starts.append((self.name, time.perf_counter() - t0))
        cls.__init__ = timed


def label_charter(args, work: Path, backend: str | None) -> int:
    import charter

    cfg = charter.LabelConfig(limit=args.limit, max_tokens=args.max_tokens, out=str(work / "labels.jsonl"),
                              **({"backend": backend} if backend else {}))
    return charter.label(cfg, progress=False).rows


def eval_charter(args, work: Path, backend: str | None) -> int:
    import charter

    cfg = charter.LabelerEvalConfig(file=str(args.hhh), limit=args.eval_limit, out=str(work / "labeler.json"),
                                    plot="none", **({"backend": backend} if backend else {}))
    return charter.evaluate_labeler(cfg).n_comparisons


def by_hand_llm(starts: list):
    """vLLM's offline engine as a user starts it, with Charter's settings for this machine."""
    from vllm import LLM

    from charter.backends.vllm_engine import engine_defaults, engine_env
    from charter.backends.models import resolve_hf_checkpoint

    os.environ.update({"VLLM_LOGGING_LEVEL": "ERROR", **engine_env()})
    t0 = time.perf_counter()
    llm = LLM(model=resolve_hf_checkpoint("embedded"), **engine_defaults(None))
    starts.append(("vllm.LLM", time.perf_counter() - t0))
    return llm


def prompt_logprob_sums(llm, requests: list[tuple[list[int], int]]) -> list[float]:
    """Log-prob of the last n tokens of each prompt, read off prompt_logprobs."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in requests],
                        SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    return [sum(o.prompt_logprobs[k][ids[k]].logprob for k in range(len(ids) - n, len(ids)))
            for o, (ids, n) in zip(outs, requests)]


def option_requests(tok, context: str, options: list[str]) -> list[tuple[list[int], int]]:
    """context + option token ids per option, and the option's token count."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return [(full, len(full) - len(ctx)) for full in (tok(context + o, add_special_tokens=False)["input_ids"]
                                                      for o in options)]


def label_by_hand(args, work: Path, starts: list) -> int:
    """Phase 1: both answers of every prompt; phase 2: every question, both orders, both options."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from charter.choice import softmax
    from charter.inputs.prompts import load_prompts
    from charter.rlcai.data import draw_principles, load_feedback
    from charter.rlcai.questions import direct_context, few_shot_prefix, pair_preference, question

    llm = by_hand_llm(starts)
    tok = llm.get_tokenizer()
    render = lambda msgs: tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    items = load_prompts("default", "red_team", None, args.limit)
    prompts = [TokensPrompt(prompt_token_ids=tok(render(list(it.messages)), add_special_tokens=False)["input_ids"])
               for it in items]
    outs = llm.generate(prompts, SamplingParams(n=2, max_tokens=args.max_tokens, temperature=1.0, seed=0),
                        use_tqdm=False)
    fs = load_feedback("default", "default")
    prefix = few_shot_prefix(fs.examples, "chat", False)
    requests, pairs = [], 0
    for it, out in zip(items, outs):
        x, y = (c.text.strip() for c in out.outputs)
        if not x or not y or x == y:  # Charter skips these too
            continue
        p = draw_principles(fs.principles, 0, f"{it.id}:0-1", 1)[0]
        for opts in ([x, y], [y, x]):
            context = render(direct_context(prefix, question(list(it.messages), p.text, opts), "chat"))
            requests += option_requests(tok, context, ["(A)", "(B)"])
        pairs += 1
    logps = prompt_logprob_sums(llm, requests)
    orders = [softmax(logps[k:k + 2]) for k in range(0, len(logps), 2)]
    scores = [pair_preference(orders[k], orders[k + 1]) for k in range(0, len(orders), 2)]
    (work / "by-hand.json").write_text(json.dumps(scores))
    return pairs


def eval_by_hand(args, work: Path, starts: list) -> int:
    """Every comparison of the file's first rows, both orders, every option scored."""
    from charter.choice import option_label
    from charter.rlcai.data import load_feedback
    from charter.rlcai.mc_file import comparisons, load_mc_file
    from charter.rlcai.questions import direct_context

    llm = by_hand_llm(starts)
    tok = llm.get_tokenizer()
    fs = load_feedback("default", "none")
    comps = [c for row in load_mc_file(args.hhh, args.eval_limit) for c in comparisons(row, str(args.hhh), fs)]
    requests = [r for c in comps for q, n, _, _ in c.orders
                for r in option_requests(tok, direct_context("", q, "text"), [" " + option_label(i) for i in range(n)])]
    logps = prompt_logprob_sums(llm, requests)
    (work / "by-hand.json").write_text(json.dumps(logps))
    return len(comps)


def run_row(name: str, args) -> dict:
    """One engine row in this process: comparisons, seconds, engine start seconds."""
    starts: list = []
    time_starts(starts)
    with tempfile.TemporaryDirectory(prefix="charter-bench-label-") as tmp:
        work, t0 = Path(tmp), time.perf_counter()
        if name.endswith("by-hand"):
            n = (label_by_hand if name.startswith("label") else eval_by_hand)(args, work, starts)
        else:
            backend = None if name.endswith("default") else "transformers"
            n = (label_charter if name.startswith("label") else eval_charter)(args, work, backend)
        wall = time.perf_counter() - t0
    return {"comparisons": n, "seconds": wall, "start": sum(s for _, s in starts),
            "engine": "+".join(dict.fromkeys(b for b, _ in starts)) or "-"}


def measure_row(name: str, args) -> dict:
    """Run one engine row in a fresh process; its result, or its error."""
    with tempfile.NamedTemporaryFile(suffix=".json") as res:
        cmd = [sys.executable, __file__, "--row", name, "--result", res.name, "--limit", str(args.limit),
               "--max-tokens", str(args.max_tokens), "--eval-limit", str(args.eval_limit), "--hhh", str(args.hhh)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
            return {"error": f"exit {proc.returncode}: {last[0][:150]}"}
        return json.loads(Path(res.name).read_text())


# ---- fake-backend rows: Charter's own cost ---------------------------------------------------------


def fake_row(n: int, work: Path) -> dict:
    """`charter label` on the fake backend over n prompts (n comparisons), then its resume."""
    sys.path.insert(0, str(HERE))
    from scale import CHARTER, run, write_prompts

    prompts, out = work / f"prompts-{n}.jsonl", work / f"labels-{n}" / "labels.jsonl"
    write_prompts(prompts, n)
    cmd = CHARTER + ["label", "--backend", "fake", "--policy", "fake", "--prompts", str(prompts), "--out", str(out),
                     "--max-tokens", "32", "--quiet", "--backend-option", "record_calls=false",
                     "--backend-option", "vary=true"]
    wall, rss = run(cmd)
    rows = sum(1 for _ in out.open())
    resume, resume_rss = run(cmd)
    return {"comparisons": rows, "seconds": wall, "rss": rss, "resume": resume, "resume_rss": resume_rss}


# ---- the table --------------------------------------------------------------------------------------


def print_engine_table(results: dict, args) -> None:
    print(f"\nmodel=embedded label: --limit {args.limit} prompts x 2 answers, --max-tokens {args.max_tokens}; "
          f"eval-labeler: --eval-limit {args.eval_limit} rows of {args.hhh.name}")
    print(f"{'row':54} {'engine':>18} {'comparisons':>11} {'seconds':>8} {'start s':>8} {'/s':>7} "
          f"{'/s after start':>14}")
    for name, r in results.items():
        label = ENGINE_ROWS[name]
        if "error" in r:
            print(f"{label:54} failed: {r['error']}")
            continue
        after = r["seconds"] - r["start"]
        print(f"{label:54} {r['engine']:>18} {r['comparisons']:11d} {r['seconds']:8.1f} {r['start']:8.1f} "
              f"{r['comparisons'] / r['seconds']:7.2f} {r['comparisons'] / after if after > 0 else 0:14.2f}")
    for job, rows in (("label", LABEL_ROWS), ("eval-labeler", EVAL_ROWS)):
        rate = {k: v["comparisons"] / (v["seconds"] - v["start"]) for k, v in results.items()
                if k in rows and "error" not in v and v["seconds"] > v["start"]}
        by_hand = rate.get(next(k for k in rows if k.endswith("by-hand")))
        for k in rows:
            if by_hand and k in rate and not k.endswith("by-hand"):
                print(f"{job}: {rows[k].split(', ', 1)[1]} / by hand, after start: {rate[k] / by_hand:.2f}x")


def print_fake_table(rows: list[dict]) -> None:
    print(f"\n{'fake backend: charter label':28} {'comparisons':>11} {'seconds':>8} {'overhead/comparison':>20} "
          f"{'peak RSS':>9} {'resume s':>9} {'resume RSS':>10}")
    for r in rows:
        print(f"{'':28} {r['comparisons']:11,} {r['seconds']:8.1f} {1000 * r['seconds'] / r['comparisons']:17.3f} ms "
              f"{r['rss']:6.0f} MB {r['resume']:9.1f} {r['resume_rss']:7.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=64, help="label: red-team prompts (2 answers, 1 comparison each)")
    ap.add_argument("--max-tokens", type=int, default=128, help="label: tokens per policy answer")
    ap.add_argument("--eval-limit", type=int, default=438, help="eval-labeler: first N rows of the HHH file")
    ap.add_argument("--rows", nargs="*", default=list(ENGINE_ROWS), choices=list(ENGINE_ROWS),
                    help="engine rows to run (default: all; none: only the fake rows)")
    ap.add_argument("--fake-sizes", default="10000,100000,300000", help="fake-backend comparisons ('' for none)")
    ap.add_argument("--hhh", type=Path, default=HHH, help="the 438 HHH comparisons file")
    ap.add_argument("--row", help=argparse.SUPPRESS)  # a child process: run this row only
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        Path(args.result).write_text(json.dumps(run_row(args.row, args)))
        return
    results = {}
    for name in args.rows:
        results[name] = measure_row(name, args)
        print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
    if results:
        print_engine_table(results, args)
    sizes = sorted(int(s.replace("_", "")) for s in args.fake_sizes.split(",") if s.strip())
    if sizes:
        with tempfile.TemporaryDirectory(prefix="charter-bench-label-") as tmp:
            print_fake_table([fake_row(n, Path(tmp)) for n in sizes])


if __name__ == "__main__":
    main()
