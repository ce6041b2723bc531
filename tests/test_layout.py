"""The package's architecture, checked: no import cycles, and the CLI on top of the library.

Every `import charter...` / `from charter... import ...` counts, at module level or inside a function
(a lazy import still ties two modules together), so the graph is the one a reader has to follow.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in (SRC / "charter").rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The charter modules `path` imports (a `from pkg import name` counts as pkg.name when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("charter")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("charter"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            if len(subs) < len(node.names):  # some names are attributes of the module itself
                found.add(node.module)
            found |= subs
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        path.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def is_cli(name: str) -> bool:
    return name == "charter.cli" or name.startswith("charter.cli.") or name.endswith(".cli")


def test_library_never_imports_the_cli():
    upward = sorted(f"{a} -> {b}" for a, deps in graph().items() if not is_cli(a) for b in deps if is_cli(b))
    assert not upward, "library modules import the CLI: " + ", ".join(upward)


def test_lower_modules_do_not_import_upward():
    """The foundations (types, errors, YAML reading, config machinery, run reading, JSONL store) import nothing above them."""
    g = graph()
    low = {"charter.types", "charter.errors", "charter.yamlfile", "charter.config", "charter.runs.runread", "charter.runs.store"}
    allowed = low | {"charter", "charter.jsonl", "charter.runs.lock", "charter.inputs.transcripts", "charter.runs.idset", "charter.redact"}
    upward = sorted(f"{a} -> {b}" for a in low & set(g) for b in g[a] if b not in allowed)
    assert not upward, "foundation modules import upward: " + ", ".join(upward)


# The folders' order, bottom up: a package or module imports only from its own layer or below.
LAYERS = [
    ["errors"], ["types", "jsonl", "redact", "stats"], ["yamlfile", "plotting"], ["config"],
    ["runs"],  # the run store and its pieces
    ["inputs", "backends"],
    ["choice", "scorer", "guard"],  # models as scorers; the guard classifiers `generate --guard` uses
    ["pipeline"],  # conversations through an engine: the scheduler, the CAI loop, Ray, the job lifecycle
    ["generate", "export", "redteam"], ["rlcai"], ["evaluate", "train", "classifier"], ["report", "review"], ["api", "cli"],
]


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "charter"


def test_packages_import_only_downward():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    g = graph()
    unplaced = sorted({top(m) for m in g} - set(rank) - {"charter"})
    assert not unplaced, f"place these in LAYERS: {unplaced}"
    upward = sorted(f"{a} -> {b}" for a, deps in g.items() for b in deps
                    if top(b) != "charter" and top(a) != "charter" and rank[top(b)] > rank[top(a)])
    assert not upward, "imports that climb back up: " + ", ".join(upward)


def test_the_layer_check_finds_an_arrow_back_up():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    assert rank[top("charter.runs.store")] < rank[top("charter.pipeline.scheduler")]
    assert rank[top("charter.rlcai.labels")] < rank[top("charter.train.rl")]
