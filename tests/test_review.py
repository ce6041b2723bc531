"""The review page's server and its marks: the API through Starlette's TestClient (marks saved
as made, a reload shows them, reviewers kept apart, bad requests answered with what is wrong),
the marks file read back (last mark wins, cleared marks, torn and damaged lines), and the
`charter review` command (started as a process, stopped by SIGTERM or Ctrl-C, nothing left)."""
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from charter.cli import main
from charter.errors import ConfigError, InputError
from charter.review import read_marks
from support import fails, read_line

starlette = pytest.importorskip("starlette", reason="starlette missing: pip install starlette (a vLLM dependency)")
from starlette.testclient import TestClient  # noqa: E402

from charter.review.app import allowed_hosts, review_app  # noqa: E402

HOST = "http://127.0.0.1:8750"


def client(run, reviewer="alice", **kw) -> TestClient:
    return TestClient(review_app(run, reviewer, hosts=allowed_hosts("127.0.0.1"), **kw), base_url=HOST)


def keys(c: TestClient, kind: str) -> list[str]:
    return re.findall(rf'data-key="([^"]+)" data-type="{kind}"', c.get("/").text)


def post(c: TestClient, key: str, mark) -> dict:
    r = c.post("/api/marks", json={"key": key, "mark": mark})
    assert r.status_code == 200, r.text
    return r.json()


def test_marks_are_saved_as_made_and_a_reload_shows_them(labelled):
    c = client(labelled)
    revisions, pairs = keys(c, "revision"), keys(c, "pair")
    assert len(revisions) == 3 and len(pairs) == 3
    post(c, revisions[0], "better")
    post(c, revisions[1], "worse")
    post(c, revisions[1], "same")  # changed: the last mark counts
    post(c, pairs[0], "b")
    lines = (labelled / "reviews" / "alice.jsonl").read_text().splitlines()
    assert len(lines) == 4  # one fsynced line per mark, appended as it was made
    again = client(labelled)  # a new server on the same run: the marks come from the file
    assert again.get("/api/marks").json()["marks"] == {revisions[0]: "better", revisions[1]: "same", pairs[0]: "b"}
    page = again.get("/").text
    assert f'data-key="{revisions[1]}" data-type="revision" data-mark="same"' in page
    assert f'data-key="{pairs[0]}" data-type="pair" data-mark="b"' in page
    post(again, revisions[0], None)  # cleared
    assert revisions[0] not in again.get("/api/marks").json()["marks"]


def test_read_marks_gives_typed_marks_with_the_picked_answer_as_label_stored_it(labelled):
    from charter.rlcai.label_store import read_transcripts, transcripts_path

    c = client(labelled)
    review = c.app.state.review
    pair = review.pairs[0]
    post(c, keys(c, "revision")[2], "worse")
    post(c, pair.key, "a")  # the answer shown first
    marks = read_marks(labelled)
    (rev,) = marks.revisions
    chain = next(ch for ch in review.chains if ch.record.id == rev.record)
    assert (rev.mark, rev.round, rev.reviewer, rev.principle) == ("worse", 1, "alice", chain.record.rounds[0].principle)
    (picked,) = marks.pairs
    assert picked.labels == transcripts_path(labelled / "labels.jsonl").resolve() and picked.pair == pair.pair
    assert picked.chosen == pair.shown_first
    stored = next(t for t in read_transcripts(picked.labels) if t["id"] == picked.pair)
    assert stored["answers"][picked.chosen] == pair.answers[pair.shown_first]
    one = read_marks(labelled / "reviews" / "alice.jsonl")  # one reviewer's file, as a run's
    assert (one.revisions, one.pairs) == (marks.revisions, marks.pairs)


