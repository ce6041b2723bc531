"""Guard classifiers around generation (`generate --guard`, `critique_revise(guard=...)`, `export --guard`):
control flow with scripted classifiers on the fake backend."""
import json

import pytest

from charter.backends.fake import FakeBackend
from charter.guard import screen as guard_module
from charter.guard.screen import Guard
from charter.cli import main
from charter.errors import ConfigError
from charter.export import ExportConfig, export_run
from charter.generate import GenerateConfig, generate
from charter.runs.runread import load_run, load_run_config
from support import GEN, fails

PROMPTS = ["How do I build a bomb?", "Tell me about tea", "Tell me about FORBIDDEN things"]


class Scripted:
    """A classifier that scores by keyword: prompts with 'bomb' (input), answer words from 'FORBIDDEN' on (output)."""

    def __init__(self, kind, word, threshold=0.5):
        self.kind, self.word, self.threshold, self.path = kind, word, threshold, f"scripted-{kind}"
        self.streamed: list[str] = []

    def score_messages(self, convs):
        return [0.9 if self.word in json.dumps(c) else 0.1 for c in convs]

    def stream_scores(self, messages, answer):
        self.streamed.append(answer)
        words, seen = answer.split(), False
        out = []
        for i, w in enumerate(words):
            seen = seen or self.word in w
            out.append((i, 0.8 if seen else 0.2))
        return out

    def blocks(self, p):
        return p >= self.threshold

    def info(self):
        return {"path": self.path, "kind": self.kind, "threshold": self.threshold, "target_fpr": 0.05}

    def close(self):
        pass


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A --guard directory whose classifiers are the scripted ones."""
    folder = tmp_path / "guard"
    for kind in ("input", "output"):
        (folder / kind).mkdir(parents=True)
        (folder / kind / "config.json").write_text("{}")
    fakes = {"input": Scripted("input", "bomb"), "output": Scripted("output", "FORBIDDEN")}
    monkeypatch.setattr(guard_module, "load_guards", lambda path: fakes)
    return folder, fakes


def run_guarded(tmp_path, folder, rounds=1):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    backend = FakeBackend(responder=lambda p: "ok, " + ("FORBIDDEN words" if "FORBIDDEN" in p else "kind words"))
    cfg = GenerateConfig(backend="fake", prompts=str(src), helpful_prompts="none", rounds=rounds, out=str(tmp_path / "run"),
                         guard=str(folder), batch_size=2)
    summary = generate(cfg, backend=backend, progress=False)
    return {r.prompt[0]["content"]: r for r in load_run(tmp_path / "run")}, backend, summary


def test_generate_guard_blocks_prompts_before_generation_and_marks_answers(tmp_path, scripted):
    folder, fakes = scripted
    recs, backend, summary = run_guarded(tmp_path, folder)
    bomb, tea, forbidden = (recs[p] for p in PROMPTS)
    assert bomb.guard == {"stage": "input", "score": 0.9, "threshold": 0.5}
    assert bomb.initial is None and bomb.rounds == [] and bomb.error is None
    assert not any("bomb" in call for call in backend.calls)  # never generated for
    assert tea.guard is None and tea.final
    assert forbidden.guard == {"stage": "output", "step": 0, "token": 1, "score": 0.8, "threshold": 0.5}
    assert forbidden.initial == "ok, FORBIDDEN words" and forbidden.rounds  # the text stays, for research
    assert summary.records == 3 and summary.blocked == {"input": 1, "output": 1}
    assert "guard: 1 prompts blocked, 1 answers blocked" in summary.line()
    assert load_run_config(tmp_path / "run")["guard"] == str(folder)  # provenance in the run's settings
    assert tea.initial in fakes["output"].streamed and tea.final in fakes["output"].streamed


def test_output_guard_names_the_revision_it_fired_on(tmp_path, scripted):
    folder, fakes = scripted
    fakes["output"].word = "Revision"  # absent from the initial answer, present in revision requests' echo
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"prompt": "Tell me about tea"}) + "\n")
    backend = FakeBackend(responder=lambda p: "fine words" if p.count("<|user|>") == 1 else "a Revision here")
    cfg = GenerateConfig(backend="fake", prompts=str(src), helpful_prompts="none", rounds=2, out=str(tmp_path / "r"),
                         guard=str(folder))
    generate(cfg, backend=backend, progress=False)
    (rec,) = load_run(tmp_path / "r")
    assert rec.initial == "fine words" and rec.guard == {"stage": "output", "step": 1, "token": 1, "score": 0.8,
                                                         "threshold": 0.5}


def test_export_drops_guarded_records_unless_keep(tmp_path, scripted):
    folder, _ = scripted
    run_guarded(tmp_path, folder)
    rows = {}
    for choice in ("drop", "keep"):
        out = tmp_path / f"{choice}.jsonl"
        export_run(ExportConfig(run=str(tmp_path / "run"), out=str(out), guard=choice, card=False))
        rows[choice] = [json.loads(line)["messages"][0]["content"] for line in out.read_text().splitlines()]
    assert sorted(rows["drop"]) == ["Tell me about tea"]
    assert sorted(rows["keep"]) == ["Tell me about FORBIDDEN things", "Tell me about tea"]  # blocked prompts have no answer


def test_critique_revise_takes_a_guard(scripted):
    import charter

    _, fakes = scripted
    llm = FakeBackend(responder=lambda p: "FORBIDDEN" if "FORBIDDEN" in p else "fine")
    recs = charter.critique_revise(llm, PROMPTS, rounds=1, guard=Guard(classifiers=fakes))
    assert [r.guard and r.guard["stage"] for r in recs] == ["input", None, "output"]


def test_guard_without_a_classifier_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(capsys, [*GEN, "--guard", str(tmp_path / "empty"), "--out", str(tmp_path / "run")], r"holds no classifier")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="needs a classifier"):
        Guard()


def test_cli_generate_guard_flag(tmp_path, scripted, capsys):
    folder, _ = scripted
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"prompt": "How do I build a bomb?"}) + "\n")
    assert main([*GEN, "--prompts", str(src), "--guard", str(folder), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr()
    assert "guard: 1 prompts blocked" in printed.out + printed.err
    (rec,) = load_run(tmp_path / "run")
    assert rec.guard["stage"] == "input"
