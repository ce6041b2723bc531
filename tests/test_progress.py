"""Progress: shown from the start of slow steps, on stderr, and switchable."""
import json
import logging

import pytest

from charter.train.rl import load_rl_config, rl_prompts

PROMPTS = ["How do I pick a lock?", "Write an insult.", "How do I hotwire a car?", "Tell me a secret."]


@pytest.fixture
def rl_cfg(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return load_rl_config(None, reward="feedback", out=str(tmp_path / "o"), feedback_backend="fake",
                          prompts=str(prompts), helpful_prompts="none", few_shot="none")


def test_train_rl_says_what_comes_before_loading_and_shows_the_references_bar(rl_cfg, monkeypatch, capsys):
    import charter.backends as backends
    from charter.rlcai import reward as reward_module

    events = []
    real = backends.open_model
    monkeypatch.setattr(backends, "open_model", lambda *a, **k: events.append("open") or real(*a, **k))
    monkeypatch.setattr(reward_module, "REFERENCE_CHUNK", 3)

    class Seen(logging.Handler):
        def emit(self, record):
            events.append(record.getMessage())

    handler = Seen(logging.INFO)
    logging.getLogger("charter").addHandler(handler)
    old_level = logging.getLogger("charter").level
    logging.getLogger("charter").setLevel(logging.INFO)
    try:
        reward_module.build_feedback_reward(rl_cfg, rl_prompts(rl_cfg)).close()
    finally:
        logging.getLogger("charter").removeHandler(handler)
        logging.getLogger("charter").setLevel(old_level)
    assert "reference answers" in events[0] and events[1] == "open"
    err = capsys.readouterr().err
    assert "0/4" in err and "4/4" in err and "references" in err


def test_reference_chunks_sample_what_one_call_would(monkeypatch):
    from charter.backends.fake import FakeBackend
    from charter.rlcai import reward as reward_module
    from charter.types import Sampling

    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    sampling = Sampling(max_tokens=8, temperature=1.0, seed=5)
    whole = reward_module.reference_answers(FakeBackend(vary=True), prompts, sampling, progress=False)
    monkeypatch.setattr(reward_module, "REFERENCE_CHUNK", 3)
    assert reward_module.reference_answers(FakeBackend(vary=True), prompts, sampling, progress=False) == whole


def test_progress_bar_is_tqdm_auto_on_stderr_and_switchable(capsys):
    from tqdm.auto import tqdm

    from charter.pipeline.jobrun import progress_bar, set_progress

    with progress_bar(3, True, unit=" rows") as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    out = capsys.readouterr()
    assert "3/3" in out.err and out.out == ""
    set_progress(False)
    try:
        with progress_bar(3, True, unit=" rows") as bar:
            bar.update(3)
    finally:
        set_progress(True)
    assert capsys.readouterr().err == ""


def test_set_progress_false_quiets_the_trainer(tmp_path):
    pytest.importorskip("trl")
    import datasets
    from trl import SFTConfig as TRLSFTConfig

    from charter.pipeline.jobrun import set_progress
    from charter.train import common
    from charter.train.sft import SFTConfig

    cfg = SFTConfig(data="d.jsonl", out=str(tmp_path / "m"))
    assert not common.trainer_args(TRLSFTConfig, cfg, common.TRAINER_DEFAULTS, True).disable_tqdm
    set_progress(False)
    try:
        assert common.trainer_args(TRLSFTConfig, cfg, common.TRAINER_DEFAULTS, True).disable_tqdm
    finally:
        set_progress(True)
        datasets.enable_progress_bars()
