"""`charter train rl` on the real embedded model: a marker PM as the reward, 8 RLOO steps."""
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from charter.errors import ConfigError  # noqa: E402
from charter.train.rl import load_rl_config, rl_prompts  # noqa: E402

PROMPTS = [f"Say something about {t}." for t in ("tea", "snow", "bees", "maps")]


def write_prompts(path: Path) -> str:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return str(path)


def test_config_is_explicit_and_strict(tmp_path):
    cfg = load_rl_config(str(Path(__file__).resolve().parents[1] / "configs" / "train" / "rl.yaml"), pm="p", out="o")
    assert (cfg.samples, cfg.max_tokens, cfg.temperature, cfg.top_p, cfg.beta) == (4, 64, 1.0, 1.0, 0.05)
    with pytest.raises(ConfigError, match="set 'max_tokens' at the top level, not 'trainer.max_completion_length'"):
        load_rl_config(None, pm="p", out="o", trainer={"max_completion_length": 8})
    with pytest.raises(ConfigError, match="samples must be >= 2"):
        load_rl_config(None, pm="p", out="o", samples=1)
    with pytest.raises(ConfigError, match="'pm' is required"):
        load_rl_config(None, out="o")


def test_prompt_mix_ratio(tmp_path):
    red = write_prompts(tmp_path / "red.jsonl")
    rows = rl_prompts(load_rl_config(None, pm="p", out="o", prompts=red, helpful_ratio=0.5))
    assert len(rows) == 8 and sum(r[0]["content"] in PROMPTS for r in rows) == 4  # 4 red-team + 4 helpful
    assert len(rl_prompts(load_rl_config(None, pm="p", out="o", prompts=red, helpful_prompts="none"))) == 4
    assert rows == rl_prompts(load_rl_config(None, pm="p", out="o", prompts=red, helpful_ratio=0.5))  # seeded


def test_too_few_prompts_for_one_batch_fail_before_training(tmp_path, capsys):
    """RLOO takes whole batches of distinct prompts: 1 prompt for a batch of 2 would run 0 steps."""
    from charter.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n")
    out = tmp_path / "rl"
    assert main(["train", "rl", "--reward", "feedback", "--feedback-backend", "fake", "--few-shot", "none",
                 "--out", str(out), "--prompts", str(prompts), "--helpful-prompts", "none", "--max-tokens", "4",
                 "--max-steps", "2", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "1 prompt is fewer than one RL batch of 2 (8 completions = 2 prompts x 4 samples), so no step would run" \
        in captured.err
    assert "saved" not in captured.out and not (out / "config.json").exists()


@pytest.fixture(scope="module")
def marker_pm(tmp_path_factory):
    """A PM that prefers answers carrying 'Banana!' (the PM test's recipe)."""
    from support import TOPICS, marker_row, write

    from charter.train.pm import load_pm_config, train_pm

    tmp = tmp_path_factory.mktemp("pm")
    data = write(tmp / "l.jsonl", [marker_row(i, TOPICS[i % 14]) for i in range(12)])
    cfg = load_pm_config(None, data=data, out=str(tmp / "pm"), eval_share=0.0,
                         trainer={"learning_rate": 5e-5, "per_device_train_batch_size": 4, "max_steps": 3,
                                  "save_strategy": "no"})
    return train_pm(cfg, progress=False)["out"]


def mean_reward(policy: str, pm_dir: str) -> float:
    """PM score of 16 sampled answers (4 prompts x 4 seeds): the same seeds before and after training."""
    from charter.backends import create_backend
    from charter.scorer import load_pm
    from charter.types import Sampling

    backend = create_backend("transformers", policy)
    convos, answers = [], []
    for seed in range(4):
        got = backend.chat([[{"role": "user", "content": p}] for p in PROMPTS], Sampling(max_tokens=12, seed=seed))
        convos += [[{"role": "user", "content": p}] for p in PROMPTS]
        answers += [c.text for c in got]
    backend.close()
    pm = load_pm(pm_dir)
    scores = pm.score([c + [{"role": "assistant", "content": a}] for c, a in zip(convos, answers)])
    return sum(scores) / len(scores)


STEPS = 8


@pytest.mark.slow
def test_rl_steps_log_reward_and_kl_and_raise_the_reward(tmp_path, marker_pm, capsys):
    from charter.cli import main

    out = tmp_path / "rl"
    conf = tmp_path / "rl.yaml"
    conf.write_text("trainer:\n  learning_rate: 3.0e-4\n  save_strategy: 'no'\n")
    before = mean_reward("embedded", marker_pm)
    assert main(["train", "rl", "--config", str(conf), "--pm", marker_pm, "--out", str(out), "--prompts",
                 write_prompts(tmp_path / "p.jsonl"), "--helpful-prompts", "none", "--max-tokens", "12",
                 "--max-steps", str(STEPS), "--quiet"]) == 0
    assert "PM reward" in capsys.readouterr().out
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward" in s]
    assert len(steps) == STEPS and all("kl" in s and "completions/mean_length" in s for s in steps)
    assert (out / "rl.png").is_file() and (out / "config.json").is_file()
    after = mean_reward(str(out), marker_pm)  # the checkpoint loads in the transformers backend and generates
    print(f"mean PM reward before {before:+.3f}, after {after:+.3f}")
    # 3 steps moved the reward by +0.14 on an Intel CPU and -0.02 on an AMD one (noise); 8 steps
    # (2 passes over the 4 prompts) moved it -1.576 -> -0.577 on the AMD one, +0.49 at lr 1e-4.
    assert after - before > 0.2, (before, after)
    from charter.backends import create_backend
    from charter.types import Sampling

    engine = create_backend("vllm", str(out), kv_cache_memory_bytes=1 << 30, max_model_len=2048)
    try:  # the checkpoint also loads in the vLLM backend and generates
        assert engine.chat([[{"role": "user", "content": PROMPTS[0]}]], Sampling(max_tokens=8, temperature=0))[0].text
    finally:
        engine.close()


# ---- --reward feedback (d-RLAIF): the feedback model's own P as the reward ------------------------


def test_feedback_reward_config_errors():
    from charter.errors import BackendError

    cfg = load_rl_config(None, reward="feedback", out="o")
    assert (cfg.pm, cfg.feedback_model, cfg.feedback_backend) == ("", None, "auto")
    with pytest.raises(ConfigError, match="'pm' is required .*or use --reward feedback"):
        load_rl_config(None, reward="pm", out="o")
    with pytest.raises(ConfigError, match="--pm is the reward of --reward pm; drop it"):
        load_rl_config(None, reward="feedback", pm="p", out="o")
    with pytest.raises(ConfigError, match="reward must be one of pm, feedback"):
        load_rl_config(None, reward="judge", out="o")
    with pytest.raises(BackendError, match="unknown backend 'openia'"):
        load_rl_config(None, reward="feedback", feedback_backend="openia", out="o")


def test_feedback_reward_follows_the_feedback_models_probabilities():
    """A scripted judge that prefers the longer answer: P = softmax(-0.1, -2.5) in both orders."""
    import math

    from support import Scripted, always_a, longer

    from charter.rlcai.data import load_feedback
    from charter.rlcai.reward import FeedbackReward, prompt_key

    prompts = [[{"role": "user", "content": p}] for p in PROMPTS[:2]]
    refs = {prompt_key(p): "a medium answer" for p in prompts}
    judge = Scripted(longer)
    reward = FeedbackReward(judge, load_feedback(), refs, seed=3)
    done = [[{"role": "assistant", "content": c}] for c in ("short", "a much longer answer than the reference")]
    got = reward(prompts=[prompts[0], prompts[0]], completions=done)
    win = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5))
    assert got == pytest.approx([1 - win, win])
    assert len(judge.scored) == 8  # 2 completions x 2 orders x 2 options
    # both orders asked, under the prompt's seeded principle, with the reference as the other option
    p = reward.principle(prompts[0])
    asked = [c[-1]["content"] for c in judge.scored[::2]]
    assert all(p.text in q and "[[[a medium answer]]]" in q for q in asked)
    assert "(A) [[[short]]]" in asked[0] and "(A) [[[a medium answer]]]" in asked[1]
    assert reward.principle(prompts[0]) == FeedbackReward(judge, load_feedback(), refs, seed=3).principle(prompts[0])
    # a pure position-bias judge gives no preference: every completion 0.5
    assert FeedbackReward(Scripted(always_a), load_feedback(), refs)(prompts, done) == pytest.approx([0.5, 0.5])
    from charter.errors import RunError

    with pytest.raises(RunError, match="no reference answer"):
        reward(prompts=[[{"role": "user", "content": "unseen"}]], completions=done[:1])