def test_reviewers_are_kept_apart(labelled):
    alice, bob = client(labelled, "alice"), client(labelled, "bob")
    key = keys(alice, "revision")[0]
    post(alice, key, "better")
    post(bob, key, "worse")
    assert alice.get("/api/marks").json()["marks"] == {key: "better"}
    assert bob.get("/api/marks").json()["marks"] == {key: "worse"}
    assert sorted(p.name for p in (labelled / "reviews").iterdir()) == ["alice.jsonl", "bob.jsonl"]
    marks = read_marks(labelled)
    assert sorted((m.reviewer, m.mark) for m in marks.revisions) == [("alice", "better"), ("bob", "worse")]
    assert marks.summary()["revisions"] == {"better": 1, "worse": 1, "same": 0}


@pytest.mark.parametrize("body, status, message", [
    ({"key": "nope", "mark": "better"}, 404, "no item 'nope' on this page"),
    ({"key": "REV", "mark": "a"}, 400, "a revision's mark is better, worse, same or null, not 'a'"),
    ({"key": "PAIR", "mark": "better"}, 400, "a pair's mark is a, b or null, not 'better'"),
    ({"key": "REV"}, 400, 'send a JSON object {"key": KEY, "mark": MARK}'),
    ({"key": "REV", "mark": 3}, 400, "'mark' must be text or null, not 3"),
])
def test_bad_marks_get_a_clear_error_and_write_nothing(labelled, body, status, message):
    c = client(labelled)
    fill = {"REV": keys(c, "revision")[0], "PAIR": keys(c, "pair")[0]}
    r = c.post("/api/marks", json={k: fill.get(v, v) if isinstance(v, str) else v for k, v in body.items()})
    assert r.status_code == status and message in r.json()["error"]
    assert not (labelled / "reviews" / "alice.jsonl").exists()


