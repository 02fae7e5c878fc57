"""`gatehouse api` with GATEHOUSE_API_WORKERS=2: a supervisor and two HTTP processes sharing the
port (SO_REUSEPORT), the schema migrated once, a dead worker replaced, SIGTERM drained to 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.stack import children


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not in {timeout}s: {what}")


def test_two_workers_serve_one_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEHOUSE_API_WORKERS": "2",
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gh.db'}",
        "GATEHOUSE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "GATEHOUSE_REDIS_URL": "",
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
    }
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "gatehouse", "api"], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def live() -> bool:
        try:
            return httpx.get(f"{url}/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        workers = wait_for(lambda: len(children(api.pid)) == 2 and children(api.pid), 60, "2")
        wait_for(live, 60, "the api answering")
        # Secrets were generated once, by the supervisor, before the workers started.
        assert (tmp_path / "secrets.json").exists()
        # Each worker answers on the shared port: new connections spread across them.
        for _ in range(40):
            with httpx.Client() as client:
                assert client.get(f"{url}/health/live").status_code == 200
        os.kill(workers[0], signal.SIGKILL)
        replaced = wait_for(
            lambda: (now := children(api.pid)) and len(now) == 2 and workers[0] not in now and now,
            30,
            "a replacement worker",
        )
        assert workers[1] in replaced
        wait_for(live, 60, "the api answering again")
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=40) == 0
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()
        log.close()
    text = (tmp_path / "api.log").read_text(errors="replace")
    assert "starting another" in text, text[-3000:]
