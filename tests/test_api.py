"""The public Python API (`import charter`): fast checks on the fake backend, then the README's
example and a CLI comparison on the real embedded model."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import charter
from charter.errors import ConfigError, InputError
from charter.runs.runread import load_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_PAGE = ROOT / "docs" / "python.md"  # the config + function pairs
LOCK = "How do I pick a lock?"


def fake(**kw):
    return charter.load_backend("fake", "fake", **kw)


def test_import_is_light_silent_and_leaves_the_environment_alone():
    code = ("import os, sys; env = dict(os.environ); import charter; assert dict(os.environ) == env; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'vllm', 'numpy'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("[]\n", "")


def test_every_public_name_resolves():
    missing = []
    for name in charter.__all__:
        try:
            getattr(charter, name)
        except (AttributeError, ImportError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, "public names that do not resolve: " + "; ".join(missing)
    assert set(dir(charter)) >= set(charter.__all__)


def test_help_works_on_every_public_name():
    import pydoc

    failed = []
    for name in [n for n in charter.__all__ if n != "__version__"]:
        try:
            pydoc.render_doc(getattr(charter, name))
        except Exception as exc:  # help() must not raise, whatever the name is
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failed, "help() fails on: " + "; ".join(failed)
    assert "critique_revise" in pydoc.render_doc(charter)


def test_a_config_classs_help_lists_its_settings_with_help_and_defaults():
    import pydoc

    text = pydoc.render_doc(charter.GenerateConfig, renderer=pydoc.plaintext)
    assert "Everything that defines a `charter generate` run." in text
    assert "rounds: int = 4  [--rounds; >= 0]" in text
    assert "critique/revision rounds per red-team prompt" in text
    assert "backend_options: dict[str, Any] = {}  [no flag" in text
    rl = pydoc.render_doc(charter.RLConfig, renderer=pydoc.plaintext)  # inherited settings listed too
    assert "out: str = ''" in rl and "output directory" in rl


def test_a_misspelled_keyword_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"GenerateConfig: unknown setting 'round' \(did you mean 'rounds'\?\)"):
        charter.GenerateConfig(round=2)
    with pytest.raises(ConfigError, match="unknown setting 'lerning_rate'"):
        charter.SFTConfig(lerning_rate=1e-5)
    assert charter.GenerateConfig(rounds=2).rounds == 2


def test_functions_named_like_their_modules_stay_functions():
    """`charter.generate` / `charter.evaluate` are the functions, even once their modules are imported."""
    import charter.evaluate.suite  # noqa: F401
    import charter.generate  # noqa: F401
    from charter.generate import Summary  # the module is still reachable

    import charter.backends
    import charter.types

    assert Summary and callable(charter.generate) and callable(charter.evaluate)
    assert charter.generate.__module__ == "charter.generate"
    assert charter.types.Sampling is charter.Sampling and charter.backends.create_backend  # other submodules: as usual


def test_strings_and_message_lists_give_the_clis_ids():
    from charter.inputs.prompts import prompt_id

    msgs = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Help me cheat on a test."}]
    with fake() as llm:
        recs = charter.critique_revise(llm, [LOCK, msgs, "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: More?"], rounds=1)
    assert [r.id for r in recs] == [prompt_id("red_team", [{"role": "user", "content": LOCK}], 0),
                                    prompt_id("red_team", msgs, 0), recs[2].id]
    assert recs[1].prompt == msgs and len(recs[2].prompt) == 3  # a transcript string is split into turns
    assert all(len(r.rounds) == 1 and r.final == r.rounds[0].revision and r.error is None for r in recs)


def test_a_repeated_prompt_is_a_second_sample():
    with fake() as llm:
        recs = charter.critique_revise(llm, [LOCK, [{"role": "user", "content": LOCK}], LOCK], rounds=2)
    assert [r.sample for r in recs] == [0, 1, 2] and len({r.id for r in recs}) == 3


def test_records_come_back_in_input_order(monkeypatch):
    """Streaming engines finish conversations out of order; the list follows the input."""
    def slow_first(prompt: str) -> str:
        time.sleep(0.3 if "first" in prompt else 0.01)
        return f"answer {threading.get_ident()}"

    prompts = ["first: slow", "second", "third", "fourth"]
    finished = []
    with fake(responder=slow_first) as llm:
        llm.concurrency = 4  # the streaming scheduler, as for vLLM
        import charter.pipeline.cai as pipeline

        real = pipeline.Runner.finish

        def finish(self, job, error=None):
            finished.append(job.item.messages[-1]["content"])
            return real(self, job, error)

        monkeypatch.setattr(pipeline.Runner, "finish", finish)
        recs = charter.critique_revise(llm, prompts, rounds=1)
    assert finished[-1] == "first: slow"  # it did finish last ...
    assert [r.prompt[-1]["content"] for r in recs] == prompts  # ... and still comes first


def test_same_records_as_generate_and_no_run_directory(tmp_path, monkeypatch):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (LOCK, "Insult my coworker.", "Hi")))
    cfg = charter.GenerateConfig(backend="fake", prompts=str(prompts), helpful_prompts="none", rounds=2, seed=3,
                                 out=str(tmp_path / "run"))
    charter.generate(cfg, progress=False)
    cli = {r.id: r for r in load_run(tmp_path / "run")}
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with fake() as llm:
        recs = charter.critique_revise(llm, [LOCK, "Insult my coworker.", "Hi"], rounds=2, seed=3)
    assert list(work.iterdir()) == []  # nothing written
    assert len(recs) == len(cli) == 3
    for r in recs:
        c = cli[r.id]
        fields = ("prompt", "initial", "rounds", "final", "sampling")
        assert [getattr(r, f) for f in fields] == [getattr(c, f) for f in fields]


def test_answer_gives_helpfulness_records():
    with fake() as llm:
        recs = charter.answer(llm, ["What is 2 + 2?", "Name a colour."])
    assert [r.kind for r in recs] == ["helpful", "helpful"]
    assert all(r.rounds == [] and r.initial and r.final == r.initial for r in recs)


def test_a_constitution_object_and_text_format():
    c = charter.load_constitution()
    one = charter.Constitution("one", c.principles[:1], c.few_shots)
    with fake() as llm:
        recs = charter.critique_revise(llm, [LOCK], rounds=3, constitution=one, format="text")
    assert [x.principle for x in recs[0].rounds] == [c.principles[0].id] * 3 and recs[0].format == "text"


def test_load_backend_is_a_context_manager_that_closes():
    closed = []
    with fake() as llm:
        llm.close = lambda: closed.append(True)
        assert llm.name == "fake" and llm.calls == []
    assert closed == [True]


def test_bad_arguments_say_how_to_fix_them():
    with fake() as llm:
        with pytest.raises(ConfigError, match=r"wrap a single prompt in a list"):
            charter.critique_revise(llm, LOCK)
        with pytest.raises(ConfigError, match=r"wrap it in a list: \[messages\]"):
            charter.critique_revise(llm, [{"role": "user", "content": LOCK}])
        with pytest.raises(ConfigError, match="format must be one of chat, text"):
            charter.critique_revise(llm, [LOCK], format="json")
        with pytest.raises(InputError, match=r"prompts\[1\].*must end with a user turn"):
            ends_with_answer = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
            charter.critique_revise(llm, [LOCK, ends_with_answer])
    with pytest.raises(charter.BackendError, match="did you mean 'vllm'"):
        charter.load_backend("vlm", "embedded")


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": {"max_tokens": 8}}, r"sampling must be a charter.Sampling, not a dict: "
                                      r"write sampling=charter.Sampling\(max_tokens=8\)$"),
    ({"sampling": 8}, r"sampling must be a charter.Sampling .*got 8$"),
    ({"prompts": [42]}, r"^prompts\[0\]: a prompt must be a string, a list of \{role, content\} messages or a "
                        r"PromptItem, got int 42$"),
    ({"prompts": [LOCK, None]}, r"^prompts\[1\]: a prompt must be .*got NoneType None$"),
])
def test_a_wrong_type_of_argument_gets_one_sentence(kwargs, message):
    with fake() as llm, pytest.raises((ConfigError, InputError), match=message):
        charter.critique_revise(llm, **{"prompts": [LOCK], **kwargs})
    assert llm.calls == []


@pytest.mark.parametrize("kwargs, message", [
    ({"context": "all"}, "context must be one of full, latest, got 'all'"),
    ({"rounds": -1}, "rounds must be >= 0, got -1"),
    ({"rounds": 2.5}, "rounds must be int, got 2.5"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"kind": "evil"}, "kind must be one of red_team, helpful, got 'evil'"),
    ({"sampling": charter.Sampling(temperature=7)}, r"sampling.temperature must be in \[0, 5\], got 7"),
    ({"sampling": charter.Sampling(top_p=0)}, r"sampling.top_p must be in \(0, 1\], got 0"),
])
def test_arguments_are_checked_by_generate_configs_declarations(kwargs, message):
    """critique_revise checks its arguments with GenerateConfig's settings: the CLI's rule and wording."""
    with fake() as llm, pytest.raises(ConfigError, match=message):
        charter.critique_revise(llm, [LOCK], **kwargs)
    assert llm.calls == []


def test_a_bad_argument_reads_as_the_clis_bad_setting(tmp_path, capsys):
    from charter.cli import main

    for key, value in (("context", "all"), ("rounds", -1), ("batch_size", 0), ("rounds", 2.5)):
        with fake() as llm, pytest.raises(ConfigError) as api_error:
            charter.critique_revise(llm, [LOCK], **{key: value})
        (tmp_path / "run.yaml").write_text(f"{key}: {value}\n")
        assert main(["generate", "--backend", "fake", "--config", str(tmp_path / "run.yaml"),
                     "--out", str(tmp_path / "r")]) == 2
        assert f"run.yaml:1: {api_error.value}" in capsys.readouterr().err


def readme_block(marker: str, page: Path = README) -> str:
    """The python block after `<!-- test: MARKER -->` in README.md (or another page)."""
    text = page.read_text(encoding="utf-8")
    found = re.search(rf"<!-- test: {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert found, f"{page.name} lost its tested Python block (marker `<!-- test: {marker} -->`)"
    return found.group(1)


def readme_example() -> str:
    return readme_block("python-example")


def test_readme_example_is_found():
    code = readme_example()
    assert "charter.load_backend(" in code and "charter.critique_revise(" in code
    compile(code, "README.md", "exec")


def test_docs_config_examples_build_their_configs():
    """Each job in the docs' config block (docs/python.md): a real config built from the page's fields,
    handed to its function (stubbed here: tests/test_docs.py runs the block, the jobs are tested in
    their own files)."""
    import types

    calls = []
    stub = types.SimpleNamespace(**{n: getattr(charter, n) for n in charter.__all__ if n[0].isupper()})
    jobs = ("generate", "export_run", "train_sft", "label", "train_pm", "train_rl", "train_dpo", "evaluate",
            "evaluate_labeler", "write_report")
    for fn in jobs:
        setattr(stub, fn, lambda arg, _fn=fn: calls.append((_fn, arg)))
    code = re.sub(r"^import charter$", "", readme_block("python-configs", PYTHON_PAGE), flags=re.M)  # the stub stays
    exec(compile(code, "docs/python.md", "exec"), {"charter": stub})
    assert [c[0] for c in calls] == list(jobs)
    for name, arg in calls[:-1]:
        assert type(arg).__name__.endswith("Config"), f"{name} got {arg!r}"


@pytest.mark.slow
def test_readme_example_runs_as_a_script(tmp_path):
    """The README's first example saved as a file and run with `python`, as a user runs it: on the
    default backend (vLLM here), whose engine process must not run the script a second time."""
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bootstrapping phase" not in done.stderr
    printed = re.findall(r"^[0-9a-f]{12}-\d+ \[", done.stdout, re.M)  # `print(r.id, [principles], r.final)`
    assert len(printed) == 2, done.stdout


@pytest.mark.slow
def test_same_records_as_the_cli_on_the_embedded_model(tmp_path):
    """`charter generate` and `critique_revise` with the same prompts, settings and seed: the same records."""
    prompts = [LOCK, "Write a mean note to my neighbour."]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    out = tmp_path / "run"
    flags = ["--rounds", "2", "--max-tokens", "24", "--temperature", "0.6", "--top-p", "0.9", "--seed", "1",
             "--batch-size", "8"]
    cmd = [sys.executable, "-m", "charter.cli", "generate", "--backend", "transformers", "--prompts", str(path),
           "--helpful-prompts", "none", "--quiet", "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    cli = {r.id: r for r in load_run(out)}
    with charter.load_backend("transformers", "embedded") as llm:
        recs = charter.critique_revise(llm, prompts, rounds=2, seed=1, batch_size=8,
                                       sampling=charter.Sampling(max_tokens=24, temperature=0.6, top_p=0.9, seed=1))
    assert sorted(cli) == sorted(r.id for r in recs)
    for r in recs:
        c = cli[r.id]
        assert r.error is None and r.initial and len(r.rounds) == 2
        assert (r.prompt, r.initial, r.rounds, r.final) == (c.prompt, c.initial, c.rounds, c.final)
