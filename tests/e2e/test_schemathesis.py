"""Schemathesis against `/openapi.json` of a running `gatehouse serve`: thousands of generated
requests, no 5xx, every status code documented, every body and header as the schema says.

`positive_data_acceptance` is left out on purpose: the server refuses some schema-valid values
on purpose (a common password, a reserved email domain, both email and phone at once)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def test_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/st.db",
        "GATEHOUSE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "GATEHOUSE_REDIS_URL": "",
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
        "GATEHOUSE_SMTP_URL": "",
        "GATEHOUSE_RATE_LIMITS": "{}",  # the fuzzer would otherwise mostly meet 429
        "GATEHOUSE_ARGON2_MEMORY_KIB": "1024",
        "GATEHOUSE_ARGON2_TIME_COST": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gatehouse", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-time",
                "45",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "NO_COLOR": "1"},
            cwd=tmp_path,  # its reports land there, not in the work tree
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.split("SUMMARY")[-1].lower(), summary
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
