"""Trainer habits: `train sft` reads a run exactly as `export` writes it."""
import json

import pytest

from charter.errors import ConfigError
from charter.export import ExportConfig, export_run
from charter.generate import GenerateConfig, generate
from charter.inputs.rows import to_prompt_completion
from charter.train.sft import SFTConfig, run_rows, sft_dataset

BOILERPLATE = "Sure, here is a revised response: "


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fake-backend run: one final revision carries boilerplate, another repeats the round before."""
    folder = tmp_path_factory.mktemp("habits") / "run"
    generate(GenerateConfig(backend="fake", limit=4, rounds=2, helpful_samples=1, out=str(folder)), progress=False)
    path = folder / "records.jsonl"
    lines, red = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()], 0
    for rec in lines:
        if rec["kind"] != "red_team" or rec["error"]:
            continue
        last = rec["rounds"][-1]
        if red == 0:
            last["revision"] = BOILERPLATE + last["revision"]
        elif red == 1:
            last["revision"] = rec["rounds"][-2]["revision"]
        rec["final"], red = last["revision"], red + 1
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return folder


def _exported(run, tmp_path, **options):
    out = tmp_path / "sft.jsonl"
    export_run(ExportConfig(run=str(run), format="sft", out=str(out), card=False, **options))
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("options", [{}, {"filter": ["all"], "helpful_ratio": 0.4, "seed": 3}])
def test_train_sft_trains_on_the_rows_export_writes(run, tmp_path, options):
    exported = _exported(run, tmp_path, **options)
    cfg = SFTConfig(data=str(run), out=str(tmp_path / "model"), **options)
    assert run_rows(cfg) == exported
    assert sft_dataset(cfg).to_list() == [to_prompt_completion(r["messages"]) for r in exported]
    assert not any(BOILERPLATE.strip() in r["messages"][-1]["content"] for r in exported)


def test_train_sft_filter_needs_a_run(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="filter"):
        sft_dataset(SFTConfig(data=str(data), out=str(tmp_path / "m"), filter=["empty"]))
