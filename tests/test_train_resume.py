"""`train` resumes only what it can: a checkpoint whose save was killed is skipped (and removed),
and checkpoints made with other settings or data are refused as `generate` refuses a changed run.
No model is loaded: the checks run before it."""
import json
import logging

import pytest

from charter.errors import ConfigError, RunError
from charter.train.common import CHECKPOINTS, RUN, last_checkpoint, trainer_args
from charter.train.sft import SFTConfig


def checkpoint(out, step, complete=True):
    path = out / CHECKPOINTS / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_an_interrupted_save_is_skipped_and_removed(tmp_path, caplog):
    good = checkpoint(tmp_path, 50)
    torn = checkpoint(tmp_path, 100, complete=False)
    half = checkpoint(tmp_path, 150, complete=False)
    (half / "trainer_state.json").write_text('{"global_st')  # killed while writing the last file
    with caplog.at_level(logging.WARNING, logger="charter"):
        assert last_checkpoint(tmp_path) == str(good)
    assert not torn.exists() and not half.exists() and "checkpoint-150 is incomplete" in caplog.text


def test_only_incomplete_checkpoints_mean_a_fresh_start(tmp_path):
    checkpoint(tmp_path, 1, complete=False)
    assert last_checkpoint(tmp_path) is None


@pytest.fixture
def data(tmp_path):
    f = tmp_path / "sft.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}]}) + "\n")
    return f


def cfg(tmp_path, data, **kw):
    return SFTConfig(data=str(data), out=str(tmp_path / "out"), **kw).validate()


def check_resume(cfg):
    """What every trainer does before its model loads: its TRL arguments, the resume checked."""
    trl = pytest.importorskip("trl")
    return trainer_args(trl.SFTConfig, cfg, {}, progress=False)


def test_a_changed_run_is_refused_and_the_same_one_resumes(tmp_path, data):
    check_resume(cfg(tmp_path, data, trainer={"learning_rate": 1e-5, "max_steps": 10}))
    assert (tmp_path / "out" / CHECKPOINTS / RUN).is_file()
    checkpoint(tmp_path / "out", 5)
    with pytest.raises(RunError, match=r"holds checkpoints of a training run made with other settings or data "
                                       r"\(trainer.learning_rate: 1e-05 -> 0.0001\)"):
        check_resume(cfg(tmp_path, data, trainer={"learning_rate": 1e-4, "max_steps": 10}))
    with pytest.raises(RunError, match=r"\(seed: 0 -> 1\)"):
        check_resume(cfg(tmp_path, data, seed=1, trainer={"learning_rate": 1e-5, "max_steps": 10}))
    check_resume(cfg(tmp_path, data, trainer={"learning_rate": 1e-5, "max_steps": 20}))  # training longer is fine
    data.write_text(data.read_text().replace("hello", "hi there"))
    with pytest.raises(RunError, match=r"\(data content changed\); use a new --out, restore them, or remove"):
        check_resume(cfg(tmp_path, data, trainer={"learning_rate": 1e-5, "max_steps": 20}))


def test_without_a_checkpoint_the_new_settings_are_taken(tmp_path, data):
    check_resume(cfg(tmp_path, data, seed=1))
    check_resume(cfg(tmp_path, data, seed=2))
    assert json.loads((tmp_path / "out" / CHECKPOINTS / RUN).read_text())["settings"]["seed"] == 2


def test_checkpoints_from_before_the_stamp_resume_with_a_warning(tmp_path, data, caplog):
    checkpoint(tmp_path / "out", 5)
    with caplog.at_level(logging.WARNING, logger="charter"):
        check_resume(cfg(tmp_path, data))
    assert "do not record what they were made from" in caplog.text


def test_an_out_that_is_a_file_is_refused(tmp_path, data):
    (tmp_path / "model.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is a file; training writes a directory"):
        check_resume(SFTConfig(data=str(data), out=str(tmp_path / "model.txt")).validate())
    assert (tmp_path / "model.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_save_killed_midway_then_train_again_finishes(tmp_path, data, capsys):
    """The real trainer: killed while writing a checkpoint, the same command resumes (the torn
    checkpoint skipped); the command with other data is refused before the model loads."""
    pytest.importorskip("trl")
    from transformers.trainer_callback import TrainerState

    from charter.cli import main
    from charter.train.sft import build_sft_trainer, train_sft
    from charter.train.common import run_trainer

    class Killed(Exception):
        pass

    rows = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
            for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny = {"max_steps": 2, "max_length": 64, "per_device_train_batch_size": 2, "save_steps": 1,
            "gradient_checkpointing": False}
    config = cfg(tmp_path, data, trainer=tiny)
    trainer = build_sft_trainer(config, progress=False)
    save = TrainerState.save_to_json

    def killed_in_second_save(self, path):
        if "checkpoint-2" in str(path):
            raise Killed
        save(self, path)

    TrainerState.save_to_json = killed_in_second_save
    try:
        with pytest.raises(Killed):
            run_trainer(trainer, config.out)
    finally:
        TrainerState.save_to_json = save
    assert (tmp_path / "out" / CHECKPOINTS / "checkpoint-2").is_dir()  # no trainer_state.json in it
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text().replace("hello", "hey"))
    code = main(["train", "sft", "--data", str(other), "--out", config.out, "--max-steps", "2"])
    assert code != 0 and "data: " in capsys.readouterr().err
    train_sft(config, progress=False)  # resumes from checkpoint-1 and finishes
    assert (tmp_path / "out" / "model.safetensors").is_file()