def test_build_feedback_reward_on_a_fake_backend(tmp_path, monkeypatch):
    """References come from the starting policy (here the feedback backend itself); close() closes it."""
    from charter.backends.fake import FakeBackend
    from charter.rlcai.reward import build_feedback_reward, prompt_key

    closed = []
    monkeypatch.setattr(FakeBackend, "close", lambda self: closed.append(self.model_id))
    cfg = load_rl_config(None, reward="feedback", out=str(tmp_path / "o"), feedback_backend="fake",
                         prompts=write_prompts(tmp_path / "p.jsonl"), helpful_prompts="none", few_shot="none")
    prompts = rl_prompts(cfg)
    reward = build_feedback_reward(cfg, prompts)
    assert set(reward.references) == {prompt_key(p) for p in prompts}
    assert all(r.startswith("reply-") for r in reward.references.values())
    rows = reward.reference_rows(prompts)
    assert [r["reference"] for r in rows] == [reward.references[prompt_key(p)] for p in prompts]
    got = reward(prompts=prompts, completions=[[{"role": "assistant", "content": "x" * 5}] for _ in prompts])
    assert len(got) == 4 and all(0 <= g <= 1 for g in got)
    reward.close()
    assert closed == ["embedded"]


@pytest.mark.slow
def test_rl_with_the_feedback_models_reward_on_the_embedded_model(tmp_path, capsys):
    """d-RLAIF end to end: the embedded model judges, 2 RLOO steps, a checkpoint and a log of rewards."""
    from charter.cli import main

    out = tmp_path / "rl"
    conf = tmp_path / "rl.yaml"
    conf.write_text("trainer:\n  per_device_train_batch_size: 4\n  save_strategy: 'no'\n")
    assert main(["train", "rl", "--config", str(conf), "--reward", "feedback", "--few-shot", "none", "--out", str(out),
                 "--prompts", write_prompts(tmp_path / "p.jsonl"), "--helpful-prompts", "none", "--samples", "2",
                 "--max-tokens", "8", "--max-steps", "2", "--quiet"]) == 0
    assert "feedback reward" in capsys.readouterr().out
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward" in s]
    assert len(steps) == 2 and all(0 <= s["reward"] <= 1 and "kl" in s for s in steps)
    print("feedback rewards per step:", [round(s["reward"], 3) for s in steps])
    refs = [json.loads(line) for line in (out / "feedback_references.jsonl").read_text().splitlines()]
    assert len(refs) == 4 and all(r["reference"] and r["principle"] for r in refs)
    assert (out / "rl.png").is_file() and (out / "config.json").is_file()
