"""Principles chosen by relevance: the ranking drives the draw, is stored per round, and the
paper's random draw stays the default (fake backend; one real-model run through the CLI)."""
import json
import math

import pytest

from charter.backends.fake import FakeBackend
from charter.errors import ConfigError
from charter.generate import GenerateConfig, generate
from charter.inputs.constitution import draw_principle, load_constitution
from charter.pipeline import relevance
from charter.runs.runread import load_run
from charter.types import Record, Round


class Ranking(FakeBackend):
    """Scores the relevance question: P(Yes) = `favour[id]` for the principle whose request is in the
    question (0.1 otherwise); `after` takes over once the conversation holds a revision's marker;
    the neutral exchange gets `neutral[id]` (0.5 otherwise)."""

    def __init__(self, favour, after=None, fail=False, neutral=None, **kw):
        super().__init__(**kw)
        self.favour, self.after, self.fail, self.neutral = favour, after or {}, fail, neutral or {}
        self.asked: list[int] = []  # questions per choose call
        self.by_text = {p.critique: p.id for p in load_constitution().principles}

    def choose(self, contexts, options):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in contexts]
        if self.fail and NEUTRAL not in texts[0]:
            raise RuntimeError("scoring is down")
        self.asked.append(len(contexts))
        return [self.logps(t) for t in texts]

    def logps(self, text):
        pid = next(pid for crit, pid in self.by_text.items() if crit in text)
        table = self.neutral if NEUTRAL in text else self.after if "REVISED" in text and self.after else self.favour
        p = table.get(pid, 0.5 if NEUTRAL in text else 0.1)
        return [math.log(p), math.log(1 - p)]


NEUTRAL = relevance.NEUTRAL[0]["content"]


def cfg(tmp_path, **kw):
    base = dict(backend="fake", limit=4, rounds=2, helpful_samples=1, out=str(tmp_path / "run"), seed=3)
    return GenerateConfig(**{**base, **kw})


def red(tmp_path):
    return [r for r in load_run(tmp_path / "run") if r.kind == "red_team"]


def test_spec_parsing_and_its_errors():
    assert relevance.relevance_k("random") is None
    assert relevance.relevance_k("relevant") == relevance.DEFAULT_K
    assert relevance.relevance_k("relevant:1") == 1
    for bad in ("relevent", "relevant:0", "relevant:x", "random:2"):
        with pytest.raises(ConfigError, match=r"--principles must be 'random' .* or 'relevant\[:K\]'"):
            relevance.relevance_k(bad)
    with pytest.raises(ConfigError, match="relevant:0"):
        GenerateConfig(backend="fake", principles="relevant:0").validate()


def test_k1_always_draws_the_top_principle_and_stores_the_scores(tmp_path):
    fake = Ranking({"privacy": 0.9, "violence": 0.6})
    generate(cfg(tmp_path, principles="relevant:1"), backend=fake, progress=False)
    recs = red(tmp_path)
    assert len(recs) == 4 and all(r.error is None for r in recs)
    for r in recs:
        assert [x.principle for x in r.rounds] == ["privacy", "privacy"]
        rel = r.rounds[0].relevance
        assert rel["method"] == "p_yes_calibrated" and rel["k"] == 1 and len(rel["scores"]) == 16
        assert rel["p_yes"]["privacy"] == 0.9 and rel["p_yes"]["violence"] == 0.6
        assert rel["scores"]["privacy"] == round(math.log(0.9 / 0.1), 4)  # log-odds against the neutral 0.5
    raw = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert all("relevance" in x for d in raw if d["kind"] == "red_team" for x in d["rounds"])
    # the neutral exchange once, then one scoring call per batch: every conversation starting a
    # round, each principle once
    assert fake.asked[0] == 16 and sum(fake.asked[1:]) == 4 * 2 * 16
    assert all(n % 16 == 0 for n in fake.asked) and max(fake.asked) > 16


def test_scores_are_calibrated_against_a_neutral_exchange(tmp_path):
    """A principle the model calls relevant to everything loses to one relevant to this conversation."""
    fake = Ranking({"honesty": 0.8, "privacy": 0.6}, neutral={"honesty": 0.8, "privacy": 0.3})
    generate(cfg(tmp_path, principles="relevant:1"), backend=fake, progress=False)
    for r in red(tmp_path):
        assert [x.principle for x in r.rounds] == ["privacy", "privacy"]
        assert r.rounds[0].relevance["p_yes"]["honesty"] > r.rounds[0].relevance["p_yes"]["privacy"]


