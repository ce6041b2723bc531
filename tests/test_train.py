"""`charter train sft|dpo` on the real embedded model, kept tiny: 1-2 steps of 2 short rows."""
import argparse
import json
import logging
import re
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from charter.backends import create_backend  # noqa: E402
from charter.generate import GenerateConfig  # noqa: E402
from charter.errors import ConfigError, InputError  # noqa: E402
from charter.generate import generate  # noqa: E402
from charter.cli import main as train_cli_main, train as train_cli  # noqa: E402
from charter.train.dpo import apply_scores, load_dpo_config, train_dpo  # noqa: E402
from charter.train.sft import build_sft_trainer, load_sft_config, train_sft  # noqa: E402
from charter.types import Sampling  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
# One step of 2 rows x <= 96 tokens; no activation recompute (pointless at this size, and the CPU is slow).
TINY = {"max_steps": 1, "max_length": 96, "per_device_train_batch_size": 2, "save_steps": 1,
        "gradient_checkpointing": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake-backend run: 4 red-team records (2 rounds) + 4 helpful samples."""
    out = tmp_path_factory.mktemp("gen") / "run"
    generate(GenerateConfig(backend="fake", limit=4, rounds=2, helpful_samples=1, out=str(out)), progress=False)
    return out


def _chats(out_dir) -> str:
    backend = create_backend("transformers", str(out_dir))
    text = backend.chat([[{"role": "user", "content": "Say hello."}]], Sampling(max_tokens=8, temperature=0))[0].text
    backend.close()
    return text


def _weights_differ(out_dir) -> bool:
    """Any tensor of the saved checkpoint differs from the embedded base model's."""
    import torch
    from safetensors.torch import load_file

    from charter.backends.models import resolve_hf_checkpoint

    base = load_file(str(Path(resolve_hf_checkpoint("embedded")) / "model.safetensors"))
    new = load_file(str(Path(out_dir) / "model.safetensors"))
    shared = [k for k in base if k in new]
    return bool(shared) and any(not torch.equal(base[k], new[k]) for k in shared)


def test_configs_load_and_pass_trl_key_checks(tmp_path):
    from trl import DPOConfig, SFTConfig

    from charter.train.common import check_trainer_keys

    sft = load_sft_config(str(CONFIGS / "sft.yaml"), data="d", out="o")
    dpo = load_dpo_config(str(CONFIGS / "dpo.yaml"), data="d", out="o", trainer={"max_steps": 3})
    assert sft.trainer["lr_scheduler_type"] == "constant" and sft.trainer["num_train_epochs"] == 1
    assert dpo.trainer["max_steps"] == 3 and dpo.trainer["beta"] == 0.1  # flags merge into trainer:
    check_trainer_keys(sft.trainer, SFTConfig, "sft.yaml")
    check_trainer_keys(dpo.trainer, DPOConfig, "dpo.yaml")


def test_unknown_trainer_key_suggests(tmp_path, run):
    f = tmp_path / "sft.yaml"
    f.write_text("seed: 0\ntrainer:\n  num_train_epochs: 1\n  learning_rat: 1.0e-5\n")
    cfg = load_sft_config(str(f), data=str(run), out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=re.escape(f"{f}:4: unknown key 'learning_rat' (did you mean 'learning_rate'?)")):
        train_sft(cfg, progress=False)
    f.write_text("trainer:\n  output_dir: x\n")
    with pytest.raises(ConfigError, match=re.escape(f"{f}:2: set 'out' at the top level")):
        train_sft(load_sft_config(str(f), data=str(run), out=str(tmp_path / "o")), progress=False)
    f.write_text("lr: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        load_sft_config(str(f), data="d", out="o")


def test_dataset_without_messages_is_a_clean_error(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "hi", "label": 1}) + "\n")
    cfg = load_sft_config(None, data=str(f), out=str(tmp_path / "o"))
    with pytest.raises(InputError, match=r"needs column\(s\) 'messages' or 'prompt \+ completion'; found: text, label"):
        train_sft(cfg, progress=False)
    dcfg = load_dpo_config(None, data=str(f), out=str(tmp_path / "o"))
    with pytest.raises(InputError, match="'prompt \\+ chosen \\+ rejected'; found: text, label"):
        train_dpo(dcfg, progress=False)


def test_cli_requires_data_and_out(capsys):
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "sft", "--data", "x"])
    with pytest.raises(ConfigError, match="'out' is required"):
        args.func(args)


