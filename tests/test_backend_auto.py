"""`--backend auto`, the default: vLLM where it imports, else transformers; llama.cpp for GGUF."""
import json
import sys

import pytest

from charter import backends
from charter.backends import SCORED_QUESTION_TOKENS
from charter.generate import GenerateConfig


def test_auto_is_the_default_and_picks_vllm_where_it_imports():
    assert GenerateConfig().backend == "auto"
    assert backends.resolve_backend("auto", "embedded") == "vllm"  # setup installs vLLM everywhere
    assert backends.resolve_backend("auto", "./model.GGUF") == "llamacpp"
    assert backends.resolve_backend("transformers", "embedded") == "transformers"


def test_auto_falls_back_to_transformers_when_vllm_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    assert backends.resolve_backend("auto", "embedded") == "transformers"


def test_generate_logs_the_backend_auto_chose(tmp_path, caplog, monkeypatch):
    made = []

    def fake_create(name, model, **options):
        from charter.backends.fake import FakeBackend

        made.append(name)
        return FakeBackend(model)

    monkeypatch.setattr(backends, "create_backend", fake_create)
    monkeypatch.setattr(backends, "vllm_imports", lambda: False)
    from charter.generate import generate

    with caplog.at_level("INFO", logger="charter"):
        generate(GenerateConfig(limit=1, rounds=1, out=str(tmp_path / "r")), progress=False)
    assert made == ["transformers"]
    assert "backend auto -> transformers (no vLLM here)" in caplog.text


def test_unknown_backend_lists_auto():
    from charter.errors import BackendError

    with pytest.raises(BackendError, match="auto"):
        backends.check_backend_name("vlm")


def test_a_gguf_file_on_a_backend_that_cannot_read_it_names_the_one_that_can(tmp_path):
    from charter.errors import BackendError
    from charter.backends.models import resolve_hf_checkpoint

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(BackendError, match="--backend llamacpp"):
        resolve_hf_checkpoint(str(gguf))


def test_generate_tells_the_backend_how_many_requests_the_run_makes(tmp_path, monkeypatch):
    """The workload reaches create_backend: 3 red-team prompts x (answer + 2 rounds of critique
    and revision) + 3 helpful prompts x 2 samples = 21 requests."""
    seen = []

    def fake_create(name, model, workload=None, **options):
        from charter.backends.fake import FakeBackend

        seen.append(workload)
        return FakeBackend(model)

    monkeypatch.setattr(backends, "create_backend", fake_create)
    from charter.generate import generate

    cfg = GenerateConfig(backend="fake", limit=3, rounds=2, helpful_prompts="default", helpful_samples=2,
                         out=str(tmp_path / "r"))
    generate(cfg, progress=False)
    assert seen == [3 * 5 + 3 * 2]


def test_a_backend_sizes_its_options_to_the_workload_and_the_user_wins(monkeypatch):
    """create_backend merges a backend's workload_options under the user's options."""
    from charter.backends.fake import FakeBackend

    monkeypatch.setattr(FakeBackend, "workload_options",
                        staticmethod(lambda n: {"fail_on": "big"} if n and n > 10 else {}), raising=False)
    assert backends.create_backend("fake", "m", workload=5).fail_on is None
    assert backends.create_backend("fake", "m", workload=50).fail_on == "big"
    assert backends.create_backend("fake", "m", workload=50, fail_on="mine").fail_on == "mine"


def test_vllm_compiles_only_for_long_runs_on_cpu(monkeypatch):
    from charter.backends import vllm_backend as vb
    from charter.backends import vllm_engine

    monkeypatch.setattr(vllm_engine, "_cuda", lambda: False)
    assert vb.workload_options(None) == {} and vb.workload_options(vllm_engine.COMPILE_MIN_STEPS - 1) == {}
    assert vb.workload_options(vllm_engine.COMPILE_MIN_STEPS) == {"enforce_eager": False}
    monkeypatch.setattr(vllm_engine, "_cuda", lambda: True)  # vLLM's own default on GPU: compiled
    assert vb.workload_options(10**6) == {}


def test_every_backend_declares_the_capabilities_and_closes_as_a_context_manager():
    """The pipeline reads capabilities off the base class's declarations, never by probing."""
    import importlib

    from charter.backends.base import Backend
    from charter.backends.fake import FakeBackend

    for name, path in backends.BACKENDS.items():
        module, cls = path.split(":")
        assert issubclass(getattr(importlib.import_module(module), cls), Backend), name
    closed = []
    fake = FakeBackend()
    fake.close = lambda: closed.append(True)
    with fake as b:
        assert b.concurrency is None and b.max_context is None and b.count_tokens("x") is None
        assert b.prepare(["x", [{"role": "user", "content": "y"}]]) == ["x", [{"role": "user", "content": "y"}]]
        assert b.share_prefix("x") is None and FakeBackend.workload_options(10**6) == {}
    assert closed == [True]


