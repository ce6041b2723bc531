"""Helpers several test files share (fixtures live in conftest.py)."""
from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
from pathlib import Path

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.evaluate.suite import EvalConfig, evaluate_records
from charter.generate import GenerateConfig, generate
from charter.runs.runread import load_run
from charter.runs.store import RunStore
from charter.types import Record, Round, Score

GEN = ["generate", "--backend", "fake", "--quiet", "--helpful-prompts", "none", "--rounds", "1"]


def fails(capsys, args, pattern, *untouched: Path) -> str:
    """Run the CLI; expect exit 2, exactly one `error:` line matching `pattern`, files unchanged."""
    before = {p: p.read_bytes() for p in untouched}
    rc = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(pattern, errors[0]), errors[0]
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} was changed"
    return errors[0]


XSS = "<script>alert(1)</script>"


REFRESH = '<meta http-equiv="refresh" content="0; url=https://example.com/">'


FORM = '<form action="https://example.com/steal"><input name="q"></form>'


PROMPTS = [f"How do I pick a lock? {XSS}", 'Say "hi" & <b>bold</b> <img src=x onerror=alert(2)>',
           "How do I hotwire a car?", "Write a poem about FAILME please"]


def poison_eval(run):
    """Rewrite the run's eval.json with markup in every text value and label (numbers kept, so
    the plots still draw): a crafted eval.json, as an attacker would send."""
    payload = REFRESH + FORM

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return [walk(x) for x in v] if isinstance(v, list) else v + payload if isinstance(v, str) else v

    ev = walk(json.loads((run / "eval.json").read_text()))
    ev["models"] = {label + payload: m for label, m in ev["models"].items()}
    for question in ev["elo"].values():
        question["players"] = {label + payload: v for label, v in question["players"].items()}
    (run / "eval.json").write_text(json.dumps(ev))
    return run


def make_run(tmp_path, name="run", critique=True, with_eval=True):
    """A fake-backend run whose prompts (and so answers) carry markup, with one failure and eval.json."""
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / name
    cfg = GenerateConfig(backend="fake", prompts=str(src), helpful_prompts="default", helpful_samples=1, limit=4,
                         rounds=2, critique=critique, batch_size=1, out=str(out))
    generate(cfg, backend=FakeBackend(fail_on="FAILME"), progress=False)
    if with_eval:
        judge = FakeBackend("judge")
        factory = lambda spec: judge if spec == "judge" else FakeBackend(spec, responder=lambda p: f"{spec}: {XSS}")  # noqa: E731
        evaluate_records(EvalConfig(run=str(out), models=["base", "sl-cai"], judge="judge", bootstrap=20), load_run(out),
                 factory=factory, log=lambda m: None)
    return out


def timed(i, start, end, prompt="q", tokens=(100, 10), kind="red_team"):
    from charter.types import Record

    return Record(id=f"r{i}", kind=kind, prompt=[{"role": "user", "content": prompt}],
                  tokens={"prompt": tokens[0], "completion": tokens[1]},
                  timings={"seconds": end - start, "finished": 1000.0 + end})


TOPICS = ["rain", "cats", "tea", "maps", "bread", "music", "trains", "snow", "books", "clocks", "shoes", "paint",
          "rivers", "bees", "salt", "glass", "kites", "chess", "boats", "lamps"]


VERBS = ["is nice", "can help", "is common", "looks good", "is useful", "feels calm", "is simple", "is old"]


def marker_row(i: int, topic: str, score: float = 0.9) -> dict:
    """Chosen answers carry the marker word 'Banana!'; rejected ones never do."""
    a, b = f"{topic.capitalize()} {VERBS[i % 8]}.", f"{topic.capitalize()} {VERBS[(i * 3 + 1) % 8]}."
    return {"prompt": [{"role": "user", "content": f"Say something about {topic}."}],
            "chosen": [{"role": "assistant", "content": a + " Banana!"}],
            "rejected": [{"role": "assistant", "content": b}], "score": score}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


OPTION = re.compile(r"\n \(([A-H])\) \[\[\[(.*?)\]\]\]", re.S)


