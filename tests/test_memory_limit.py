"""Running out of memory (a `ulimit -v`, a container's limit) is one line naming the cause and the
way out, never a MemoryError traceback: while the model loads, and anywhere else in a command."""
import pytest

from charter.cli import main
from support import GEN, fails


def no_memory(*args, **kwargs):
    raise MemoryError("Cannot allocate memory (os error 12)")


def test_out_of_memory_while_the_model_loads(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    import charter.backends.hf as hf

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hf.AutoModelForCausalLM, "from_pretrained", no_memory)
    args = ["generate", "--backend", "transformers", "--helpful-prompts", "none", "--limit", "1", "--quiet"]
    fails(capsys, args, r"^error: out of memory loading model 'embedded' \(Cannot allocate memory \(os error 12\)\): "
          r"a memory limit \(ulimit -v, a container's\) or too little RAM; raise the limit")


def test_out_of_memory_anywhere_in_a_command(tmp_path, monkeypatch, capsys):
    import charter.export

    monkeypatch.chdir(tmp_path)
    assert main(GEN + ["--limit", "2", "--out", "r"]) == 0
    monkeypatch.setattr(charter.export, "_export_run", no_memory)
    fails(capsys, ["export", "r", "--out", "sft.jsonl"], r"^error: out of memory \(Cannot allocate memory "
          r"\(os error 12\)\): the process hit a memory limit \(ulimit -v, a container's limit\) or the machine's RAM")
