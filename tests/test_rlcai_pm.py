"""`charter train pm`: soft-label loss by hand, row normalisation, and a marker PM on the real embedded model."""
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("trl")

from charter.cli import main  # noqa: E402
from charter.errors import ConfigError, InputError  # noqa: E402
from charter.train.pm import build_pm_trainer, load_pm_config, mix_rows, parse_mix, soft_loss, split_rows  # noqa: E402
from charter.inputs.rows import preference_pair  # noqa: E402

from support import TOPICS, marker_row, write

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def test_soft_loss_matches_the_formula_by_hand():
    import torch

    d, s = 1.0, 0.8  # -(0.8 log σ(1) + 0.2 log σ(-1)) = 0.8 * 0.313262 + 0.2 * 1.313262
    got = soft_loss(torch.tensor([1.5]), torch.tensor([0.5]), torch.tensor([s])).item()
    assert got == pytest.approx(0.8 * 0.3132617 + 0.2 * 1.3132617, abs=1e-6)
    assert got == pytest.approx(-(s * math.log(1 / (1 + math.exp(-d))) + (1 - s) * math.log(1 / (1 + math.exp(d)))))
    # s = 1 is TRL's hard loss; s = 0.5 is minimised at d = 0 (log 2), whatever the sign of d
    assert soft_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(
        -torch.nn.functional.logsigmoid(torch.tensor(2.0)).item())
    half = [soft_loss(torch.tensor([x]), torch.tensor([0.0]), torch.tensor([0.5])).item() for x in (-1.0, 0.0, 1.0)]
    assert half[1] == pytest.approx(math.log(2)) and half[0] == pytest.approx(half[2]) and half[0] > half[1]


def test_rows_from_labels_trl_and_hh_rlhf():
    lab = preference_pair(marker_row(0, "tea", 0.7), "x")
    assert lab["score"] == 0.7 and lab["prompt"][0]["role"] == "user" and lab["chosen"][0]["role"] == "assistant"
    trl = preference_pair({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}, "x", 1.0)
    assert trl == {"prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
                   "rejected": [{"role": "assistant", "content": "Go away."}], "score": 1.0}
    hh = preference_pair({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: No."},
                         "x", 1.0)
    assert hh["prompt"] == [{"role": "user", "content": "Hi?"}] and hh["rejected"][0]["content"] == "No."
    with pytest.raises(InputError, match="score must be a probability"):
        preference_pair({**marker_row(0, "tea"), "score": 1.5}, "f.jsonl: row 3")


def test_mix_ratio_split_and_flags(tmp_path):
    hh = [{"chosen": f"\n\nHuman: Q{i}?\n\nAssistant: yes", "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: no"}
          for i in range(40)]
    f = write(tmp_path / "hh.jsonl", hh)
    base = [preference_pair(marker_row(i, "tea", 0.6), "x") for i in range(30)]
    assert parse_mix(f"{f}:0.25") == (f, 0.25) and parse_mix(f) == (f, None)
    mixed = mix_rows(base, [f"{f}:0.25"], seed=0)  # 25% of the mix: 10 hh rows beside 30 label rows
    assert len(mixed) == 40 and sum(r["score"] == 1.0 for r in mixed) == 10
    assert len(mix_rows(base, [f], seed=0)) == 70  # no ratio: all its rows
    with pytest.raises(ConfigError, match=r"mix ratio must be in \(0, 1\)"):
        parse_mix(f"{f}:1.5")
    train, held = split_rows(base, 0.1, seed=0)
    assert len(held) == 3 and len(train) == 27 and split_rows(base, 0.1, seed=0)[1] == held


def test_unknown_trainer_key_is_rejected(tmp_path):
    data = write(tmp_path / "l.jsonl", [marker_row(0, "tea")] * 2)
    cfg = load_pm_config(None, data=data, out=str(tmp_path / "o"), trainer={"learning_rat": 1e-5})
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        build_pm_trainer(cfg, progress=False)
    cfg = load_pm_config(str(CONFIGS / "pm.yaml"), data=data, out="o")
    assert cfg.trainer["num_train_epochs"] == 1


@pytest.mark.slow
def test_trainer_loss_uses_each_rows_soft_label(tmp_path):
    """The overridden compute_loss sees each row's score and applies the soft cross-entropy."""
    rows = [marker_row(i, t, s) for i, (t, s) in enumerate([("tea", 0.9), ("snow", 0.6), ("bees", 0.75), ("maps", 1.0)])]
    cfg = load_pm_config(None, data=write(tmp_path / "l.jsonl", rows), out=str(tmp_path / "o"), eval_share=0.0,
                         trainer={"per_device_train_batch_size": 4, "bf16": False})
    trainer, _ = build_pm_trainer(cfg, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    scores = batch["score"].clone()
    assert sorted(scores.tolist()) == pytest.approx([0.6, 0.75, 0.9, 1.0])
    trainer.model.eval()
    loss, out = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    chosen, rejected = out.logits.squeeze(-1).detach().chunk(2)
    d = (chosen - rejected).tolist()
    by_hand = -sum(s * math.log(1 / (1 + math.exp(-x))) + (1 - s) * math.log(1 / (1 + math.exp(x)))
                   for s, x in zip(scores.tolist(), d)) / len(d)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    hard = -sum(math.log(1 / (1 + math.exp(-x))) for x in d) / len(d)
    assert abs(by_hand - hard) > 1e-4  # the soft labels changed the loss


@pytest.mark.slow
def test_marker_pm_ranks_held_out_pairs(tmp_path, capsys):
    """A few steps on 12 short pairs; held-out pairs on unseen topics ranked by the marker word."""
    train = write(tmp_path / "train.jsonl", [marker_row(i, TOPICS[i % 14]) for i in range(12)])
    held = write(tmp_path / "held.jsonl", [marker_row(i, TOPICS[14 + i % 6]) for i in range(18)])
    conf = tmp_path / "pm.yaml"
    conf.write_text("trainer:\n  learning_rate: 5.0e-5\n  per_device_train_batch_size: 4\n  save_strategy: 'no'\n")
    out = tmp_path / "pm"
    assert main(["train", "pm", "--config", str(conf), "--data", train, "--eval-data", held, "--out", str(out),
                 "--max-steps", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "pm_eval.json").read_text())
    assert result["held_out"]["n"] == 18 and result["held_out"]["accuracy"] >= 0.9, printed
    assert "held-out: accuracy" in printed
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in log) == 3 and (out / "loss.png").is_file()
