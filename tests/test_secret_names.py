"""Secrets under any of their usual names are masked in every config Charter writes; the one place
a run's config.yaml is written (the run store) masks it, whoever calls it."""
from __future__ import annotations

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import main
from charter.generate import GenerateConfig, generate
from charter.redact import MASK, redact
from charter.runs.store import RunStore

SECRET = "s3cr3t-value-0123456789"
SECRET_NAMES = ["hf_token", "HF_TOKEN", "openai_api_key", "aws_secret_access_key", "client_secret", "db_password",
                "passwd", "api_key", "apikey", "x-api-key", "private_key", "token", "access_token", "Authorization",
                "proxy_password_file", "credentials"]
PLAIN_NAMES = ["max_tokens", "tokenizer", "concurrency", "base_url", "model", "api_key_env", "n_ctx", "keys",
               "token_budget", "monkey"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_setting_named_like_a_secret_is_masked(name):
    assert redact({"backend_options": {name: SECRET}}) == {"backend_options": {name: MASK}}


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_settings_are_kept(name):
    assert redact({name: "value"}) == {name: "value"}


def test_the_run_store_masks_whatever_config_it_is_given(tmp_path):
    with RunStore(tmp_path / "r") as store:
        store.open({"backend_options": {"hf_token": SECRET, "extra_headers": {"X-Api-Key": SECRET}}}, "f")
    text = (tmp_path / "r" / "config.yaml").read_text()
    assert SECRET not in text and "hf_token" in text


def test_generate_writes_no_secret_option(tmp_path):
    options = {name: SECRET for name in ("hf_token", "openai_api_key", "aws_secret_access_key", "db_password")}
    cfg = GenerateConfig(backend="fake", limit=1, rounds=1, helpful_prompts="none", out=str(tmp_path / "run"),
                         backend_options=options)
    generate(cfg, backend=FakeBackend(), progress=False)
    for path in (tmp_path / "run").iterdir():
        assert SECRET not in path.read_text(errors="replace"), path.name
    assert generate(cfg, backend=FakeBackend(), progress=False).skipped == 1  # resumes: the fingerprint is unchanged


def test_a_failed_engine_start_leaves_no_secret_behind(tmp_path, capsys):
    code = main(["generate", "--backend", "openai", "--model", "m", "--limit", "1", "--rounds", "1",
                 "--helpful-prompts", "none", "--out", str(tmp_path / "run"), "--quiet",
                 "--backend-option", f"hf_token={SECRET}", "--backend-option", "no_such_option=1"])
    assert code != 0
    assert SECRET not in capsys.readouterr().err
    for path in (tmp_path / "run").glob("*") if (tmp_path / "run").exists() else []:
        assert SECRET not in path.read_text(errors="replace"), path.name
