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


@pytest.fixture(scope="module")
def marker_pm(tmp_path_factory):
    """A PM that prefers answers carrying 'Banana!' (the PM test's recipe)."""
    from test_rlcai_pm import TOPICS, marker_row, write

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
