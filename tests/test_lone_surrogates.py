"""A lone surrogate escape ("\\ud800": half of a UTF-16 pair, which no UTF-8 writer accepts) is
refused where a file is read, naming file:line, by every reader: prompts, constitutions, eval.json,
training rows. Pairs and escaped backslashes are text like any other."""
import json

import pytest

from charter.cli import main
from charter.jsonl import LoneSurrogate, loads
from support import GEN, fails

LONE = "\\ud800"  # as written in the file: backslash, u, d800


@pytest.mark.parametrize("text, pos", [('{"a": "x\\ud800"}', 8), ('"\\udc00"', 1), ('["\\ud800\\ud800"]', 2),
                                       ('"\\ud83d x"', 1)])
def test_loads_refuses_a_lone_surrogate_at_its_column(text, pos):
    with pytest.raises(LoneSurrogate) as err:
        loads(text)
    assert (err.value.lineno, err.value.colno) == (1, pos + 1)


def test_loads_keeps_pairs_and_escaped_backslashes():
    assert loads('"\\ud83d\\ude00"') == "\U0001F600"
    assert loads('"\\\\ud800"') == "\\ud800"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_prompt_file_names_the_line(here, capsys):
    (here / "p.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "hi %s there"}\n' % LONE)
    fails(capsys, GEN + ["--prompts", "p.jsonl", "--out", "r"], r"p.jsonl:2: invalid JSON \(\\ud800 is half of a "
          r"surrogate pair, not a character")
    (here / "p.json").write_text('[{"prompt": "fine"},\n {"prompt": "%s"}]' % LONE)
    fails(capsys, GEN + ["--prompts", "p.json", "--out", "r"], r"p.json:2: invalid JSON \(\\ud800 is half")


@pytest.mark.parametrize("name, body, line", [
    ("c.yaml", 'principles:\n  - id: a\n    critique: "Is it %s harmful?"\n    revision: "Rewrite it."\n' % LONE, 3),
    ("c.json", '[{"critique": "fine", "revision": "fine"},\n {"critique": "a%s", "revision": "b"}]' % LONE, 2),
])
def test_a_constitution_names_the_line(here, capsys, name, body, line):
    (here / name).write_text(body)
    fails(capsys, ["constitution", "show", name], r"%s:%d: .*\\ud800 is half of a surrogate pair" % (name, line))


def test_eval_json_in_a_report(here, capsys):
    assert main(GEN + ["--limit", "2", "--out", "r"]) == 0
    (here / "r" / "eval.json").write_text('{"schema": "charter.eval/1", "run": "r", "records": 0,\n'
                                          ' "models": {"m%s": {}}}' % LONE)
    fails(capsys, ["report", "r"], r"r/eval.json.*\\ud800 is half of a surrogate pair.*line 2")


def test_training_rows_name_the_line(here, capsys):
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine"}]}
    bad = json.dumps(row).replace("fine", "x" + LONE)
    (here / "sft.jsonl").write_text(json.dumps(row) + "\n" + bad + "\n")
    fails(capsys, ["train", "sft", "--data", "sft.jsonl", "--out", "t"], r"sft.jsonl:2: .*\\ud800 is half of a "
          r"surrogate pair")
