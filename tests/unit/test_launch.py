"""The api process leaves aiohttp and requests out (entrypoints/launch.py) and still serves
Socket.IO; other roles keep them (the courier's Twilio SDK needs both)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from gatehouse.entrypoints.launch import leave_out
leave_out(sys.argv[1])
import socketio
from gatehouse.realtime import sockets
server = socketio.AsyncServer(async_mode="asgi")
print(sorted(n for n in ("aiohttp", "requests") if sys.modules.get(n) is not None))
"""


def loaded_clients(role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, role], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_the_api_process_leaves_the_http_clients_out() -> None:
    assert loaded_clients("api") == "[]"


def test_other_roles_keep_them() -> None:
    assert loaded_clients("courier") == "['aiohttp', 'requests']"