def test_loss_mask_covers_only_the_assistant_answer(tmp_path, run):
    cfg = load_sft_config(None, data=str(run), out=str(tmp_path / "o"), trainer={**TINY, "max_length": 512})
    trainer = build_sft_trainer(cfg, progress=False)
    tok = trainer.processing_class
    assert len(trainer.train_dataset) == 8
    for src in trainer.train_dataset:
        row = src
        ids, labels = row["input_ids"], row["labels"]
        n_prompt = len(tok.apply_chat_template(src["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"])
        assert all(lab == -100 for lab in labels[:n_prompt])  # the whole prompt, up to "<|im_start|>assistant\n"
        assert labels[n_prompt:] == ids[n_prompt:] and len(ids) > n_prompt
        answer = tok.decode(ids[n_prompt:])
        assert answer.startswith(src["completion"][0]["content"][:10]) and "<|im_end|>" in answer


def test_sft_full_trains_and_loads(tmp_path, run, caplog):
    out = tmp_path / "sft"
    cfg = load_sft_config(None, data=str(run), out=str(out), trainer=TINY)
    with caplog.at_level(logging.INFO, logger="charter"):  # the library logs; the CLI shows it on stderr
        assert train_sft(cfg, progress=False) == out
    assert "1 steps of 2 rows" in caplog.text and "rough time" in caplog.text
    # finished: the resume checkpoints (optimizer state, ~3x the model) are gone, the model stays
    assert "removed the resume checkpoints" in caplog.text and not (out / "checkpoints").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)
    assert isinstance(_chats(out), str)
    assert _weights_differ(out)


def test_sft_lora_resumes_merges_loads_and_prunes(tmp_path, run, caplog):
    from transformers import TrainerCallback

    from charter.train.common import run_trainer

    class Killed(Exception):
        pass

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Killed

    out = tmp_path / "lora"
    # LoRA keeps TRL's default gradient checkpointing on: the path a default run takes.
    trainer = {**{k: v for k, v in TINY.items() if k != "gradient_checkpointing"}, "max_steps": 2}
    cfg = load_sft_config(None, data=str(run), out=str(out), lora={"r": 4}, revision="all", trainer=trainer)
    killed = build_sft_trainer(cfg, progress=False)
    killed.add_callback(KillAfterSave())
    with pytest.raises(Killed):  # a run stopped after its first checkpoint keeps it for the resume
        run_trainer(killed, cfg.out)
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    with caplog.at_level(logging.INFO, logger="charter"):
        train_sft(cfg, progress=False)  # the same command again: resumes from checkpoint-1, then finishes
    assert "resuming from" in caplog.text and "checkpoint-1" in caplog.text
    assert "removed the resume checkpoints" in caplog.text and not (out / "checkpoints").exists()
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "config.json").is_file()
    assert [r["step"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())][-1] == 2
    assert isinstance(_chats(out), str)


def test_dpo_from_scored_file_trains_and_loads(tmp_path, run):
    from charter.export import dpo_rows
    from charter.runs.runread import load_run

    rows = [{**r, "score": 0.8} for r in dpo_rows(load_run(run))]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    cfg = load_dpo_config(None, data=str(f), out=str(out), lora=True, trainer=TINY)
    train_dpo(cfg, progress=False)
    assert (out / "config.json").is_file() and (out / "train_log.jsonl").is_file()
    assert (out / "loss.png").is_file() or pytest.importorskip("matplotlib") is None
    assert isinstance(_chats(out), str)
    assert _weights_differ(out)  # the merged LoRA moved the weights


def test_dpo_full_trains_moves_weights_and_loads(tmp_path, run):
    out = tmp_path / "dpo-full"
    cfg = load_dpo_config(None, data=str(run), out=str(out), trainer={**TINY, "learning_rate": 1e-5})
    train_dpo(cfg, progress=False)
    assert not (out / "adapter").exists() and _weights_differ(out)
    assert not (out / "checkpoints").exists()  # pruned once finished
    assert isinstance(_chats(out), str)


def test_soft_labels_sample_and_hard():
    rows = [{"prompt": [], "chosen": ["a"], "rejected": ["b"], "score": 0.8} for _ in range(2000)]
    kept = sum(r["chosen"] == ["a"] for r in apply_scores(rows, "sample", seed=0)) / len(rows)
    assert 0.77 < kept < 0.83  # each label is drawn from the score
    assert apply_scores(rows, "sample", 0) == apply_scores(rows, "sample", 0)  # seeded
    flipped = apply_scores([{**rows[0], "score": 0.3}], "hard", 0)[0]
    assert flipped["chosen"] == ["b"] and "score" not in flipped
    assert apply_scores([{"prompt": [], "chosen": ["a"], "rejected": ["b"]}], "sample", 0)[0]["chosen"] == ["a"]
    with pytest.raises(InputError, match="score must be a probability"):
        apply_scores([{**rows[0], "score": 1.5}], "hard", 0)


