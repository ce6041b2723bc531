"""Arguments from Python that used to end in a bare TypeError or pass unchecked: a prompt that is
not a prompt, and stop strings given as one string."""
from __future__ import annotations

import pytest

import charter
from charter.backends.fake import FakeBackend
from charter.errors import ConfigError, InputError
from charter.types import Sampling


@pytest.mark.parametrize("bad", [None, 5, 2.5, b"bytes", {"x"}])
def test_a_prompt_that_is_not_a_prompt_is_an_input_error(bad):
    with FakeBackend() as llm, pytest.raises(InputError, match=r"prompts\[1\]: a prompt must be"):
        charter.critique_revise(llm, ["fine", bad], rounds=1)


@pytest.mark.parametrize("stop", ["abc", ("ok", 3), [""], 7])
def test_stop_must_be_a_list_of_strings(stop):
    with pytest.raises(ConfigError, match="stop"):
        Sampling(stop=stop)


@pytest.mark.parametrize("kwargs", [{"max_tokens": "5"}, {"max_tokens": True}, {"temperature": "hot"},
                                    {"seed": 1.5}, {"logprobs": "yes"}])
def test_sampling_values_of_the_wrong_type(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        Sampling(**kwargs)


def test_a_list_of_stop_strings_is_kept_as_a_tuple():
    s = Sampling(stop=["\n\nHuman:", "###"])
    assert s.stop == ("\n\nHuman:", "###") and hash(s)
    assert Sampling(**s.to_dict()) == s
