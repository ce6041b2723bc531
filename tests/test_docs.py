"""The docs as a user meets them: `mkdocs build --strict`, and every code block of README.md and
docs/*.md run or parsed the way a reader uses it.

A page's blocks run top to bottom in one fresh directory (later blocks use earlier outputs):
python blocks as a file run with the .venv interpreter, bash/sh/shell blocks with `bash -e`
(console blocks: their `$ ` lines), yaml/json blocks parsed (json may be JSON Lines), and a yaml
block marked `<!-- config: COMMAND -->` loaded by that command's config class. A block with
`title="NAME"` is also saved as NAME in the page's directory. ```text blocks are output and are not
run; a fence without a known language fails. `<!-- skip-test: reason -->` before a block skips it
(only for what cannot run here: a GPU, the Hub, a cluster); the skips are listed as a warning.
A page whose blocks run a model is marked slow (every page not in FAST_PAGES).
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from charter.errors import CharterError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ROOT / ".venv" / "bin" / "python"
RUN_PY, RUN_SH = {"python", "py"}, {"bash", "sh", "shell", "console"}
PARSED, OUTPUT = {"yaml", "yml", "json", "jsonl"}, {"text"}
# Pages whose runnable blocks load no model (seconds in all); every other page with runnable blocks is slow.
FAST_PAGES = {"index.md", "constitutions.md", "backends.md"}
BLOCK_TIMEOUT = 1800
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip-test|config|test)\s*:\s*(?P<value>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    title: str | None
    code: str
    markers: dict[str, str]

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the `<!-- kind: value -->` markers on the lines before each."""
    lines, found, i = page.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        indent, fence, info = start["indent"], start["fence"], start["info"].strip()
        end = i + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
        title = re.search(r'title="([^"]+)"', info)
        lang = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        code = "\n".join(body) + "\n"
        found.append(Block(page, i + 1, lang.lower(), title and title[1], code, markers_before(lines, i)))
        i = end + 1
    return found


def markers_before(lines: list[str], i: int) -> dict[str, str]:
    markers, j = {}, i - 1
    while j >= 0 and (not lines[j].strip() or MARKER.match(lines[j])):
        if m := MARKER.match(lines[j]):
            markers.setdefault(m["kind"], m["value"])
        j -= 1
    return markers


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def runs_code(page: Path) -> bool:
    return any(b.lang in RUN_PY | RUN_SH and "skip-test" not in b.markers for b in blocks(page))


def page_params():
    for page in PAGES:
        if not runs_code(page):
            continue
        marks = [] if page.name in FAST_PAGES else [pytest.mark.slow]
        yield pytest.param(page, marks=marks, id=page_id(page))


# ---- checks that run nothing ---------------------------------------------------------------------


