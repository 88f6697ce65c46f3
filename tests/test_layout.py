"""The package's layers import one way: commands → run/, analysis/ → data/, models/ (docs/layout.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tempo"
# below every layer: the exception classes every layer raises and the commands turn into messages
FOUNDATION = ("__init__", "__main__", "errors")
COMMANDS = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in FOUNDATION)


def tempo_imports(path: Path) -> set[str]:
    """Every `tempo.*` module a file imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tempo"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from tempo import acceleration`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tempo"))
    return found


def offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.glob("*.py")):
        hits = sorted(m for m in tempo_imports(path) if m.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(PACKAGE))] = hits
    return bad


def command_modules(exclude: str = "") -> tuple[str, ...]:
    return tuple(f"tempo.{c}" for c in COMMANDS if c != exclude)


def test_the_commands_are_the_top_level_modules():
    # the list the rules below rely on: a new top-level module is a command (or must move into a layer)
    assert {"train", "evaluate", "demo", "prepare", "profile", "report"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another(command):
    hits = sorted(m for m in tempo_imports(PACKAGE / f"{command}.py")
                  if m.startswith(command_modules(exclude=command)) and m != "tempo.CONF_DIR")
    assert not hits, f"tempo/{command}.py imports other commands: {hits}; move what they share into a layer"


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("models", ("tempo.run", "tempo.analysis", "tempo.data", *command_modules())),
    ("data", ("tempo.run", "tempo.analysis", *command_modules())),
    ("analysis", ("tempo.run", *command_modules())),
    ("run", command_modules()),
])
def test_layers_import_downwards_only(folder, forbidden):
    assert offending(folder, forbidden) == {}


def test_the_rule_catches_a_violation(tmp_path):
    # the checker itself: a lazy import of a command inside a function is found
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from tempo.train import run\n    import tempo.evaluate\n")
    assert {"tempo.train", "tempo.evaluate"} <= tempo_imports(path)