MSGS = '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}\n'
PAIR = '{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}\n'


@pytest.mark.parametrize("command, data, message", [
    ("sft", MSGS.encode() + MSGS.replace("Hello", "Caf\xe9").encode("latin-1"),
     r"d.jsonl:2: byte 0xe9 at offset \d+ is not UTF-8; re-save the file as UTF-8"),
    ("sft", MSGS + '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant"}]}\n',
     r"d.jsonl:2: 'messages' message 2 has no text 'content'; each message needs 'role' and 'content' text"),
    ("sft", MSGS + '{"messages": [{"role": "user", "content": "Hi?"}]}\n',
     r"d.jsonl:2: 'messages' must hold a prompt and end with an assistant turn"),
    ("sft", MSGS + '{"messages": "Hi?"\n', r"d.jsonl:2: invalid JSON: Expecting ',' delimiter at column 19; fix"),
    ("sft", '{"prompt": "Hi?", "completion": [{"role": "assistant", "content": "x"}]}\n',
     r"d.jsonl:1: 'prompt' and 'completion' must both be text or both message lists"),
    ("dpo", PAIR.encode() + b'{"prompt": "Hi?", "chosen": "Caf\xe9", "rejected": "no"}\n',
     r"d.jsonl:2: byte 0xe9 at offset \d+ is not UTF-8"),
    ("dpo", PAIR + '{"prompt": "Hi?", "chosen": "Hello."}\n',
     r"d.jsonl:2: the dataset needs column\(s\) 'prompt \+ chosen \+ rejected'; found: prompt, chosen"),
    ("dpo", PAIR + '{"prompt": "Hi?", "chosen": "Hello.", "rejected": null}\n', r"d.jsonl:2: .*found: prompt, chosen$"),
    ("dpo", PAIR + '{"prompt": "Hi?", "chosen": "Hello.", "rejected": "no", "score": "0.7"}\n',
     r"d.jsonl:2: score must be a probability in \[0, 1\], got '0.7'"),
    ("dpo", '{"prompt": "Hi?", "chosen": "Hello.", "rejected": "no", "score": 1.5}\n',
     r"d.jsonl:1: score must be a probability in \[0, 1\], got 1.5"),
    ("dpo", '{"prompt": "Hi?", "chosen": [{"role": "assistant"}], "rejected": "no"}\n',
     r"d.jsonl:1: 'chosen' message 1 has no text 'content'"),
    ("dpo", PAIR + '{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": "a", "rejected": "b"}\n',
     r"d.jsonl: the rows have mixed shapes .*use one form \(text or message lists\) in the whole file"),
    ("pm", PAIR + '{"prompt": "Hi?", "chosen": "Hello.", "rejected": "no", "score": "0.7"}\n',
     r"d.jsonl:2: score must be a probability in \[0, 1\], got '0.7'"),
    ("pm", PAIR + '[1, 2]\n', r"d.jsonl:2: expected a JSON object with 'chosen \+ rejected', got list"),
] + [(cmd, data, r"d.jsonl: the file is empty \(no rows\)") for cmd in ("sft", "dpo", "pm") for data in ("", "\n \n")])
def test_bad_training_data_is_one_line_naming_file_and_line(tmp_path, capsys, command, data, message):
    f = tmp_path / "d.jsonl"
    f.write_bytes(data if isinstance(data, bytes) else data.encode())
    assert train_cli_main(["train", command, "--data", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err and re.search(message, err), err
    assert err.startswith(f"error: {f}")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_empty_parquet_and_python_configs_are_checked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "chosen": pa.array([], pa.string()),
                             "rejected": pa.array([], pa.string())}), f)
    with pytest.raises(InputError, match="d.parquet: the file is empty"):
        train_dpo(load_dpo_config(None, data=str(f), out=str(tmp_path / "o")))
    from charter.train.dpo import DPOConfig
    from charter.train.pm import PMConfig, train_pm
    from charter.train.sft import SFTConfig

    # configs built in Python are validated like loaded ones, before any data or model is read
    with pytest.raises(ConfigError, match="config: 'out' is required"):
        train_sft(SFTConfig(data=str(f)))
    with pytest.raises(ConfigError, match=r"config: soft_labels must be one of sample, hard, got 'soft'"):
        train_dpo(DPOConfig(data=str(f), out="o", soft_labels="soft"))
    with pytest.raises(ConfigError, match=r"config: eval_share must be in \[0, 1\), got 1.0"):
        train_pm(PMConfig(data=str(f), out="o", eval_share=1.0))