def hook_module():
    """docs/hooks/config_reference.py, the docs' own command discovery and nav hook."""
    module = sys.modules.get("docs_config_reference")
    if module is None:
        hook = ROOT / "docs" / "hooks" / "config_reference.py"
        spec = importlib.util.spec_from_file_location("docs_config_reference", hook)
        module = sys.modules["docs_config_reference"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(module)
    return module


def config_classes() -> dict[str, type]:
    """'generate', 'train sft', 'train-sft', ... -> config class."""
    module, names = hook_module(), {}
    for cmd in module.commands():
        if cmd.config is not None:
            names[cmd.prog.removeprefix("charter ")] = names[module.anchor(cmd.prog)] = cmd.config
    return names


def parse_data(block: Block) -> object:
    if block.lang in ("yaml", "yml"):
        return yaml.safe_load(block.code)
    if block.lang == "json":
        try:
            return json.loads(block.code)
        except json.JSONDecodeError:
            pass  # JSON Lines, one object a line, as Charter writes its files
    return [json.loads(line) for line in block.code.splitlines() if line.strip()]


def check_block(block: Block, configs: dict[str, type], tmp: Path) -> None:
    known = RUN_PY | RUN_SH | PARSED | OUTPUT
    assert block.lang in known, (f"{block.where()}: fence language {block.lang or '(none)'!r}: output is ```text, "
                                 f"else one of {', '.join(sorted(known - OUTPUT))}")
    if "skip-test" in block.markers:
        assert block.markers["skip-test"], f"{block.where()}: `<!-- skip-test: reason -->` needs a reason"
    if block.lang in PARSED:
        try:
            data = parse_data(block)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            pytest.fail(f"{block.where()}: the {block.lang} block does not parse: {exc}")
        if "config" in block.markers:
            load_config(block, data, configs, tmp)
    elif "config" in block.markers:
        pytest.fail(f"{block.where()}: `<!-- config: ... -->` marks yaml blocks only")


def load_config(block: Block, data: object, configs: dict[str, type], tmp: Path) -> None:
    command = block.markers["config"]
    known = ", ".join(sorted(configs))
    assert command in configs, f"{block.where()}: no command '{command}' with a config (known: {known})"
    assert block.lang in ("yaml", "yml") and isinstance(data, dict), f"{block.where()}: a config is a YAML mapping"
    path = tmp / (block.title or "config.yaml")
    path.write_text(block.code, encoding="utf-8")
    configs[command].load(str(path))  # raises ConfigError naming the line of a wrong key or value


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_blocks_are_fenced_parsed_and_configs_load(page, tmp_path):
    configs, problems = config_classes(), []
    for block in blocks(page):
        try:
            check_block(block, configs, tmp_path)
        except (AssertionError, pytest.fail.Exception, CharterError) as exc:  # every problem of the page at once
            problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)


def test_skipped_blocks_are_listed():
    skipped = [(b.where(), b.markers["skip-test"]) for page in PAGES for b in blocks(page) if "skip-test" in b.markers]
    assert all(reason for _, reason in skipped)
    if skipped:
        warnings.warn(f"docs: {len(skipped)} code blocks not run: " + "; ".join(f"{w} ({r})" for w, r in skipped))


def test_block_parser_reads_languages_titles_and_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('Text\n\n<!-- skip-test: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n* item:\n\n'
                    '  ```yaml title="run.yaml"\n  rounds: 2\n  ```\n\n```text\nout\n```\n', encoding="utf-8")
    found = blocks(page)
    assert [(b.lang, b.title, b.code, b.markers) for b in found] == [
        ("bash", None, "nvidia-smi\n", {"skip-test": "needs a GPU"}), ("yaml", "run.yaml", "rounds: 2\n", {}),
        ("text", None, "out\n", {})]


def test_a_wrong_config_block_fails_with_its_line(tmp_path):
    from charter.errors import ConfigError

    block = Block(ROOT / "README.md", 1, "yaml", "run.yaml", "rounds: 2\nround: 3\n", {"config": "generate"})
    with pytest.raises(ConfigError, match=r"run.yaml:2: unknown key 'round' \(did you mean 'rounds'\?\)"):
        check_block(block, config_classes(), tmp_path)


def test_every_command_config_is_in_the_reference():
    """Each concrete config class (a Config subclass nothing extends) is found through the CLI parser."""
    import charter.cli
    from charter.config import Config

    charter.cli.build_parser()  # imports every command's config class
    leaves, todo = set(), [Config]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not Config and not cls.__subclasses__():
            leaves.add(cls)
    found = set(config_classes().values())
    assert {"GenerateConfig", "SFTConfig", "LabelerEvalConfig"} <= {c.__name__ for c in found}
    assert leaves <= found, f"config classes no command shows: {sorted(c.__name__ for c in leaves - found)}"