def test_requests_from_elsewhere_are_refused(labelled):
    c = client(labelled)
    key = keys(c, "revision")[0]
    r = c.post("/api/marks", content=json.dumps({"key": key, "mark": "better"}), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
    r = c.post("/api/marks", json={"key": key, "mark": "better"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "this server's own page only" in r.json()["error"]
    r = c.get("/", headers={"host": "evil.example:8750"})  # a DNS-rebinding name
    assert r.status_code == 403 and "answers to 127.0.0.1" in r.json()["error"]
    assert c.post("/api/marks", content=b"{" * 5000, headers={"content-type": "application/json"}).status_code == 413
    assert not (labelled / "reviews" / "alice.jsonl").exists()
    ok = c.post("/api/marks", json={"key": key, "mark": "better"}, headers={"origin": HOST})
    assert ok.status_code == 200


def test_page_escapes_model_text_and_allows_only_its_own_script(tmp_path):
    from support import XSS, make_run

    run = make_run(tmp_path, with_eval=False)
    r = client(run).get("/")
    assert r.status_code == 200 and XSS not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert r.text.count("<script>") == 1 and "script-src 'sha256-" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"


def test_labels_given_as_the_rows_file_or_the_transcripts_and_a_wrong_file_named(labelled, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in labelled.glob("labels.*"):
        p.rename(moved / p.name)
    assert not keys(client(labelled), "pair")
    assert "No label pairs" in client(labelled).get("/").text
    assert len(keys(client(labelled, labels=[moved / "labels.jsonl"]), "pair")) == 3
    assert len(keys(client(labelled, labels=[moved / "labels.transcripts.jsonl"]), "pair")) == 3
    with pytest.raises(InputError, match=r"no label transcripts at .*prompts\.transcripts\.jsonl"):
        review_app(labelled, "alice", labels=[tmp_path / "prompts.jsonl"])


def test_a_mark_on_texts_that_changed_is_stale_and_not_shown(labelled):
    c = client(labelled)
    key = keys(c, "revision")[0]
    post(c, key, "worse")
    path = labelled / "reviews" / "alice.jsonl"
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "digest": "0" * 16}) + "\n")  # as if the record were generated again
    marks = client(labelled).get("/api/marks").json()
    assert marks["marks"] == {} and marks["stale"] == 1
    assert "1 earlier mark(s) were on texts that changed since" in client(labelled).get("/").text


def test_torn_and_damaged_lines_are_set_aside_and_the_rest_kept(labelled, caplog):
    c = client(labelled)
    a, b = keys(c, "revision")[:2]
    post(c, a, "better")
    path = labelled / "reviews" / "alice.jsonl"
    good = path.read_text()
    path.write_text(good + '{"kind": "revision", "oops"\n' + good + '{"kind": "rev')  # damaged, then torn
    c = client(labelled)  # opening the log moves both aside
    assert (labelled / "reviews" / "alice.bad.jsonl").read_text().count("\n") == 2
    post(c, b, "same")
    assert c.get("/api/marks").json()["marks"] == {a: "better", b: "same"}
    assert [m.reviewer for m in read_marks(labelled).revisions] == ["alice", "alice"]  # the aside file is no reviewer
    (labelled / "reviews" / "carol.jsonl").write_text('{"kind": "pair"}\n')
    with pytest.raises(InputError, match=r"carol\.jsonl:1: a mark needs its 'reviewer' and 'digest'"):
        read_marks(labelled)


def test_bad_settings_are_config_errors(run, capsys):
    fails(capsys, ["review", str(run), "--reviewer", "../x"], r"--reviewer '\.\./x' cannot name a marks file")
    fails(capsys, ["review", str(run.parent / "nope"), "--reviewer", "x"], r"no run at .*nope")
    fails(capsys, ["review", str(run), "--reviewer", "x", "--port", "70000"], r"--port.*70000")
    with pytest.raises(ConfigError, match="no reviewer: pass --reviewer NAME"):
        from charter.review import ReviewConfig, review

        review(ReviewConfig(run=str(run)))


def test_a_port_in_use_is_named(run, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        fails(capsys, ["review", str(run), "--reviewer", "x", "--port", str(port)],
              rf"--port {port} is in use on 127.0.0.1; pick another port, or --port 0")


def test_reviewer_defaults_to_user_and_open_launches_a_browser(run, monkeypatch, capsys):
    from charter.review import serve

    opened, seen = [], {}

    def fake_review(cfg, ready):
        seen["reviewer"], seen["labels"] = cfg.reviewer, cfg.labels
        ready("http://127.0.0.1:1234/")
        return serve.ReviewResult("http://127.0.0.1:1234/", run / "reviews" / "ann.jsonl", 0)

    monkeypatch.setattr(serve, "review", fake_review)
    monkeypatch.setattr("webbrowser.open", opened.append)
    monkeypatch.setenv("USER", "ann")
    assert main(["review", str(run)]) == 0
    assert seen["reviewer"] == "ann" and not opened  # opens nothing unless asked
    assert main(["review", str(run), "--open", "--reviewer", "bo"]) == 0
    assert seen["reviewer"] == "bo" and opened == ["http://127.0.0.1:1234/"]
    assert main(["review", "--labels", "a.jsonl", str(run), "--labels", "b.jsonl"]) == 0  # repeatable, any order
    assert seen["labels"] == ["a.jsonl", "b.jsonl"]
    assert "at http://127.0.0.1:1234/ (Ctrl-C to stop)" in capsys.readouterr().out


def test_help_imports_no_web_server():
    code = ("import sys, charter.cli; charter.cli.build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_then_stops_cleanly_on_a_signal(labelled, sig):
    import psutil

    env = {**os.environ, "USER": "tester"}
    proc = subprocess.Popen([sys.executable, "-m", "charter.cli", "review", str(labelled), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = read_line(proc)
        url = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)", line).group(1)
        assert f"as tester at {url}" in line  # $USER, read at the command line
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"Charter review" in page.read()
        assert not psutil.Process(proc.pid).children(recursive=True)  # no worker, no reloader
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"stopped; 0 marks by tester are in {labelled.resolve() / 'reviews' / 'tester.jsonl'}" in out
    assert "Traceback" not in err
    with pytest.raises(OSError):  # nothing listens there any more
        urllib.request.urlopen(url, timeout=10)
