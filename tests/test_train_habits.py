"""Trainer habits: `train sft` reads a run as `export` writes it; --report-to; --push-to-hub with a model card."""
import json

import pytest

from charter.errors import ConfigError
from charter.export import ExportConfig, export_run
from charter.generate import GenerateConfig, generate
from charter.inputs.rows import to_prompt_completion
from charter.train.sft import SFTConfig, run_rows, sft_dataset

BOILERPLATE = "Sure, here is a revised response: "


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake-backend run: one final revision carries boilerplate, another repeats the round before."""
    folder = tmp_path_factory.mktemp("habits") / "run"
    generate(GenerateConfig(backend="fake", limit=4, rounds=2, helpful_samples=1, out=str(folder)), progress=False)
    path = folder / "records.jsonl"
    lines, red = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()], 0
    for rec in lines:
        if rec["kind"] != "red_team" or rec["error"]:
            continue
        last = rec["rounds"][-1]
        if red == 0:
            last["revision"] = BOILERPLATE + last["revision"]
        elif red == 1:
            last["revision"] = rec["rounds"][-2]["revision"]
        rec["final"], red = last["revision"], red + 1
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return folder


def _exported(run, tmp_path, **options):
    out = tmp_path / "sft.jsonl"
    export_run(ExportConfig(run=str(run), format="sft", out=str(out), card=False, **options))
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("options", [{}, {"filter": ["all"], "helpful_ratio": 0.4, "seed": 3}])
def test_train_sft_trains_on_the_rows_export_writes(run, tmp_path, options):
    exported = _exported(run, tmp_path, **options)
    cfg = SFTConfig(data=str(run), out=str(tmp_path / "model"), **options)
    assert run_rows(cfg) == exported
    assert sft_dataset(cfg).to_list() == [to_prompt_completion(r["messages"]) for r in exported]
    assert not any(BOILERPLATE.strip() in r["messages"][-1]["content"] for r in exported)


def test_train_sft_filter_needs_a_run(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="filter"):
        sft_dataset(SFTConfig(data=str(data), out=str(tmp_path / "m"), filter=["empty"]))


def _args(cfg):
    pytest.importorskip("trl")
    from trl import SFTConfig as TRLSFTConfig

    from charter.train import common

    return common.trainer_args(TRLSFTConfig, cfg, common.TRAINER_DEFAULTS, False)


def test_report_to_goes_to_the_trainer(tmp_path, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else found(name, *a))
    assert _args(SFTConfig(data="d.jsonl", out=str(tmp_path / "m"))).report_to in ([], "none", ["none"])
    assert _args(SFTConfig(data="d.jsonl", out=str(tmp_path / "m"), report_to="wandb")).report_to == ["wandb"]


def test_report_to_a_missing_integration_names_its_pip_install(tmp_path, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else found(name, *a))
    with pytest.raises(ConfigError, match="pip install trackio"):
        _args(SFTConfig(data="d.jsonl", out=str(tmp_path / "m"), report_to="trackio"))


def test_report_to_is_one_setting_on_every_trainer_and_a_flag(capsys):
    from charter.cli import main
    from charter.train.dpo import DPOConfig
    from charter.train.pm import PMConfig
    from charter.train.rl import RLConfig

    for cls in (SFTConfig, DPOConfig, PMConfig, RLConfig):
        assert "report_to" in cls.__dataclass_fields__ and "report_to" not in cls.__dict__.get("__annotations__", {})
    for command in ("sft", "dpo", "pm", "rl"):
        with pytest.raises(SystemExit):
            main(["train", command, "--help"])
        shown = capsys.readouterr().out
        assert "--report-to" in shown and "--push-to-hub" in shown and "--private" in shown
        assert "--hub-token" not in shown  # the token comes from HF_TOKEN or the login, never a flag


def test_report_to_under_trainer_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="top level"):
        _args(SFTConfig(data="d.jsonl", out=str(tmp_path / "m"), trainer={"report_to": "wandb"}))


def _trained(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl"):
        (out / name).write_text("{}", encoding="utf-8")
    return out


def test_push_to_hub_uploads_the_model_with_its_card(tmp_path, monkeypatch):
    from pathlib import Path

    from huggingface_hub import HfApi, ModelCard

    import charter
    from charter.train import hub

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(repo=(repo_id, kw)))

    def upload(self, folder_path, repo_id, **kw):  # what would go up, read when it would be sent
        calls["files"] = sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file())
        calls["card"] = (Path(folder_path) / "README.md").read_text(encoding="utf-8")
        calls["upload"] = (repo_id, kw)

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_123")
    out = _trained(tmp_path)
    cfg = SFTConfig(data=str(tmp_path / "run"), out=str(out), push_to_hub="me/charter-sft", private=True,
                    filter=["all"])
    hub.finish(cfg, out, "sft")
    assert calls["repo"] == ("me/charter-sft", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls["upload"][0] == "me/charter-sft" and "checkpoints/**" in calls["upload"][1]["ignore_patterns"]
    assert {"README.md", "config.json", "model.safetensors", "train_log.jsonl"} <= set(calls["files"])
    card = calls["card"]
    assert ModelCard(card).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "charter train sft" in card and f"Charter {charter.__version__}" in card
    assert str(tmp_path / "run") in card and '"filter"' in card
    assert 'AutoModelForCausalLM.from_pretrained("me/charter-sft")' in card
    assert "hf_not_a_real_token" not in card and "hf_not_a_real_token" not in "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in out.rglob("*") if p.is_file())


def test_push_to_hub_failure_keeps_the_model_and_says_how_to_retry(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from charter.errors import RunError
    from charter.train import hub

    def offline(self, *a, **kw):
        raise ConnectionError("Hub unreachable")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    out = _trained(tmp_path)
    with pytest.raises(RunError, match=r"model is saved in .*hf upload me/x"):
        hub.finish(SFTConfig(data="d", out=str(out), push_to_hub="me/x"), out, "sft")
    assert (out / "README.md").is_file()


def test_without_push_the_card_is_written_and_nothing_uploads(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from charter.train import hub

    monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **kw: pytest.fail("uploaded without --push-to-hub"))
    out = _trained(tmp_path)
    hub.finish(SFTConfig(data="d", out=str(out), model=str(tmp_path)), out, "pm")
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "base_model" not in card and "AutoModelForSequenceClassification" in card


@pytest.mark.slow
def test_train_sft_on_a_run_pushes_the_trained_model_and_card(run, tmp_path, monkeypatch):
    """End to end on the embedded model: one step on the run's exported rows, then the upload."""
    pytest.importorskip("trl")
    from pathlib import Path

    from huggingface_hub import HfApi

    from charter.train.sft import train_sft

    sent = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, folder_path, repo_id, **kw: sent.update(
        files={p.name for p in Path(folder_path).rglob("*") if p.is_file()},
        card=(Path(folder_path) / "README.md").read_text(encoding="utf-8")))
    cfg = SFTConfig(data=str(run), out=str(tmp_path / "m"), filter=["all"], push_to_hub="me/sft",
                    trainer={"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128})
    out = train_sft(cfg, progress=False)
    assert {"README.md", "config.json", "model.safetensors", "train_log.jsonl"} <= sent["files"]
    assert "charter train sft" in sent["card"] and (out / "README.md").read_text(encoding="utf-8") == sent["card"]
