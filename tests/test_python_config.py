"""A config built in Python gets the checks a YAML file and flags get, in the same words, before
anything is written: types, list items, plain data in mappings. Fake backend."""
import pytest

from charter import GenerateConfig, generate
from charter.errors import ConfigError
from charter.export import ExportConfig, export_run

BAD = [
    ({"rounds": "3"}, r"rounds must be int, got '3'"),
    ({"limit": "5"}, r"limit must be int or null, got '5'"),
    ({"prompts": 123}, r"prompts must be str, got 123"),
    ({"out": None}, r"out must be str, got None"),
    ({"backend_options": "x"}, r"backend_options must be dict, got 'x'"),
    ({"format": None}, r"format must be str, got None"),
    ({"critique": "no"}, r"critique must be bool, got 'no'"),
    ({"seed": "abc"}, r"seed must be int, got 'abc'"),
    ({"temperature": True}, r"temperature must be float, got True"),
    ({"backend_options": {"hook": print}}, r"backend_options must hold plain values .* got <built-in function print>"),
    ({"backend_options": {"nested": [{"deep": object}]}}, r"must hold plain values"),
]


@pytest.mark.parametrize("values, message", BAD)
def test_a_python_config_is_type_checked_before_anything_is_written(tmp_path, values, message):
    cfg = GenerateConfig(**{"backend": "fake", "out": str(tmp_path / "run"), "limit": 1, **values})
    with pytest.raises(ConfigError, match=message):
        generate(cfg, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, message", BAD[:3])
def test_yaml_and_python_give_the_same_message(tmp_path, values, message):
    (key, value), = values.items()
    (tmp_path / "run.yaml").write_text(f"{key}: {value!r}\n")
    with pytest.raises(ConfigError, match=r"run.yaml:1: " + message):
        GenerateConfig.load(str(tmp_path / "run.yaml"))


def test_list_items_are_checked_and_a_path_is_text(tmp_path):
    with pytest.raises(ConfigError, match=r"config: filter\[1\] must be str, got 3"):
        export_run(ExportConfig(run=str(tmp_path), out="x.jsonl", filter=["empty", 3]))
    cfg = GenerateConfig(backend="fake", out=tmp_path / "run", limit=1, rounds=1, helpful_prompts="none").validate()
    assert cfg.out == str(tmp_path / "run")