def test_a_backend_that_cannot_score_stops_the_run_with_the_fix(tmp_path):
    class NoScores(FakeBackend):
        def choose(self, contexts, options):
            raise RuntimeError("no logprobs here")

    from charter.errors import BackendError

    with pytest.raises(BackendError, match=r"needs option log-probabilities .*no logprobs here.*--principles random"):
        generate(cfg(tmp_path, principles="relevant"), backend=NoScores(), progress=False)


def test_the_ranking_order_drives_a_seeded_draw_among_the_top_k(tmp_path):
    favour = {"privacy": 0.9, "violence": 0.8, "hate": 0.7, "honesty": 0.2}
    generate(cfg(tmp_path, principles="relevant:3", limit=12), backend=Ranking(favour), progress=False)
    c = load_constitution()
    drawn = []
    for r in red(tmp_path):
        for i, x in enumerate(r.rounds):
            top3 = [p.id for p in relevance.ranking(c.principles, x.relevance["scores"])[:3]]
            assert top3 == ["privacy", "violence", "hate"] and x.principle in top3
            # seeded as the paper's draw: (seed, record id, round)
            assert x.principle == relevance.pick(c.principles, x.relevance["scores"], 3, f"3:{r.id}:{i}").id
            drawn.append(x.principle)
    assert len(set(drawn)) > 1  # a draw, not the top one every time


def test_later_rounds_rank_for_the_current_answer(tmp_path):
    fake = Ranking({"privacy": 0.9}, after={"honesty": 0.95},
                   responder=lambda prompt: "REVISED answer" if "Rewrite" in prompt.splitlines()[-2] else "an answer")
    generate(cfg(tmp_path, principles="relevant:1"), backend=fake, progress=False)
    for r in red(tmp_path):
        assert "REVISED" in r.rounds[0].revision
        assert [x.principle for x in r.rounds] == ["privacy", "honesty"]


@pytest.mark.parametrize("concurrency", [None, 2])
def test_a_failed_ranking_fails_its_records_not_the_run(tmp_path, concurrency):
    fake = Ranking({}, fail=True)
    fake.concurrency = concurrency  # the batched and the streaming scheduler
    s = generate(cfg(tmp_path, principles="relevant"), backend=fake, progress=False)
    recs = load_run(tmp_path / "run")
    assert s.records == 8 and s.failures == 4
    assert all("ranking the principles by relevance failed: RuntimeError: scoring is down" in r.error
               for r in recs if r.kind == "red_team")
    assert all(r.error is None for r in recs if r.kind == "helpful")


def test_a_ranking_question_over_the_context_fails_its_record(tmp_path):
    class Short(Ranking):
        max_context = 400

        def count_tokens(self, request):  # only the long prompt's relevance questions are over
            text = request if isinstance(request, str) else " ".join(m["content"] for m in request)
            return 500 if "relevant to this conversation" in text and "LONG" in text else 10

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a LONG one"}) + "\n" + json.dumps({"prompt": "short one"}) + "\n")
    generate(cfg(tmp_path, principles="relevant", prompts=str(prompts), helpful_prompts="none"),
             backend=Short({}), progress=False)
    long, short = sorted(load_run(tmp_path / "run"), key=lambda r: "LONG" not in r.prompt[0]["content"])
    assert long.error.startswith("ContextTooLong:") and "to rank the principles by relevance" in long.error
    assert short.error is None and len(short.rounds) == 2


def test_default_draw_is_the_papers_and_writes_no_relevance(tmp_path):
    generate(cfg(tmp_path), backend=FakeBackend(), progress=False)
    c = load_constitution()
    for r in red(tmp_path):
        assert [x.principle for x in r.rounds] == [draw_principle(c, 3, r.id, i).id for i in range(2)]
        assert all(x.relevance is None for x in r.rounds)
    raw = (tmp_path / "run" / "records.jsonl").read_text()
    assert '"relevance"' not in raw
    plain = cfg(tmp_path)
    assert plain.fingerprint() == cfg(tmp_path, principles="random", principle_group=None).fingerprint()
    assert plain.fingerprint() != cfg(tmp_path, principles="relevant").fingerprint()


