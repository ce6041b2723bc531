"""MkDocs hook: the generated reference pages and the nav's pick-up of new pages.

* `reference/config.md`: every command of the `charter` CLI with its settings, read from the
  parser and from the `setting(...)` declarations of the config class the command builds its flags
  from (found by watching `add_settings` while the parser is built, so a new command or config
  class appears without an edit here).
* `reference/api.md`: mkdocstrings blocks for the public names in `charter/__init__.py` (EXPORTS).
* the nav: a page in docs/ that mkdocs.yml does not list is added to the end of its last section.

tests/test_docs.py imports `commands()` from here to load documented YAML configs with their class.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

CONFIG_PAGE = "reference/config.md"
API_PAGE = "reference/api.md"


@dataclass
class Command:
    """One `charter ...` command: its parser and the config class its settings come from (or None)."""

    prog: str
    parser: argparse.ArgumentParser
    config: type | None
    help: str


def commands() -> list[Command]:
    """Every command in the parser's order, each with the config class passed to `add_settings`."""
    import charter.cli as cli
    import charter.cli.common as common

    cli.build_parser()  # imports every command module, so each holds its own `add_settings` name
    seen: dict[int, type] = {}
    original = common.add_settings

    def watching(p, cls, *args, **kwargs):
        seen[id(p)] = cls
        return original(p, cls, *args, **kwargs)

    modules = [m for name, m in sorted(sys.modules.items())
               if name.startswith("charter.cli") and getattr(m, "add_settings", None) is original]
    for module in modules:
        module.add_settings = watching
    try:
        parser = cli.build_parser()
    finally:
        for module in modules:
            module.add_settings = original
    return [Command(p.prog, p, seen.get(id(p)), text) for p, text in _leaves(parser, "")]


def _leaves(parser: argparse.ArgumentParser, text: str):
    """(parser, help) of every runnable command, depth first; `classifier` is eval's second parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser, text or parser.description or ""
    else:
        helps = {c.dest: c.help or "" for a in subs for c in a._choices_actions}
        for action in subs:
            for name, child in action.choices.items():
                yield from _leaves(child, helps.get(name, ""))
    extra = getattr(parser, "classifier", None)
    if isinstance(extra, argparse.ArgumentParser):
        yield from _leaves(extra, extra.description or "")


# ---- the config reference ------------------------------------------------------------------------


def cell(text: Any) -> str:
    """Plain text safe inside a Markdown table cell."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")
            .replace("\n", " "))


def code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def type_name(typ: Any) -> str:
    name = typ if isinstance(typ, str) else getattr(typ, "__name__", None)
    text = str(typ) if name is None or getattr(typ, "__args__", None) else name
    return text.replace("typing.", "").replace("NoneType", "None")


def yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def default_of(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return code(yaml_value(f.default_factory()))
    return "required" if f.default is dataclasses.MISSING else code(yaml_value(f.default))


def flags_by_dest(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    found: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            found.setdefault(action.dest, []).append(action)
    return found


def flag_text(actions: list[argparse.Action]) -> str:
    names = [s for a in actions for s in a.option_strings] or [a.metavar or a.dest.upper() for a in actions]
    return ", ".join(code(n) for n in names) if names else "–"


def rules(f: dataclasses.Field) -> str:
    meta, parts = f.metadata, []
    if meta.get("choices"):
        parts.append("One of: " + ", ".join(meta["choices"]) + ".")
    if meta.get("bounds"):
        parts.append(f"Range: {meta['bounds']}.")
    if meta.get("result") is False:
        parts.append("May change when a run resumes.")
    return "".join(" " + p for p in parts)


def sentence(text: str) -> str:
    """A help text as a sentence, so the rules after it read as sentences too."""
    return text + "." if text and not text.endswith((".", "?", "!")) else text


def settings_table(cmd: Command) -> list[str]:
    by_dest, hints = flags_by_dest(cmd.parser), get_type_hints(cmd.config)
    lines = ["| flag | YAML key | type | default | help |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cmd.config):
        if not f.init:
            continue
        flag = flag_text(by_dest[f.name]) if f.name in by_dest else "– (YAML, Python)"
        lines.append(f"| {flag} | {code(f.name)} | {code(type_name(hints[f.name]))} | {default_of(f)} | "
                     f"{cell(sentence(f.metadata.get('help', '')) + rules(f))} |")
    return lines


def other_flags(cmd: Command) -> list[str]:
    fields = {f.name for f in dataclasses.fields(cmd.config)} if cmd.config else set()
    rows = [(flag_text(actions), actions[0].help or "") for dest, actions in flags_by_dest(cmd.parser).items()
            if dest not in fields and dest not in ("func",)]
    if not rows:
        return []
    head = "Flags without a YAML key:" if cmd.config else "Flags:"
    return ["", head, "", "| flag | help |", "|---|---|", *(f"| {flag} | {cell(text)} |" for flag, text in rows)]


def public_names() -> dict[str, str]:
    """The public name of each exported object, by its path ('charter.rlcai.labels.LabelConfig' -> 'LabelConfig')."""
    import charter

    return {target.replace(":", "."): name for name, target in charter.EXPORTS.items()}


def anchor(prog: str) -> str:
    """'charter train sft' -> 'train-sft': the command's anchor on the config page."""
    return prog.removeprefix("charter ").replace(" ", "-")


def command_section(cmd: Command, public: dict[str, str]) -> list[str]:
    lines = [f"## `{cmd.prog}` {{#{anchor(cmd.prog)}}}", "", cell(cmd.help) if cmd.help else ""]
    if cmd.config is not None:
        path = f"{cmd.config.__module__}.{cmd.config.__qualname__}"
        where = f"[`charter.{public[path]}`](api.md#{public[path]})" if path in public else f"`{path}`"
        lines += ["", f"Config class {where}: every setting is a flag (where shown), a key of the `--config` "
                  "YAML file and a keyword of the class.", "", *settings_table(cmd)]
    return lines + other_flags(cmd) + [""]


def config_reference(cmds: list[Command]) -> str:
    public = public_names()
    head = ["# Command and config reference", "",
            "Generated from the `charter` parser and the `setting(...)` declarations of each command's config class "
            "(`charter.config.Config` subclasses) when the docs are built, so it cannot drift from the code. "
            "Precedence: defaults < `--config FILE.yaml` < flags. YAML keys are the settings' names; a setting "
            "without a flag is set in the YAML file or from Python.", ""]
    body = [line for cmd in cmds for line in command_section(cmd, public)]
    return "\n".join(head + body) + "\n"


# ---- the API reference ---------------------------------------------------------------------------


def api_reference(cmds: list[Command]) -> str:
    """One mkdocstrings block per public name, in the order of charter.EXPORTS."""
    import charter

    settings_of = {f"{c.config.__module__}.{c.config.__qualname__}": c.prog for c in cmds if c.config}
    lines = ["# Python API reference", "",
             "The public names of `import charter`, imported lazily (`import charter` loads no engine). Each is "
             "documented where it is defined; a config class's settings are tabled in the "
             "[command and config reference](config.md).", ""]
    for name, target in charter.EXPORTS.items():
        path = target.replace(":", ".")
        lines += [f"## `charter.{name}` {{#{name}}}", ""]
        command = settings_of.get(path)
        if command:
            lines += [f"Its settings, with flags and YAML keys: [`{command}`](config.md#{anchor(command)}).", ""]
        options = ["    options:", "      show_root_heading: true", "      show_root_full_path: false",
                   "      show_root_toc_entry: false", "      heading_level: 3"]
        if name.endswith("Config") or ":" not in target:  # settings: the config page; a module: its docstring
            options.append("      members: false")
        lines += [f"::: {path}", *options, ""]
    return "\n".join(lines)


# ---- MkDocs events --------------------------------------------------------------------------------


def on_config(config):
    """Pages in docs/ that the nav does not list join its last section (pages other people add)."""
    nav = config.get("nav")
    if not nav:
        return config
    listed = set(_nav_files(nav))
    extra = [p.name for p in sorted(Path(config["docs_dir"]).glob("*.md")) if p.name not in listed]
    last = nav[-1]
    section = next(iter(last.values())) if isinstance(last, dict) and len(last) == 1 else None
    (section if isinstance(section, list) else nav).extend(extra)
    return config


def _nav_files(nav):
    for item in nav if isinstance(nav, list) else [nav]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                yield from _nav_files(value)


def on_files(files, config):
    from mkdocs.structure.files import File

    cmds = commands()
    for uri, content in ((CONFIG_PAGE, config_reference(cmds)), (API_PAGE, api_reference(cmds))):
        files.append(File.generated(config, uri, content=content))
    return files