def test_pages_missing_from_the_nav_join_its_last_section(tmp_path):
    hook = hook_module()
    for name in ("index.md", "a.md", "new-page.md"):
        (tmp_path / name).write_text("# x\n", encoding="utf-8")
    config = {"docs_dir": str(tmp_path), "nav": [{"Home": "index.md"}, {"More": ["a.md"]}]}
    hook.on_config(config)
    assert config["nav"] == [{"Home": "index.md"}, {"More": ["a.md", "new-page.md"]}]


def test_mkdocs_build_is_strict_and_clean(tmp_path):
    """Broken links and anchors, nav entries without a page, and mkdocstrings errors fail the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]' (scripts/setup.sh installs it)")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    config = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    for name in ("GenerateConfig", "ExportConfig", "LabelConfig", "SFTConfig", "PMConfig", "RLConfig", "DPOConfig",
                 "EvalConfig", "LabelerEvalConfig"):
        assert f"charter.{name}" in config, f"the config reference lost {name}"
    assert "<code>--max-tokens</code>" in config and "<code>max_tokens</code>" in config
    api = html.unescape(re.sub(r"<[^>]+>", "", (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")))
    assert "critique_revise(llm: Backend, prompts:" in api and "load_backend(name: str = 'auto'" in api  # signatures


def test_readme_links_into_docs_resolve():
    """Relative links of the README (as GitHub follows them) name files that exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_make_targets_named_in_the_readme_exist():
    """`make demo` and `make test` (the README's first commands; not run here: they set up .venv and run
    this suite) exist and do what the README says."""
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert demo.returncode == test.returncode == 0, demo.stderr + test.stderr
    for step in ("charter generate", "charter export", "charter report"):
        assert step in demo.stdout
    assert "pytest" in test.stdout


# ---- running the pages ---------------------------------------------------------------------------


def run_block(block: Block, index: int, work: Path, scripts: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    if block.lang in RUN_PY:
        script = work / block.title if block.title else scripts / f"block{index}.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [str(PYTHON if PYTHON.exists() else sys.executable), str(script)]
    else:
        code = block.code
        if block.lang == "console":
            code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"
        script = scripts / f"block{index}.sh"
        script.write_text(code, encoding="utf-8")
        cmd = ["bash", "-e", str(script)]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, env=env)


def run_page(page: Path, tmp: Path) -> None:
    """Every block of `page`, top to bottom, in one fresh directory (tmp/work)."""
    work, scripts = tmp / "work", tmp / "scripts"
    work.mkdir(parents=True)
    scripts.mkdir()
    for i, block in enumerate(blocks(page)):
        if "skip-test" in block.markers:
            continue
        if block.title and block.lang not in RUN_PY:  # data a later block reads
            (work / block.title).parent.mkdir(parents=True, exist_ok=True)
            (work / block.title).write_text(block.code, encoding="utf-8")
        if block.lang not in RUN_PY | RUN_SH:
            continue
        done = run_block(block, i, work, scripts)
        shown = (f"{block.where()} ({block.lang}):\n{block.code}\n--- stdout\n{done.stdout[-3000:]}\n"
                 f"--- stderr\n{done.stderr[-5000:]}")
        assert done.returncode == 0, f"exit {done.returncode}: {shown}"
        # vLLM spawns its engine: a script without `if __name__ == "__main__":` would run twice there.
        assert "bootstrapping phase" not in done.stderr, shown


@pytest.mark.parametrize("page", list(page_params()))
def test_page_blocks_run_in_order(page, tmp_path):
    run_page(page, tmp_path)


def test_a_page_runs_in_one_directory_and_a_failing_block_fails_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('```text title="note.txt"\nhello\n```\n\n```python\nprint(open("note.txt").read().upper())\n'
                    '```\n\n```bash\ntest -f note.txt\n```\n', encoding="utf-8")
    run_page(page, tmp_path / "ok")
    page.write_text(page.read_text() + "\n```bash\ncharter generate --rounds -1 --dry-run\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"(?s)page.md:13 \(bash\).*--rounds must be >= 0"):
        run_page(page, tmp_path / "bad")