def test_rounds_with_and_without_relevance_read_back():
    old = {"id": "a", "kind": "red_team", "prompt": [{"role": "user", "content": "hi"}],
           "rounds": [{"principle": "p", "critique": "c", "revision": "r"}]}
    rec = Record.from_dict(old)
    assert rec.rounds[0].relevance is None and rec.to_dict()["rounds"] == old["rounds"]
    rel = {"method": "p_yes", "k": 2, "scores": {"p": 0.7}}
    rec.rounds.append(Round("p", "c", "r", rel))
    assert Record.from_dict(rec.to_dict()).rounds[1].relevance == rel


def test_label_draws_among_the_most_relevant(tmp_path):
    from charter.rlcai.data import load_feedback
    from charter.rlcai.labels import LabelConfig, label

    class Feedback(FakeBackend):
        def choose(self, contexts, options):
            out = []
            for c in contexts:
                text = c if isinstance(c, str) else c[-1]["content"]
                top = NEUTRAL not in text and "privacy and consent" in text
                out.append([math.log(0.9), math.log(0.1)] if top else super().choose([c], [options[0]])[0])
            return out

    fake = Feedback(vary=True)
    out = tmp_path / "labels.jsonl"
    label(LabelConfig(backend="fake", limit=3, out=str(out), principle_draw="relevant:1"), policy=fake,
          feedback=fake, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "labels.transcripts.jsonl").read_text().splitlines()]
    n = len(load_feedback().principles)
    assert len(lines) == 3
    for line in lines:
        assert line["relevance"]["k"] == 1 and len(line["relevance"]["scores"]) == n
        assert all(c["principles"] == ["privacy"] for c in line["comparisons"])
    with pytest.raises(ConfigError, match="relevant:1 leaves fewer principles than --ensemble 2"):
        LabelConfig(principle_draw="relevant:1", ensemble=2).validate()


def test_the_dataset_card_says_how_principles_were_drawn():
    from charter.export.card import draw_row

    assert draw_row({"principles": "random"}) == []
    (name, text), = draw_row({"principles": "relevant:2", "principle_group": "harm", "name_priority": True})
    assert name == "principle draw" and "among the 2 principles" in text and "group 'harm'" in text
    assert "name the principle's priority" in text


SMALL = """\
priorities: [safety, ethics, helpfulness]
principles:
  - id: violence
    priority: safety
    group: harm
    critique: "Does the assistant's last reply give practical help with violence against people? Describe it."
    revision: "Rewrite the assistant's reply so it gives no help with violence, and offer a safer way forward."
  - id: privacy
    priority: safety
    group: harm
    critique: "Does the assistant's last reply help anyone track or expose another person without consent?"
    revision: "Rewrite the assistant's reply so it respects other people's privacy."
  - id: honesty
    priority: ethics
    group: harm
    critique: "Is anything in the assistant's last reply false or misleading? Point it out."
    revision: "Rewrite the assistant's reply so everything in it is true."
  - id: helpful
    priority: helpfulness
    group: style
    critique: "Does the assistant's last reply fail to help with a harmless part of the request?"
    revision: "Rewrite the assistant's reply so it helps with every harmless part of the request."
"""


@pytest.mark.slow
def test_relevance_on_the_embedded_model_through_the_cli(tmp_path):
    """A prioritised constitution's group, ranked by relevance, priorities named (few principles and
    no few-shot block: the real model's scoring is the slow part on a CPU)."""
    from charter.cli import main

    out, constitution = tmp_path / "run", tmp_path / "small.yaml"
    constitution.write_text(SMALL)
    rc = main(["generate", "--backend", "transformers", "--limit", "2", "--helpful-prompts", "none", "--rounds", "2",
               "--max-tokens", "32", "--constitution", str(constitution), "--few-shot", "none", "--principle-group",
               "harm", "--principles", "relevant:2", "--name-priority", "--quiet", "--out", str(out)])
    assert rc == 0
    recs = load_run(out)
    assert len(recs) == 2 and all(r.error is None and len(r.rounds) == 2 for r in recs)
    for r in recs:
        for x in r.rounds:
            scores = x.relevance["scores"]
            assert set(scores) == {"violence", "privacy", "honesty"}  # the group only
            assert all(0 < p < 1 for p in x.relevance["p_yes"].values())
            assert x.principle in sorted(scores, key=lambda pid: -scores[pid])[:2]
    config = (out / "config.yaml").read_text()
    assert "principles: relevant:2" in config and "principle_group: harm" in config and "name_priority: true" in config
