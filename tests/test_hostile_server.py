"""The openai backend against hostile OpenAI-compatible servers on 127.0.0.1: a reply that trickles
in byte by byte, bodies that are not a completion, and numbers or text no model produces. Each one
ends the request with one BackendError (the pipeline fails that record), never a hang or a crash."""
import logging

import pytest

from charter.errors import BackendError
from charter.types import Sampling

from fault_proxy import Canned, chat_reply

pytest.importorskip("openai")

CHAT = [{"role": "user", "content": "Hi"}]
SAMPLING = Sampling(max_tokens=8)


def backend(url, **options):
    from charter.backends import create_backend

    return create_backend("openai", "m", base_url=url, **{"max_retries": 0, "timeout": 30.0, **options})


def test_a_trickling_reply_ends_at_the_request_deadline():
    """Each byte comes well within the per-read timeout, so only a deadline on the whole request
    ends it: the body would take about 16 s, the deadline is 1 s."""
    body = " " * 40 + chat_reply()  # JSON allows leading blanks: a server that finishes sends a valid reply
    with Canned(body, trickle=40, trickle_s=0.4) as server, backend(server.url, timeout=1.0) as b:
        with pytest.raises(BackendError, match=r"within 1s"):
            b.chat([CHAT], SAMPLING)


def test_a_reply_that_arrives_in_time_still_counts():
    with Canned(chat_reply("fine")) as server, backend(server.url, timeout=5.0) as b:
        (out,) = b.chat([CHAT], SAMPLING)
    assert out.text == "fine" and (out.prompt_tokens, out.completion_tokens) == (3, 1)


@pytest.mark.parametrize("body, content_type", [
    ("<html><body>Welcome to nginx!</body></html>", "text/html"),
    ('data: {"choices": []}\n\ndata: [DONE]\n\n', "text/event-stream"),
    ('{"choices": []}', "application/json"),
    ('{"choices": null}', "application/json"),
    ('{"object": "list", "data": []}', "application/json"),
    ('{"choices": [{"index": 0}]}', "application/json"),
    ('{"choices": [{"message": "hello"}]}', "application/json"),
])
def test_a_200_that_is_not_a_completion_is_one_backend_error(body, content_type):
    with Canned(body, content_type=content_type) as server, backend(server.url) as b:
        with pytest.raises(BackendError, match="no completion|not a completion"):
            b.chat([CHAT], SAMPLING)
        with pytest.raises(BackendError, match="no completion|not a completion"):
            b.complete(["Hi"], SAMPLING)


@pytest.mark.parametrize("reply", [
    chat_reply(content=12345),
    chat_reply(content={"text": "hi"}),
    chat_reply(usage={"prompt_tokens": "lots", "completion_tokens": 1}),
    chat_reply(usage={"prompt_tokens": -5, "completion_tokens": 1}),
    chat_reply(usage={"prompt_tokens": 10 ** 30, "completion_tokens": 1}),
    chat_reply(usage={"prompt_tokens": 3, "completion_tokens": 1e308}),
    chat_reply(usage={}, raw_usage='{"prompt_tokens": 1e999, "completion_tokens": 1}'),
    chat_reply(usage={"prompt_tokens": True, "completion_tokens": 1}),
])
def test_junk_numbers_or_text_from_a_server_fail_that_request(reply):
    with Canned(reply) as server, backend(server.url) as b:
        with pytest.raises(BackendError, match="server|usage|text|token"):
            b.chat([CHAT], SAMPLING)


def test_an_api_key_env_that_names_no_key_variable_is_warned_about(caplog, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    with caplog.at_level(logging.WARNING, logger="charter"):
        backend("http://127.0.0.1:9/v1", api_key_env="HOME").close()
    assert any("HOME" in r.getMessage() and "key" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv("MY_SERVER_API_KEY", "k")
    with caplog.at_level(logging.WARNING, logger="charter"):
        backend("http://127.0.0.1:9/v1", api_key_env="MY_SERVER_API_KEY").close()
    assert not caplog.records
