import pytest

from charter.generate import GenerateConfig, load_generate_config
from charter.errors import ConfigError, InputError


def test_unknown_key_suggests(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model: embedded\nseed: 1\nround: 2\n")
    with pytest.raises(ConfigError, match=r"run.yaml:3: unknown key 'round' \(did you mean 'rounds'\?\)"):
        load_generate_config(str(f), {})


def test_flags_override_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("rounds: 2\ntemperature: 0.5\nformat: text\n")
    cfg = load_generate_config(str(f), {"rounds": 3, "seed": None})
    assert (cfg.rounds, cfg.temperature, cfg.format, cfg.seed) == (3, 0.5, "text", 0)


@pytest.mark.parametrize("body, message", [
    ("rounds: two\n", r"run.yaml:2: rounds must be int, got 'two'"),
    ("critique: 1\n", r"run.yaml:2: critique must be bool, got 1"),
    ("format: html\n", r"run.yaml:2: format must be one of chat, text, got 'html'"),
    ("rounds: -1\n", r"run.yaml:2: rounds must be >= 0, got -1"),
    ("top_p: 0\n", r"run.yaml:2: top_p must be in \(0, 1\], got 0.0"),
    ("limit: 0\n", r"run.yaml:2: limit must be >= 1, got 0"),
])
def test_bad_values_name_the_key_line_and_value(tmp_path, body, message):
    f = tmp_path / "run.yaml"
    f.write_text("model: embedded\n" + body + "seed: 3\n")
    with pytest.raises(ConfigError, match=message):
        load_generate_config(str(f), {})


def test_not_a_mapping(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_generate_config(str(f), {})


def test_bad_flag_names_the_flag_not_the_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("max_tokens: 32\n")
    with pytest.raises(ConfigError, match=r"^--max-tokens must be >= 1, got 0$"):
        load_generate_config(str(f), {"max_tokens": 0})
    with pytest.raises(ConfigError, match=r"^--temperature must be in \[0, 5\], got 9.0$"):
        load_generate_config(None, {"temperature": 9.0})


def test_nested_unknown_key_names_its_own_line(tmp_path):
    from charter.config import check_keys, read_yaml

    f = tmp_path / "t.yaml"
    f.write_text("trainer:\n  learning_rate: 1.0e-5\n  num_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"t.yaml:3: unknown key 'num_epochs'"):
        check_keys(read_yaml(f)["trainer"], ["learning_rate", "num_train_epochs"], str(f))


def test_duplicate_keys_rejected(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("rounds: 2\nseed: 1\nrounds: 3\n")
    with pytest.raises(InputError, match=r"run.yaml:3: .*duplicate key 'rounds' \(first set on line 1\)"):
        load_generate_config(str(f), {})


def test_yaml_merge_keys_still_work(tmp_path):
    from charter.config import read_yaml, strip_lines

    f = tmp_path / "run.yaml"
    f.write_text("a: &b {rounds: 2, seed: 1}\nb:\n  <<: *b\n  rounds: 3\n")
    assert strip_lines(read_yaml(f))["b"] == {"rounds": 3, "seed": 1}


@pytest.mark.parametrize("data, message", [
    (b"rounds: 2\nmodel: caf\xe9\n", r"run.yaml:2: byte 0xe9 at offset 20 is not UTF-8; re-save the file as UTF-8"),
    (b"\xef\xbb\xbfrounds: 3\n", None),  # a UTF-8 BOM is fine
])
def test_encoding(tmp_path, data, message):
    f = tmp_path / "run.yaml"
    f.write_bytes(data)
    if message is None:
        assert load_generate_config(str(f), {}).rounds == 3
    else:
        with pytest.raises(InputError, match=message):
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


def test_shipped_train_configs_load():
    from pathlib import Path

    from charter.classifier.train import ClassifierTrainConfig
    from charter.train.dpo import DPOConfig
    from charter.train.pm import PMConfig
    from charter.train.rl import RLConfig
    from charter.train.sft import SFTConfig

    folder = Path(__file__).parents[1] / "configs" / "train"
    classes = {"sft": SFTConfig, "dpo": DPOConfig, "pm": PMConfig, "rl": RLConfig, "classifier": ClassifierTrainConfig}
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(classes)
    for name, cls in classes.items():
        cfg = cls.load(str(folder / f"{name}.yaml"), {"pm" if name == "rl" else "data": "d", "out": "o"})
        assert cfg.where.endswith(f"{name}.yaml") and cfg.trainer["num_train_epochs"] == 1


def test_a_setting_declared_once_gives_flag_checks_and_resumability():
    """Choices, bounds, result=False and the flag all come from the one field declaration."""
    import argparse
    from dataclasses import dataclass

    from charter.cli.common import add_settings, given
    from charter.config import Config, setting

    @dataclass
    class Demo(Config):
        mode: str = setting("a", "which mode", choices=("a", "b"))
        n: int = setting(1, "how many", bounds=">= 1")
        share: float = setting(0.5, "a share", bounds="[0, 1)")
        fast: bool = setting(False, "go fast")
        careful: bool = setting(True, "be careful")
        out: str = setting("x", "where", result=False)

    assert Demo.NON_RESULT_KEYS == ("out",) and Demo().fingerprint() == Demo(out="y").fingerprint()
    p = argparse.ArgumentParser()
    add_settings(p, Demo)
    a = p.parse_args(["--mode", "b", "--n", "3", "--fast", "--no-careful"])
    assert given(a, Demo) == {"mode": "b", "n": 3, "fast": True, "careful": False}
    assert given(p.parse_args([]), Demo) == {}
    with pytest.raises(ConfigError, match=r"^--share must be in \[0, 1\), got 1.0$"):
        Demo.load(None, {"share": 1.0})
    with pytest.raises(ConfigError, match=r"^--n must be >= 1, got 0$"):
        Demo.load(None, {"n": 0})


def test_config_py_does_not_know_the_backends(tmp_path):
    """The backend name is checked where it is used (generate), with the same message."""
    from charter.errors import BackendError
    from charter.generate import generate

    cfg = load_generate_config(None, {"backend": "fakee", "out": str(tmp_path / "r")})
    with pytest.raises(BackendError, match=r"unknown backend 'fakee' \(did you mean 'fake'\?\)"):
        generate(cfg, progress=False)
    assert not (tmp_path / "r").exists()


def _bomb(levels: int, under: str) -> str:
    """A "billion laughs" YAML: each level is ten aliases of the one before."""
    lines = [f"{under}:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("load, under", [
    (lambda f: load_generate_config(f, {}), "backend_options"),
    (lambda f: __import__("charter.train.sft", fromlist=["x"]).load_sft_config(f, data="d", out="o"), "trainer"),
])
def test_yaml_alias_bomb_refused_before_expanding_with_file_and_line(tmp_path, load, under):
    f = tmp_path / "bomb.yaml"
    f.write_text(_bomb(9, under))  # 10^9 values once expanded: a reader that expanded it would not return
    with pytest.raises(InputError, match=r"bomb.yaml:\d+: YAML aliases \(\*name\) expand this document by more "
                                        r"than 100,000 values and characters; write the values out instead"):
        load(str(f))


def test_yaml_deep_and_recursive_documents_are_clean_errors(tmp_path):
    from charter.config import read_yaml

    f = tmp_path / "deep.yaml"
    for text in ("x: " + "[" * 5000 + "]" * 5000 + "\n", "x: " + "[" * 150 + "]" * 150 + "\n"):
        f.write_text(text)  # the first was a RecursionError traceback
        with pytest.raises(InputError, match=r"deep.yaml:1: YAML nested deeper than 100 levels"):
            read_yaml(f)
    f.write_text("a: &a\n  - *a\n")
    with pytest.raises(InputError, match="a YAML alias refers to a value that contains it"):
        read_yaml(f)
    f.write_text("a: &a [[[x]]]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(120)))
    with pytest.raises(InputError, match="YAML nested deeper than 100 levels"):
        read_yaml(f)  # small as written, deep once aliases are copied out


def test_backend_option_values_are_capped_too():
    from charter.cli.common import parse_backend_options

    assert parse_backend_options(["n=3", "d={a: 1}", "l=[&x [1, 2], *x]"]) == {"n": 3, "d": {"a": 1}, "l": [[1, 2], [1, 2]]}
    levels = ["&l0 [" + ", ".join(["lol"] * 10) + "]"] + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]"
                                                          for i in range(1, 8)]
    with pytest.raises(InputError, match=r"--backend-option b:1: YAML aliases \(\*name\) expand"):
        parse_backend_options([f"b=[{', '.join(levels)}]"])
    with pytest.raises(InputError, match=r"--backend-option d:1: YAML nested deeper than 100 levels"):
        parse_backend_options(["d=" + "[" * 300 + "]" * 300])


def test_deep_json_data_file_is_a_clean_error(tmp_path):
    from charter.yamlfile import read_data_file

    f = tmp_path / "c.json"
    f.write_text("{\"principles\":\n" + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(InputError, match=r"c.json:2: invalid JSON \(JSON nested deeper than 100 levels"):
        read_data_file(f)


def test_a_setting_added_later_enters_the_fingerprint_only_off_its_default():
    """since=: runs fingerprinted before the setting existed still match while it is at its default."""
    from dataclasses import dataclass

    from charter.config import Config, fingerprint, setting

    @dataclass
    class Before(Config):
        n: int = setting(1, "how many")

    @dataclass
    class After(Config):
        n: int = setting(1, "how many")
        extra: list = setting([], "added later", since="2.0")
        plain: int = setting(0, "added without since")

    assert After().fingerprint() == fingerprint({**Before().to_dict(), "plain": 0}, ())
    assert After(extra=[1]).fingerprint() != After().fingerprint()
    After.check_values({"n": 3})
    with pytest.raises(ConfigError, match="x.n must be int, got 'a'"):
        After.check_values({"n": "a"}, prefix="x.")


# ---- the sampling settings: declared once in charter.config, each command its own default ---------

def sampling_configs():
    from charter.evaluate.suite import EvalConfig
    from charter.rlcai.labeler_eval import LabelerEvalConfig
    from charter.rlcai.labels import LabelConfig

    configs = [GenerateConfig, LabelConfig, EvalConfig, LabelerEvalConfig]
    try:
        from charter.train.rl import RLConfig
    except ImportError:  # no trl here
        return configs
    return configs + [RLConfig]


def test_the_sampling_settings_share_one_declaration():
    """Same bounds and help wording in every command; only the default and its subject differ."""
    import dataclasses

    shared = {"max_tokens": (">= 1", "tokens per "), "cot_max_tokens": (">= 1", "tokens per "),
              "temperature": ("[0, 5]", "sampling temperature"), "cot_temperature": ("[0, 5]", "sampling temperature"),
              "top_p": ("(0, 1]", "nucleus sampling"), "seed": (None, "seeds ")}
    seen = set()
    for cls in sampling_configs():
        for f in dataclasses.fields(cls):
            if f.name in shared:
                bounds, help = shared[f.name]
                assert (f.metadata["bounds"], f.metadata["help"][:len(help)]) == (bounds, help), (cls.__name__, f.name)
                assert f.metadata["help"].endswith(f"(default {f.default})") or "(default 0: greedy)" in f.metadata["help"]
                seen.add(f.name)
    assert seen == set(shared)


def test_rl_keeps_temperature_above_zero_with_a_reason():
    pytest.importorskip("trl")
    from charter.train.rl import load_rl_config

    with pytest.raises(ConfigError, match="temperature must be > 0 for RL"):
        load_rl_config(None, pm="pm", out="o", temperature=0.0)


def test_a_config_gives_its_sampling():
    from charter.rlcai.labeler_eval import LabelerEvalConfig
    from charter.rlcai.labels import LabelConfig
    from charter.types import Sampling

    assert GenerateConfig(max_tokens=7, temperature=0.3, top_p=0.9, seed=4).sampling() == Sampling(7, 0.3, 0.9, seed=4)
    label = LabelConfig(max_tokens=7, cot_max_tokens=9, cot_temperature=0.2, top_p=0.8, seed=2)
    assert label.sampling("cot_") == Sampling(9, 0.2, 0.8, seed=2)  # top_p and seed: the plain settings
    assert LabelerEvalConfig(max_tokens=5).sampling() == Sampling(5, 0.0, 1.0, seed=0)  # no top_p: Sampling's


# Fingerprints written by the code from before the sampling settings were shared: runs made then resume.
@pytest.mark.parametrize("make, before", [
    (lambda: GenerateConfig(), "7280dcb7d57a908a"),
    (lambda: GenerateConfig(max_tokens=7, temperature=0.3, top_p=0.9, seed=4), "cffff82775eab09a"),
    (lambda: label_config(backend="transformers"), "c1a056d5f149e1cb"),
    (lambda: label_config(backend="transformers", cot=True, cot_max_tokens=9, cot_temperature=0.2),
     "b613e86e23f5307c"),
])
def test_fingerprints_of_earlier_runs_are_unchanged(make, before):
    assert make().fingerprint() == before


def label_config(**kw):
    from charter.rlcai.labels import LabelConfig

    return LabelConfig(**kw)


def test_generate_config_lives_beside_generate():
    import charter
    import charter.config

    assert charter.GenerateConfig is GenerateConfig and GenerateConfig.__module__ == "charter.generate"
    assert not hasattr(charter.config, "GenerateConfig")
