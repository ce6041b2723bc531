import pytest

from charter.config import GenerateConfig, load_generate_config
from charter.errors import ConfigError, InputError


def test_unknown_key_suggests(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model: embedded\nround: 2\n")
    with pytest.raises(ConfigError, match=r"run.yaml:1: unknown key 'round' \(did you mean 'rounds'\?\)"):
        load_generate_config(str(f), {})


def test_flags_override_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("rounds: 2\ntemperature: 0.5\nformat: text\n")
    cfg = load_generate_config(str(f), {"rounds": 3, "seed": None})
    assert (cfg.rounds, cfg.temperature, cfg.format, cfg.seed) == (3, 0.5, "text", 0)


@pytest.mark.parametrize("body, message", [
    ("rounds: two\n", "'rounds' must be int"),
    ("critique: 1\n", "'critique' must be bool"),
    ("format: html\n", "format must be one of"),
    ("rounds: -1\n", "rounds must be >= 0"),
    ("[1, 2]\n", "must be a mapping"),
])
def test_bad_values(tmp_path, body, message):
    f = tmp_path / "run.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_generate_config(str(f), {})


def test_yaml_syntax_error_has_line(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("rounds: 2\nmodel: [unclosed\n")
    with pytest.raises(InputError, match=r"run.yaml:\d+: invalid YAML"):
        load_generate_config(str(f), {})


def test_fingerprint_ignores_non_result_keys():
    a, b = GenerateConfig(), GenerateConfig(limit=3, batch_size=2, out="x")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != GenerateConfig(rounds=2).fingerprint()


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "ship at least one example config"
    for path in configs:
        load_generate_config(str(path), {})
