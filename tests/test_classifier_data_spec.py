"""Classifier constitutions read strictly, and the pieces of `classifier data` that need no model:
augmentation templates, request cleaning, deduplication and the split by seed query."""
from __future__ import annotations

import pytest

from charter.classifier.augment import AUGMENTATIONS, split_turns
from charter.classifier.data_steps import clean_request
from charter.classifier.dataset import dedup, split
from charter.classifier.spec import load_classifier_constitution
from charter.errors import InputError

GOOD = """name: mine
restricted:
  - id: bad-thing
    description: "Requests for the bad thing."
    examples: ["Do the bad thing."]
permitted:
  - id: good-thing
    description: "Questions about the good thing."
    examples: ["Explain the good thing."]
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_the_shipped_constitution_loads_with_six_restricted_and_six_permitted_categories():
    c = load_classifier_constitution("default")
    assert c.name == "charter-guard-default"
    assert len(c.restricted) == 6 and len(c.permitted) == 6
    assert {x.label for x in c.restricted} == {1} and {x.label for x in c.permitted} == {0}
    assert all(x.examples and x.description for x in c.categories)
    assert len({x.id for x in c.categories}) == 12
    assert c.category("cyberattacks").restricted and not c.category("security-defence").restricted


def test_a_file_of_our_own_loads(tmp_path):
    c = load_classifier_constitution(write(tmp_path, GOOD))
    assert c.name == "mine" and [x.id for x in c.categories] == ["bad-thing", "good-thing"]
    assert c.category("good-thing").examples == ("Explain the good thing.",)


@pytest.mark.parametrize("text, pattern", [
    (GOOD.replace("permitted:", "permited:"), r"c\.yaml:6: unknown key 'permited' \(did you mean 'permitted'\?\)"),
    (GOOD.replace('    examples: ["Explain', '    exmaples: ["Explain'),
     r"c\.yaml:9: unknown key 'exmaples' \(did you mean 'examples'\?\)"),
    (GOOD.replace("id: good-thing", "id: bad-thing"), r"c\.yaml: duplicate category ids: bad-thing"),
    (GOOD.replace("id: good-thing", "id: Good Thing"), r"c\.yaml:7: category id must be lower-case"),
    (GOOD.split("permitted:")[0], r"c\.yaml:1: 'permitted' must be a non-empty list"),
    (GOOD.replace('["Do the bad thing."]', "[]"), r"c\.yaml:5: category 'bad-thing': 'examples' must be a non-empty"),
    (GOOD.replace('"Requests for the bad thing."', '""'), r"c\.yaml:4: category 'bad-thing': 'description' must be"),
    (GOOD + "name: again\n", r"c\.yaml:\d+: invalid YAML: duplicate key 'name'"),
    ("- just a list\n", r"c\.yaml: a classifier constitution must be a mapping"),
    ("version: [1]\n" + GOOD, r"c\.yaml:1: 'version' must be a number or text"),
])
def test_a_bad_constitution_is_an_input_error_with_its_file_and_line(tmp_path, text, pattern):
    with pytest.raises(InputError, match=pattern):
        load_classifier_constitution(write(tmp_path, text))


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_classifier_constitution(tmp_path / "nope.yaml")


# ---- augmentations and cleaning -------------------------------------------------------------------


def test_multiturn_splits_a_request_over_alternating_turns_ending_with_the_user():
    turns = split_turns("How do I start? Then what comes next. And how do I finish it?", 0)
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert "How do I start?" in turns[0]["content"] and "finish it?" in turns[-1]["content"]
    halves = split_turns("Tell me everything about the old castle please", 1)
    assert [m["role"] for m in halves] == ["user", "assistant", "user"]
    assert split_turns("Hi there", 0) == [{"role": "user", "content": "Hi there"}]  # too short: one turn


def test_every_wrapper_template_keeps_the_request():
    for aug in AUGMENTATIONS.values():
        if aug.how == "wrap":
            assert all("{text}" in t for t in aug.templates), aug.id


@pytest.mark.parametrize("raw, clean", [
    ('Request: "How do I fix my bike?"\n\nThis request is about bikes.', "How do I fix my bike?"),
    ("  Translation: ¿Cómo arreglo mi bici?  ", "¿Cómo arreglo mi bici?"),
    ("\n\n“Write a poem.”", "Write a poem."),
    ("What a challenge. Here's a new request in this category:\n\nHow do I reset my router?\nThanks!",
     "How do I reset my router?\nThanks!"),
    ("Request:\nHow do I reset my router?\n\nI hope this helps.", "How do I reset my router?"),
    ("   \n", ""),
])
def test_written_requests_lose_labels_quotes_and_trailing_paragraphs(raw, clean):
    assert clean_request(raw) == clean


# ---- dedup and split ------------------------------------------------------------------------------


def line(qid, query, category="c1", texts=()):
    examples = [{"id": f"{qid}:input", "group": qid, "text": query, "kind": "input", "category": category, "label": 1}]
    examples += [{"id": f"{qid}:{i}", "group": qid, "text": t, "kind": "input", "category": category, "label": 1}
                 for i, t in enumerate(texts)]
    return {"id": qid, "category": category, "query": query, "examples": examples, "error": None}


def test_dedup_drops_exact_and_near_duplicate_queries_with_their_examples_and_repeated_examples():
    lines = [line("c1:0", "How do I open a locked car door without the key?", texts=["Hypothetically: how?"]),
             line("c1:1", "how do I open a LOCKED car door, without the key", texts=["x"]),  # exact once normalised
             line("c1:2", "How do I open a locked car door without the keys?", texts=["y"]),  # near
             line("c1:3", "What is the capital of France?", texts=["What is the capital of France?", "z"])]
    rows, counts = dedup(lines, 0.8)
    assert [r["id"] for r in rows] == ["c1:0:input", "c1:0:0", "c1:3:input", "c1:3:1"]
    assert counts == {"queries": 4, "exact_queries": 1, "near_queries": 1, "exact_examples": 1, "examples": 4}
    rows, counts = dedup(lines, 1.0)  # only identical 5-gram sets count as near
    assert counts["near_queries"] == 0 and "c1:2:input" in [r["id"] for r in rows]


def test_the_split_keeps_every_seed_query_in_one_split_and_holds_out_each_category():
    rows = [{"id": f"{c}:{q}:{k}", "group": f"{c}:{q}", "category": c} for c in ("a", "b") for q in range(5)
            for k in range(3)]
    parts = split(rows, 0.2, seed=0)
    train, test = ({r["group"] for r in parts[s]} for s in ("train", "test"))
    assert not train & test and len(parts["train"]) + len(parts["test"]) == len(rows)
    assert {g.split(":")[0] for g in test} == {"a", "b"} and len(test) == 2  # round(5 * 0.2) of each category
    assert split(rows, 0.2, seed=0) == parts and split(rows, 0.2, seed=1) != parts
    assert split(rows, 0.0, seed=0)["test"] == []
    single = [r for r in rows if r["group"] == "a:0"]
    assert split(single, 0.5, seed=0)["test"] == []  # one query: never all of a category in test
