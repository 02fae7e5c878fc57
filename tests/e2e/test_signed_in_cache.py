"""Issue 17's promise, with the signed-in cache on: two `gatehouse api` nodes of two processes
each, on PostgreSQL and Redis. Profile reads on node 2 are answered from each process's cache
(a row changed behind Gatehouse's back is not seen), yet once a logout, a deleted session, a
password change, an admin disable, logout everywhere or an account deletion has answered on
node 1, no process of node 2 accepts that session's token, and an update made on node 1 is what
every process of node 2 answers at once."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from typing import Any

import httpx
import pytest

from tests.conftest import MailSink, unique
from tests.e2e.stack import Stack, mailed_code, module_mail_sink, stack_fixture

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new horse battery staple"
KEY = "e2e-admin-key-" + "c" * 32
READS = 16  # fresh connections a check makes: each lands on either process of node 2


stack = stack_fixture(
    "signed-in-cache",
    {"api1": "api", "api2": "api", "relay": "relay", "courier": "courier"},
    {"GATEHOUSE_API_WORKERS": "2", "GATEHOUSE_ADMIN_TOKEN": KEY},
)


def sid_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


async def signed_up(stack: Stack, sink: MailSink) -> tuple[str, str]:
    """A verified account made on node 1: (email, user id)."""
    email = f"{unique('cache')}@example.com"
    async with httpx.AsyncClient(base_url=stack.roles["api1"].url, timeout=30) as http:
        body = {"name": "Lin", "email": email, "password": PASSWORD}
        assert (await http.post("/api/auth/register", json=body)).status_code == 202
        code = await mailed_code(sink, email, 1)
        reply = await http.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert reply.status_code == 201, reply.text
        return email, str(reply.json()["data"]["user"]["id"])


async def login(stack: Stack, email: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.roles["api1"].url, timeout=30) as http:
        reply = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["data"])


async def reads(url: str, token: str) -> list[tuple[int, str | None]]:
    """(status, name) of READS profile reads at once, each on a new connection."""

    async def one() -> tuple[int, str | None]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            reply = await http.get(
                "/api/auth/profile", headers={"Authorization": f"Bearer {token}"}
            )
            name = reply.json()["data"]["user"]["name"] if reply.status_code == 200 else None
            return reply.status_code, name

    return list(await asyncio.gather(*(one() for _ in range(READS))))


async def end(
    stack: Stack, change: str, user_id: str, victim: dict[str, Any], other: dict[str, Any]
) -> int:
    """Ends the victim's session through node 1 as `change` does; the answer's status."""
    bearer = {"Authorization": f"Bearer {other['token']}"}
    async with httpx.AsyncClient(base_url=stack.roles["api1"].url, timeout=30) as http:
        if change == "logout":
            reply = await http.post(
                "/api/auth/logout", json={"refresh_token": victim["refresh_token"]}
            )
        elif change == "logout_everywhere":
            body = {"refresh_token": other["refresh_token"], "everywhere": True}
            reply = await http.post("/api/auth/logout", json=body)
        elif change == "session_deleted":
            reply = await http.delete(
                f"/api/auth/sessions/{sid_of(victim['token'])}", headers=bearer
            )
        elif change == "password":
            body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
            reply = await http.patch("/api/auth/profile", json=body, headers=bearer)
        elif change == "disable":
            admin = {"Authorization": f"Bearer {KEY}"}
            reply = await http.post(f"/api/admin/users/{user_id}/disable", headers=admin)
        else:
            reply = await http.request(
                "DELETE", "/api/auth/profile", json={"password": PASSWORD}, headers=bearer
            )
        return reply.status_code


@pytest.mark.parametrize(
    "change",
    ["logout", "session_deleted", "password", "disable", "logout_everywhere", "account_deleted"],
)
async def test_once_a_session_ending_answered_on_node_one_no_process_of_node_two_accepts_it(
    change: str, stack: Stack, module_mail_sink: MailSink
) -> None:
    email, user_id = await signed_up(stack, module_mail_sink)
    victim, other = await login(stack, email), await login(stack, email)
    node2 = stack.roles["api2"].url
    assert {status for status, _ in await reads(node2, victim["token"])} == {200}  # warm
    assert await end(stack, change, user_id, victim, other) == 200
    after = await reads(node2, victim["token"])  # at once: no wait
    print(f"\n{change}: node 2 answered {sorted(s for s, _ in after)}")
    assert {status for status, _ in after} == {401}


async def test_node_two_answers_from_its_cache_and_an_update_on_node_one_replaces_it(
    stack: Stack, module_mail_sink: MailSink
) -> None:
    email, user_id = await signed_up(stack, module_mail_sink)
    session = await login(stack, email)
    node2 = stack.roles["api2"].url
    assert {name for _, name in await reads(node2, session["token"])} == {"Lin"}
    # Changed behind Gatehouse's back (no announcement): the processes answer what they hold.
    database = stack.env["GATEHOUSE_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")
    subprocess.run(
        ["psql", database, "-q", "-v", f"id={user_id}"],
        input=b"UPDATE users SET name = 'Behind' WHERE id = :'id'",
        check=True,
    )
    assert {name for _, name in await reads(node2, session["token"])} == {"Lin"}
    async with httpx.AsyncClient(base_url=stack.roles["api1"].url, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {session['token']}"}
        reply = await http.patch("/api/auth/profile", json={"name": "Lin Updated"}, headers=bearer)
        assert reply.status_code == 200, reply.text
    assert {name for _, name in await reads(node2, session["token"])} == {"Lin Updated"}