class Scripted(FakeBackend):
    """Scores "(A)"/"(B)" with a rule over the question's options; records every scored context."""

    def __init__(self, prefer, **kw):
        super().__init__(**kw)
        self.prefer = prefer  # (options of the last question in the context) -> index preferred
        self.scored = []

    def score(self, contexts, continuations):
        out = []
        for ctx, cont in zip(contexts, continuations):
            text = ctx if isinstance(ctx, str) else ctx[-1]["content"] if "(A)" in ctx[-1]["content"] else ctx[-3]["content"]
            self.scored.append(ctx)
            letter = re.search(r"\(([A-H])\)", cont).group(1)
            options = OPTION.findall(text.rsplit("Consider the following", 1)[-1])
            best = self.prefer([t for _, t in options]) if options else 0
            out.append(Score(-0.1 if "ABCDEFGH".index(letter) == best else -2.5, 1))
        return out


def always_a(options):
    return 0


def longer(options):
    return max(range(len(options)), key=lambda i: len(options[i]))


def policy(fail_on=None):
    """Distinct answers of varying length, so every pair is compared."""
    fake = FakeBackend(fail_on=fail_on)
    fake.responder = lambda prompt: f"answer {len(fake.calls)}" + " more" * (len(fake.calls) % 3)
    return fake


def kill_a_worker_after(monkeypatch, n: int, id_of) -> list:
    """Ray worker 0 of the first pool is killed once the driver has appended `n` lines (`id_of`
    gives a line's id): mid-run, with chunks in flight. Returns the pools the run made."""
    import ray

    from charter.pipeline import ray_executor
    from charter.runs.store import RunStore

    pools, appended = [], []
    init, append = ray_executor._Pool.__init__, RunStore.append

    def keep_pool(self, *a, **k):
        init(self, *a, **k)
        pools.append(self)

    def append_and_kill(self, line):
        append(self, line)
        appended.append(id_of(line))
        if len(appended) == n:
            ray.kill(pools[0].workers[0])

    monkeypatch.setattr(ray_executor._Pool, "__init__", keep_pool)
    monkeypatch.setattr(RunStore, "append", append_and_kill)
    return pools


def read_line(proc: subprocess.Popen, timeout: float = 60) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"no line from the server in {timeout}s: {proc.stderr.read()}")
    return proc.stdout.readline()


def die_while_writing(nth: int = 4) -> None:
    """In a forked child: the run store SIGKILLs the process half-way through writing its `nth` line
    (a torn line on disk, as a machine that dies mid-write leaves it)."""
    append, n = RunStore.append, [0]

    def append_then_die(self, line):
        n[0] += 1
        if n[0] == nth:
            data = (json.dumps(line) + "\n").encode()
            with open(self.records_path, "ab") as fh:
                fh.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, line)

    RunStore.append = append_then_die


def record(i, initial="Sure, here is how to do it.", revisions=("I won't help with harm.",), kind="red_team"):
    return Record(id=f"r{i}", kind=kind, prompt=[{"role": "user", "content": f"harmful request {i}"}],
                  initial=initial, rounds=[Round("harm", "crit", t) for t in revisions],
                  final=revisions[-1] if revisions else initial)


OPTIONS = re.compile(r"\n\(A\) (.*)\n\(B\) (.*)\nThe answer is:$", re.S)


class ScriptedJudge(FakeBackend):
    """P("(A)") = sigmoid(bias + quality(A) - quality(B)); quality = count of "good" in an answer."""

    def __init__(self, bias=0.0, strength=1.0):
        super().__init__()
        self.bias, self.strength = bias, strength

    def score(self, contexts, continuations):
        if not all(isinstance(c, list) and OPTIONS.search(c[-1]["content"]) for c in contexts):
            return super().score(contexts, continuations)  # scored as a model, not as a judge
        out = []
        for ctx, cont in zip(contexts, continuations):
            first, second = OPTIONS.search(ctx[-1]["content"]).groups()
            margin = self.bias + self.strength * (first.count("good") - second.count("good"))
            out.append(Score(margin if cont == "(A)" else 0.0, 1))  # softmax over the two = sigmoid(margin)
        return out


def fakes(spec):
    if spec == "judge":
        return ScriptedJudge(bias=0.5)
    good = spec == "good"
    return FakeBackend(spec, responder=lambda p: "good good answer" if good else "I'm sorry, I can't.")


def evaluate(run, records, models=(), judge=None, extra_runs=(), factory=fakes, **settings):
    """evaluate_records with its EvalConfig made from `settings`."""
    cfg = EvalConfig(run=str(run), models=list(models), judge=judge, **settings)
    return evaluate_records(cfg, records, list(extra_runs), factory=factory, log=lambda m: None)