def test_auto_gives_a_short_run_to_the_engine_that_starts_fastest(tmp_path, caplog, monkeypatch):
    """Below the measured break-even (requests x max_tokens) transformers finishes before vLLM has started."""
    assert backends.auto_choice("embedded", backends.AUTO_SHORT_RUN_TOKENS)[0] == "transformers"
    assert backends.auto_choice("embedded", backends.AUTO_SHORT_RUN_TOKENS + 1)[0] == "vllm"
    assert backends.auto_choice("embedded", None)[0] == "vllm"  # size unknown: the fast engine
    assert backends.auto_choice("m.gguf", 1)[0] == "llamacpp"
    from charter.backends.fake import FakeBackend
    from charter.generate import generate

    made = []
    monkeypatch.setattr(backends, "create_backend", lambda name, model, **o: made.append(name) or FakeBackend(model))
    with caplog.at_level("INFO", logger="charter"):  # 1 prompt, 1 request of 32 tokens
        generate(GenerateConfig(limit=1, rounds=0, helpful_prompts="none", max_tokens=32, out=str(tmp_path / "r")),
                 progress=False)
    assert made == ["transformers"]
    assert "backend auto -> transformers (a short run: at most 32 tokens" in caplog.text


@pytest.mark.slow
def test_a_one_record_run_under_auto_runs_on_transformers(tmp_path):
    """End to end on the embedded model: a 1-request run starts the fast engine, not vLLM."""
    from charter.generate import generate
    from charter.runs.runread import load_run

    s = generate(GenerateConfig(limit=1, rounds=0, helpful_prompts="none", max_tokens=8, seed=0,
                                out=str(tmp_path / "r")), progress=False)
    (rec,) = load_run(tmp_path / "r")
    assert s.records == 1 and rec.backend == "transformers" and rec.initial


# ---- one way to name a model, one default ---------------------------------------------------------


def test_every_command_that_runs_a_model_defaults_to_auto():
    from charter.evaluate.suite import EvalConfig
    from charter.rlcai.labeler_eval import LabelerEvalConfig
    from charter.rlcai.labels import LabelConfig

    assert GenerateConfig().backend == LabelConfig().backend == EvalConfig().backend == "auto"
    assert LabelerEvalConfig().backend == "auto"
    pytest.importorskip("trl")
    from charter.train.rl import RLConfig

    assert RLConfig().feedback_backend == "auto"


@pytest.mark.parametrize("spec, expected", [
    ("fake:anything", ("fake", "anything")),
    ("auto:embedded", ("auto", "embedded")),
    ("llamacpp:/models/m.gguf", ("llamacpp", "/models/m.gguf")),
    ("HuggingFaceTB/SmolLM2-135M", ("vllm", "HuggingFaceTB/SmolLM2-135M")),  # a hub id: a model on --backend
    ("hf:ORG/NAME", ("vllm", "hf:ORG/NAME")),  # a prefix that is no backend is part of the model
    ("runs/a:b", ("vllm", "runs/a:b")),
    ("fake:", ("vllm", "fake:")),
])
def test_a_model_spec_names_its_backend_only_with_a_registered_prefix(spec, expected):
    assert backends.split_spec(spec, "vllm") == expected


@pytest.fixture
def opened(monkeypatch):
    """Every model opened, as (backend, model, budget): auto_choice answers "fake", create_backend
    makes fakes whose answers differ (so label has pairs to compare)."""
    from charter.backends.fake import FakeBackend

    seen: list = []
    budgets: dict = {}

    def choice(model, budget=None):
        budgets[model] = budget
        return "fake", "a test"

    def create(name, model, workload=None, **options):
        seen.append((name, model, budgets.pop(model, None) if name == "fake" else None))
        fake = FakeBackend(model)
        fake.responder = lambda prompt: f"answer {len(fake.calls)}" + " more" * (len(fake.calls) % 3)
        return fake

    monkeypatch.setattr(backends, "auto_choice", choice)
    monkeypatch.setattr(backends, "create_backend", create)
    return seen


