"""Credentials (URL userinfo, authorization values) never reach what Charter writes or prints."""
import json
import logging

import pytest

from charter.backends.fake import FakeBackend
from charter.cli import install_log_handler, main
from charter.errors import BackendError
from charter.redact import error_text, redact
from charter.rlcai.labels import LabelConfig, label
from charter.rlcai.label_store import read_transcripts, transcripts_path

KEY = "sk-SECRET0123456789"
BODY = f"401 Unauthorized: {{'headers': {{'Authorization': 'Bearer {KEY}', 'x-api-key': '{KEY}'}}}}"


@pytest.mark.parametrize("text, expected", [
    (f"http://user:{KEY}@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
    (f"APIConnectionError from https://{KEY}@api.example.com/v1/chat (is the server running?)",
     "APIConnectionError from https://***@api.example.com/v1/chat (is the server running?)"),
    (f"Authorization: Bearer {KEY}", "Authorization: Bearer ***"),
    (f'{{"authorization": "Basic {KEY}", "n": 1}}', '{"authorization": "Basic ***", "n": 1}'),
    (f"proxy-authorization={KEY}; next", "proxy-authorization=***; next"),
    (f"the server said: bearer {KEY} is invalid", "the server said: bearer *** is invalid"),
    ("http://127.0.0.1:8000/v1 and mail@example.com, Bearer tokens", None),  # nothing secret: unchanged
])
def test_redact_text(text, expected):
    assert redact(text) == (text if expected is None else expected)


def test_redact_data_and_errors():
    config = {"backend_options": {"base_url": f"http://u:{KEY}@h/v1", "api_key": KEY, "n": 3}, "rounds": [1, BODY]}
    out = redact(config)
    assert KEY not in json.dumps(out) and out["backend_options"]["n"] == 3 and out["backend_options"]["api_key"] == "***"
    assert config["backend_options"]["api_key"] == KEY  # a copy: the values in use stay as given
    assert error_text(RuntimeError(BODY)).startswith("RuntimeError: 401 Unauthorized") and KEY not in error_text(
        RuntimeError(BODY))


def test_cli_error_edge_and_log_lines_are_redacted(tmp_path, monkeypatch, capsys):
    import importlib

    def fails(*a, **k):
        logging.getLogger("charter.test").warning("warning: retrying %s", f"http://u:{KEY}@h/v1")
        raise BackendError(f"the first 8 requests all failed with: {BODY}")

    monkeypatch.setattr(importlib.import_module("charter.generate"), "generate", fails)
    monkeypatch.chdir(tmp_path)
    install_log_handler()
    assert main(["generate", "--backend", "fake", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert "error: the first 8 requests all failed with: 401 Unauthorized" in err and "Bearer ***" in err
    assert "warning: retrying http://***@h/v1" in err and KEY not in err


def test_generate_with_a_key_in_base_url_prints_no_key(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openai")
    monkeypatch.chdir(tmp_path)
    args = ["generate", "--backend", "openai", "--model", "m", "--base-url", f"http://user:{KEY}@127.0.0.1:9/v1",
            "--backend-option", "max_retries=0", "--limit", "1", "--helpful-prompts", "none", "--rounds", "1",
            "--out", "r", "--quiet"]
    assert main(args) == 1  # the record failed: nothing listens on port 9
    out, err = capsys.readouterr()
    assert "1 record failed: " in out and "http://***@127.0.0.1:9/v1" in out and KEY not in out + err


def test_label_error_fields_are_redacted(tmp_path):
    class Leaky(FakeBackend):
        def chat(self, *a, **k):
            raise RuntimeError(BODY)

    cfg = LabelConfig(backend="fake", limit=1, out=str(tmp_path / "l.jsonl"))
    s = label(cfg, policy=Leaky(), feedback=FakeBackend(), progress=False)
    t = read_transcripts(transcripts_path(cfg.out))
    assert s.failures == 1 and t[0]["error"].startswith("RuntimeError: 401 Unauthorized")
    assert KEY not in transcripts_path(cfg.out).read_text() and "Bearer ***" in t[0]["error"]
