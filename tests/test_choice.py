"""Multiple-choice option probabilities: option_probs goes through Backend.choose, and the vLLM
backend's one-token plan of a question (its engine-free part; the engine: test_vllm_backend.py)."""
from __future__ import annotations

import math

from charter.backends.fake import FakeBackend
from charter.backends.vllm_backend import choice_plan
from charter.choice import option_probs


class Chooser(FakeBackend):
    """Answers multiple-choice questions from a table, never by scoring options."""

    def __init__(self, logps):
        super().__init__()
        self.logps, self.asked = logps, []

    def choose(self, contexts, options):
        self.asked.append((list(contexts), [list(o) for o in options]))
        return [list(self.logps) for _ in contexts]

    def score(self, contexts, continuations):
        raise AssertionError("option_probs scored options instead of asking choose")


def test_option_probs_asks_the_backends_choose():
    b = Chooser([math.log(0.2), math.log(0.6)])
    probs = option_probs(b, ["Q1 The answer is:", [{"role": "user", "content": "Q2"}]])
    assert [round(p, 6) for p in probs[0]] == [0.25, 0.75] and probs[1] == probs[0]
    assert b.asked[0][1] == [[" (A)", " (B)"], ["(A)", "(B)"]]  # raw text gets the space, chat does not


def test_option_probs_on_a_scoring_backend_normalises_the_scores():
    b = FakeBackend()
    probs = option_probs(b, ["Which is better? The answer is:"] * 2, n_options=3)
    assert len(probs) == 2 and all(len(p) == 3 and abs(sum(p) - 1) < 1e-9 for p in probs)


def test_choice_plan_puts_the_shared_tokens_in_the_prompt():
    # context 1 2 3; options " (" "A" ")" and " (" "B" ")": the prompt ends at " (", the options' tokens follow
    plan = choice_plan([([1, 2, 3, 9, 10, 8], 3), ([1, 2, 3, 9, 11, 8], 3), ([1, 2, 3, 9, 12, 8], 3)])
    assert plan == ([1, 2, 3, 9], [10, 11, 12])
    assert choice_plan([([1, 2, 10], 1), ([1, 2, 11, 5, 6], 3)]) == ([1, 2], [10, 11])  # lengths may differ


def test_choice_plan_scores_in_full_what_one_token_cannot_tell_apart():
    assert choice_plan([([1, 2, 10], 1)]) is None  # one option: nothing to choose
    assert choice_plan([([1, 2, 10], 1), ([1, 2, 10, 11], 2)]) is None  # one option is a prefix of the other
    assert choice_plan([([1, 2, 10], 1), ([1, 2, 10], 1)]) is None  # the same option twice
    # the context's last token merged with one option's first: the options start at different tokens
    assert choice_plan([([1, 2, 10], 1), ([1, 7, 11], 2)]) is None