def mc_file(tmp_path):
    f = tmp_path / "mc.jsonl"
    rows = [{"prompt": f"Which is kinder? {i}", "corrects": ["a kind answer"], "incorrects": ["a rude one", "x"]}
            for i in range(3)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def test_every_command_resolves_auto_in_one_place_with_its_budget(tmp_path, opened):
    """auto_choice decides for generate, label, eval, eval-labeler, load_backend and a Ray worker,
    each given the most tokens its run generates."""
    import charter
    from charter.evaluate.suite import EvalConfig, evaluate
    from charter.generate import generate, settings_from
    from charter.pipeline.ray_executor import GenerateJob, _Worker
    from charter.rlcai.labeler_eval import LabelerEvalConfig, evaluate_labeler
    from charter.rlcai.labels import LabelConfig, label

    cfg = GenerateConfig(limit=2, rounds=1, helpful_prompts="none", max_tokens=10, out=str(tmp_path / "r"))
    generate(cfg, progress=False)
    assert opened == [("fake", "embedded", 2 * 3 * 10)]  # 2 prompts x (answer, critique, revision) x 10
    label(LabelConfig(limit=2, max_tokens=10, out=str(tmp_path / "l.jsonl")), progress=False)
    q = SCORED_QUESTION_TOKENS
    assert opened[-1] == ("fake", "embedded", 2 * 2 * 10 + 2 * 2 * q)  # answers + both orders of each pair
    evaluate(EvalConfig(run=str(tmp_path / "r"), models=["base"], max_tokens=7, bootstrap=5))
    assert opened[-1] == ("fake", "base", 2 * 7)
    evaluate_labeler(LabelerEvalConfig(file=mc_file(tmp_path), out=str(tmp_path / "lab.json"), plot="none"))
    assert opened[-1] == ("fake", "embedded", 3 * 2 * 2 * q)  # 3 rows x 2 incorrects x both orders
    charter.load_backend(model="m").close()
    assert opened[-1] == ("fake", "m", None)
    _Worker(GenerateJob("auto", "w", {}, None, settings_from(cfg)), workload=4).close()
    assert opened[-1] == ("fake", "w", 4 * 10)
    assert len(opened) == 6


def test_the_rl_feedback_model_resolves_auto_too(tmp_path, opened):
    pytest.importorskip("trl")
    from charter.rlcai.reward import build_feedback_reward
    from charter.train.rl import load_rl_config, rl_prompts

    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    cfg = load_rl_config(None, reward="feedback", out=str(tmp_path / "o"), prompts=str(tmp_path / "p.jsonl"),
                         helpful_prompts="none", few_shot="none")
    build_feedback_reward(cfg, rl_prompts(cfg)).close()
    scored = 3 * 4 * 2 * SCORED_QUESTION_TOKENS
    assert opened == [("fake", "embedded", scored + 3 * 64)]  # scored completions + the reference answers


def test_every_model_argument_takes_backend_colon_model(tmp_path, monkeypatch, opened, capsys):
    """BACKEND:MODEL picks the engine whatever --backend says, in every command."""
    from charter.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", "vllm:embedded", "--backend", "fake", "--limit", "1", "--rounds", "1",
                 "--quiet", "--out", "r"]) == 0
    assert opened == [("vllm", "embedded", None)]
    assert main(["label", "--policy", "fake:x", "--feedback-model", "transformers:embedded", "--limit", "1",
                 "--quiet", "--out", "l.jsonl"]) == 0
    assert opened[1:] == [("fake", "x", None), ("transformers", "embedded", None)]
    assert main(["eval", "r", "--models", "fake:a", "llamacpp:m.gguf", "--judge", "openai:j", "--bootstrap", "5"]) == 0
    assert opened[3:] == [("fake", "a", None), ("llamacpp", "m.gguf", None), ("openai", "j", None)]
    assert main(["eval-labeler", mc_file(tmp_path), "--model", "fake:anything", "--backend", "vllm",
                 "--plot", "none", "--quiet"]) == 0
    assert opened[6:] == [("fake", "anything", None)]


def test_a_fake_model_spec_runs_on_the_fake_backend_end_to_end(tmp_path):
    """No patching: fake:anything opens the fake backend (the records say so) over --backend transformers."""
    from charter.evaluate.suite import open_backend
    from charter.generate import generate
    from charter.runs.runread import load_run

    generate(GenerateConfig(model="fake:anything", backend="transformers", limit=1, rounds=1, helpful_prompts="none",
                            out=str(tmp_path / "r")), progress=False)
    (rec,) = load_run(tmp_path / "r")
    assert (rec.backend, rec.model) == ("fake", "anything")
    with open_backend("fake:judge", "transformers") as judge:
        assert (judge.name, judge.model_id) == ("fake", "judge")


def test_open_model_logs_what_auto_chose_and_why(caplog):
    with caplog.at_level("INFO", logger="charter"):
        with backends.open_model("fake:m") as b:  # a named backend: nothing to resolve, nothing logged
            assert b.name == "fake"
        assert backends.resolve_backend("auto", "m.gguf", 5) == "llamacpp"
    assert caplog.text.count("backend auto -> ") == 1 and "backend auto -> llamacpp (a GGUF file)" in caplog.text


def test_a_scoring_job_weighs_its_questions_so_auto_picks_the_engine_that_caches_prefixes(tmp_path):
    """eval-labeler on the 32 rows of a small file generates nothing, yet each question costs
    transformers as much as ~20 generated tokens: the budget says so, and auto goes past the
    short-run threshold."""
    from charter.rlcai.labeler_eval import LabelerEvalConfig, labeler_budget

    rows = "".join(json.dumps({"prompt": f"q{i}", "corrects": ["a"], "incorrects": ["b"]}) + "\n" for i in range(32))
    (tmp_path / "mc.jsonl").write_text(rows)
    budget = labeler_budget(LabelerEvalConfig(file=str(tmp_path / "mc.jsonl")))
    assert budget == 32 * 2 * SCORED_QUESTION_TOKENS > backends.AUTO_SHORT_RUN_TOKENS
