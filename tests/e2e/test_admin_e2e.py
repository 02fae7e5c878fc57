"""User administration and the audit trail on the real services: two `gatehouse api` nodes, a
worker, a relay and a courier on PostgreSQL, Redis and Kafka. A disabled account's live socket
(on the other node) is disconnected within a second and its refresh token refused, whether the
operator used the admin API or `gatehouse users disable`; then `gatehouse audit verify` on a
chain edited in the database (a row updated, a row deleted, two rows swapped), on PostgreSQL and
on MariaDB, exits 1 naming the first broken link, and 0 again once the edit is undone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import MailSink
from tests.e2e.stack import Stack, module_mail_sink, stack_fixture
from tests.e2e.test_socket_sessions import PASSWORD, login, signed_up, watch
from tests.integration.conftest import create_database, drop_database

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
KEY = "e2e-admin-key-" + "k" * 32
ADMIN = {"Authorization": f"Bearer {KEY}"}
WITHIN = 1.0


stack = stack_fixture(
    "admin",
    {"api1": "api", "api2": "api", "worker": "worker", "relay": "relay", "courier": "courier"},
    {"GATEHOUSE_ADMIN_TOKEN": KEY},
)


@pytest.fixture
async def clients() -> AsyncIterator[list[socketio.AsyncClient]]:
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        await client.disconnect()


def gatehouse(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `gatehouse` command as an operator runs it, with this configuration."""
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args],
        env={**os.environ, **env, "GATEHOUSE_LOG_LEVEL": "WARNING"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def disconnected_after(gone: asyncio.Future[float], start: float) -> float:
    return await asyncio.wait_for(asyncio.shield(gone), 10) - start


async def test_a_disabled_account_loses_its_socket_at_once_and_its_refresh_token(
    stack: Stack, module_mail_sink: MailSink, clients: list[socketio.AsyncClient]
) -> None:
    email = await signed_up(stack, module_mail_sink)
    node1, node2 = stack.roles["api1"].url, stack.roles["api2"].url
    async with httpx.AsyncClient(base_url=node1, timeout=30) as http:
        found = (await http.get("/api/admin/users", params={"query": email}, headers=ADMIN)).json()
        [user] = found["data"]["users"]
        signed_in = await login(http, email)
        _socket, heard, gone = await watch(node2, signed_in["token"], clients)

        start = time.monotonic()
        reply = await http.post(f"/api/admin/users/{user['id']}/disable", headers=ADMIN)
        assert reply.status_code == 200 and reply.json()["data"]["user"]["disabled"]
        took = await disconnected_after(gone, start)
        print(f"\nadmin API disable: the socket on node 2 disconnected after {took:.3f} s")
        assert took <= WITHIN
        assert heard.get_nowait() == ("session.revoked", {"reason": "account_disabled"})

        body = {"refresh_token": signed_in["refresh_token"]}
        assert (await http.post("/api/auth/refresh", json=body)).status_code == 401
        right = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        wrong = await http.post("/api/auth/login", json={"email": email, "password": "nope" * 3})
        assert right.status_code == wrong.status_code == 401 and right.json() == wrong.json()

        # The command line, on the same database and Redis: enable, then disable again.
        done = gatehouse(stack.env, stack.tmp, "users", "enable", user["id"])
        assert done.returncode == 0, done.stderr
        again = await login(http, email)
        _socket, heard, gone = await watch(node2, again["token"], clients)
        start = time.monotonic()
        done = gatehouse(stack.env, stack.tmp, "users", "disable", user["id"])
        assert done.returncode == 0, done.stderr
        took = await disconnected_after(gone, start)
        print(
            f"`gatehouse users disable` (process start included): disconnected after {took:.3f} s"
        )
        assert heard.get_nowait() == ("session.revoked", {"reason": "account_disabled"})
        body = {"refresh_token": again["refresh_token"]}
        assert (await http.post("/api/auth/refresh", json=body)).status_code == 401

        trail = await http.get("/api/admin/audit", params={"user_id": user["id"]}, headers=ADMIN)
        records = trail.json()["data"]["records"]
    by_admin = [
        (r["action"], r["actor_id"].split(":")[0]) for r in records if r["actor"] == "admin"
    ]
    assert by_admin == [
        ("user.disable", "cli"),
        ("user.enable", "cli"),
        ("user.disable", "admin-api"),
    ]
    api_disable = next(r for r in records if r["actor_id"] == "admin-api")
    assert api_disable["client_address"] == "127.0.0.1"
    verified = gatehouse(stack.env, stack.tmp, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    print(verified.stdout, end="")


# --- a chain edited in the database --------------------------------------------------------


@pytest.fixture(params=["postgres", "mariadb"])
def chained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A new database of the backend holding a chain of audit records written by sign-ups and
    sign-ins through the flows: (backend, the command's environment)."""
    url, admin = create_database(request.param, tmp_path)
    env = {
        "GATEHOUSE_DATABASE_URL": url,
        "GATEHOUSE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "GATEHOUSE_REDIS_URL": "",
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
        "GATEHOUSE_ARGON2_MEMORY_KIB": "1024",
        "GATEHOUSE_ARGON2_TIME_COST": "1",
    }
    try:
        asyncio.run(_sign_ups(env, 3))
        yield request.param, env
    finally:
        drop_database(url, admin)


async def _sign_ups(env: dict[str, str], count: int) -> None:
    from gatehouse.bootstrap import build
    from gatehouse.config import Settings
    from gatehouse.selfservice.login import flow as login_flow
    from tests.integration.conftest import verified_user

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        services = build(Settings())
    try:
        for n in range(count):
            email, _user = await verified_user(services, f"chain{n}", PASSWORD)
            await login_flow.login(services.ctx, email=email, password=PASSWORD)
        assert await services.audit_store().chain(100) == 2 * count  # as the relay does
    finally:
        await services.aclose()


async def _sql(url: str, *statements: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            results = [await conn.execute(text(s)) for s in statements]
            return [r.all() if r.returns_rows else r.rowcount for r in results]
    finally:
        await engine.dispose()


def test_audit_verify_names_the_first_broken_link_of_an_edited_chain(
    chained: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    backend, env = chained
    url = env["GATEHOUSE_DATABASE_URL"]

    def verify(edit: str) -> subprocess.CompletedProcess[str]:
        done = gatehouse(env, tmp_path, "audit", "verify")
        print(f"\n[{backend}] {edit}\n$ gatehouse audit verify  -> exit {done.returncode}")
        print((done.stdout + done.stderr).rstrip())
        return done

    intact = verify("(as written)")
    assert intact.returncode == 0 and "6 record(s) after seq 0" in intact.stdout
    [[row]] = asyncio.run(_sql(url, "SELECT outcome FROM audit_log WHERE seq = 3"))
    asyncio.run(_sql(url, "UPDATE audit_log SET outcome = 'failure' WHERE seq = 3"))
    edited = verify("UPDATE audit_log SET outcome = 'failure' WHERE seq = 3")
    assert edited.returncode == 1 and "BROKEN at record 3: altered" in edited.stderr
    restore = "UPDATE audit_log SET outcome = :outcome WHERE seq = 3"
    asyncio.run(_insert(url, restore, {"outcome": row[0]}))
    assert verify("(the edit undone)").returncode == 0

    columns = "seq, at, actor, action, outcome, actor_id, user_id, factor, detail, "
    columns += "client_address, prev_hash, hash"
    [[kept]] = asyncio.run(_sql(url, f"SELECT {columns} FROM audit_log WHERE seq = 4"))  # noqa: S608
    asyncio.run(_sql(url, "DELETE FROM audit_log WHERE seq = 4"))
    removed = verify("DELETE FROM audit_log WHERE seq = 4")
    assert removed.returncode == 1 and "BROKEN at record 4: missing" in removed.stderr
    params = ", ".join(f":{c.strip()}" for c in columns.split(","))
    asyncio.run(_insert(url, f"INSERT INTO audit_log ({columns}) VALUES ({params})", kept))  # noqa: S608
    assert verify("(the row put back)").returncode == 0

    swap = (
        "UPDATE audit_log SET seq = -1 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 5",
        "UPDATE audit_log SET seq = 5 WHERE seq = -1",
    )
    asyncio.run(_sql(url, *swap))
    swapped = verify("records 2 and 5 swapped (their seq exchanged)")
    assert swapped.returncode == 1 and "BROKEN at record 2: altered" in swapped.stderr
    asyncio.run(_sql(url, *swap))
    assert verify("(swapped back)").returncode == 0


async def _insert(url: str, statement: str, values: Any) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), dict(getattr(values, "_mapping", values)))
    finally:
        await engine.dispose()
