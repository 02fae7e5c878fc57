"""`gatehouse --help`, and the help of every sub-command, prints normally: exit 0, usage and
options, and no flag shown as taking a value (`--help <bool>`, typer's rich panels)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gatehouse.entrypoints.cli import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the tree, groups included, as the words that invoke it."""
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += command_paths(sub, (*path, name))
    return found


PATHS = command_paths(typer.main.get_command(app))


def test_the_tree_is_walked() -> None:
    # The walk reaches nested commands; a rename here means updating this list, not the test.
    for expected in [(), ("serve",), ("db",), ("db", "check"), ("keys", "rotate-data")]:
        assert expected in PATHS
    assert len(PATHS) >= 15


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "gatehouse")
def test_help_prints_normally(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="gatehouse")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"Usage: {' '.join(('gatehouse', *path))} [OPTIONS]"), text
    assert "<bool>" not in text, text
    [help_line] = [line for line in text.splitlines() if "--help" in line]
    assert help_line.split() == ["--help", "Show", "this", "message", "and", "exit."], text
