"""The `gatehouse` command's first step, taken before the package's modules are imported: the
libraries a process of some role never uses, kept out of its memory.

The api process makes no outgoing HTTP call, yet the socketio package imports engineio's HTTP
clients, and they import aiohttp and requests when those are installed (they are: Twilio's SDK,
used by the courier, needs them). That is 12 MB of the api's 135 MB at rest (issue 6). A name
set to None in `sys.modules` makes its import raise ImportError, which engineio expects."""

from __future__ import annotations

import sys

UNUSED: dict[str, tuple[str, ...]] = {"api": ("aiohttp", "requests")}


def leave_out(role: str) -> None:
    for name in UNUSED.get(role, ()):
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def main() -> None:
    leave_out(sys.argv[1] if len(sys.argv) > 1 else "")
    from gatehouse.entrypoints.cli import main as cli

    cli()
