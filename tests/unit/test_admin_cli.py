"""`gatehouse users find|show|disable|enable|revoke|delete` and `gatehouse audit
verify|prune|list` on SQLite: the same use cases as the admin API, records naming the operator
`cli:<login>`; `audit verify` exits 1 naming the first broken link once a record is edited,
removed or moved in the database, and still holds after retention removed the oldest ones."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatehouse.bootstrap import build
from gatehouse.config import Settings
from gatehouse.entrypoints.cli import app
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.storage.migrate import upgrade
from tests.integration.conftest import verified_user

from .test_admin import env as env  # the fixture: SQLite and secrets in tmp

runner = CliRunner()
PASSWORD = "correct horse battery staple"


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def people(env: Path) -> list[str]:
    """Three verified accounts (the third with a phone), one signed in twice: their ids."""

    async def seed() -> list[str]:
        svc = build(Settings())
        await upgrade(svc.engine)
        made = []
        for n, phone in enumerate((None, None, "+14155550142")):
            email, user = await verified_user(svc, f"cli{n}", PASSWORD, phone)
            made.append(user["id"])
            if n == 0:
                for _ in range(2):
                    await login_flow.login(svc.ctx, email=email, password=PASSWORD)
        await svc.aclose()
        return made

    made = asyncio.run(seed())
    assert cli("audit", "chain") == (0, "linked 5 record(s)\n")  # as the relay would
    return made


def verify_after(edit: str) -> tuple[int, str]:
    code, out = cli("audit", "verify")
    print("$ (" + edit + ") gatehouse audit verify  -> exit", code)
    print(out, end="")
    return code, out


def database(env: Path) -> sqlite3.Connection:
    return sqlite3.connect(env / "t.db")


def test_users_commands(env: Path, people: list[str]) -> None:
    first, _second, third = people
    code, out = cli("users", "find", "cli", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[-1].startswith("next: --cursor ")
    code, out = cli("users", "find", "cli", "--cursor", lines[-1].split()[-1], "--json")
    assert [u["id"] for u in json.loads(out)["users"]] == [third]
    code, out = cli("users", "find", "+1 415 555 0142")
    assert third in out and "+1415\u2022\u2022\u20220142" in out and "5550142" not in out
    code, out = cli("users", "show", first)
    shown = json.loads(out)
    assert len(shown["sessions"]) == 2 and "password_hash" not in out

    assert cli("users", "disable", first)[0] == 0
    assert json.loads(cli("users", "show", first)[1])["sessions"] == []
    assert cli("users", "enable", first)[0] == 0
    code, out = cli("users", "revoke", first)
    assert (code, out.strip()) == (0, f"revoked 0 live session(s) of {first}")
    assert cli("users", "delete", first, "--yes")[0] == 0
    code, out = cli("users", "show", first)
    assert code == 1 and "No such user" in out
    assert cli("users", "delete", "no-such-id", "--yes")[0] == 1

    code, out = cli("audit", "list", "--user", first, "--type", "user.*")
    listed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["action"] for r in listed] == [
        "user.delete",
        "user.sessions.revoke",
        "user.enable",
        "user.disable",
    ]
    assert {r["actor"] for r in listed} == {"admin"}
    assert all(r["actor_id"].startswith("cli") for r in listed)


def test_audit_verify_names_the_first_broken_link(env: Path, people: list[str]) -> None:
    code, out = cli("audit", "verify")
    assert code == 0 and out.startswith("audit chain ok: 5 record(s) after seq 0; head 5:")
    head = out.split("head ")[1].strip()
    print(f"\n$ gatehouse audit verify\n{out}", end="")
    edit = "UPDATE audit_log SET outcome = 'failure' WHERE seq = 3"
    with database(env) as db:
        [original] = db.execute("SELECT outcome FROM audit_log WHERE seq = 3").fetchone()
        db.execute(edit)
    code, out = verify_after(edit)
    assert code == 1 and "BROKEN at record 3: altered" in out
    with database(env) as db:
        db.execute("UPDATE audit_log SET outcome = ? WHERE seq = 3", (original,))
    assert cli("audit", "verify")[0] == 0  # put back: the chain holds again
    edit = "DELETE FROM audit_log WHERE seq = 4"
    with database(env) as db:
        db.execute(edit)
    code, out = verify_after(edit)
    assert code == 1 and "BROKEN at record 4: missing" in out
    edit = "UPDATE audit_log SET seq = 4 WHERE seq = 5"  # the next one moved into the hole
    with database(env) as db:
        db.execute(edit)
    code, out = verify_after(edit)
    assert code == 1 and "BROKEN at record 4: altered" in out
    with database(env) as db:
        db.execute("DELETE FROM audit_log WHERE seq >= 4")
    code, out = cli("audit", "verify")  # the newest removed: the head still says 5
    assert code == 1 and "BROKEN at record 4: missing" in out
    code, out = cli("audit", "verify", "--json")
    assert json.loads(out)["broken"]["seq"] == 4
    assert head  # noted; checked against a consistent rewrite in the next test


def test_retention_keeps_the_chain_verifiable_and_anchors_catch_a_rewrite(
    env: Path, people: list[str]
) -> None:
    code, out = cli("audit", "verify")
    head = out.split("head ")[1].strip()
    with database(env) as db:  # the first four records made 40 days ago
        old = (datetime.now(UTC) - timedelta(days=40)).replace(tzinfo=None).isoformat(sep=" ")
        db.execute("UPDATE audit_log SET at = ? WHERE seq <= 4", (old,))
    # `at` is hashed: re-chain so that only the times changed (as if they had been written so).
    asyncio.run(_rechain(env))
    code, out = cli("audit", "verify")
    assert code == 0
    rewritten_head = out.split("head ")[1].strip()
    assert rewritten_head != head
    code, out = cli("audit", "verify", "--anchor", head)
    assert code == 1 and "anchor_mismatch" in out  # a consistent rewrite, caught by the anchor
    code, out = cli("audit", "prune", "--days", "30")
    assert (code, out.strip()) == (0, "removed 4 record(s) older than 30 day(s)")
    code, out = cli("audit", "verify", "--anchor", rewritten_head)
    assert code == 0 and "1 record(s) after seq 4" in out
    assert "1 record(s) not linked yet" in out  # the record of the pruning itself
    assert cli("audit", "chain")[1] == "linked 1 record(s)\n"
    with database(env) as db:
        assert db.execute("SELECT min(seq), max(seq) FROM audit_log").fetchone() == (5, 6)
        assert db.execute("SELECT seq, removed FROM audit_checkpoint").fetchone() == (4, 4)
        db.execute("DELETE FROM audit_log WHERE seq = 5")  # not retention: a removal
    code, out = cli("audit", "verify")
    assert code == 1 and "BROKEN at record 5: missing" in out


async def _rechain(env: Path) -> None:
    """Recompute every hash after the times were changed (what a forger with write access
    could do: only an anchor noted elsewhere tells)."""
    from gatehouse.domain.audit import GENESIS, link_hash
    from gatehouse.storage.sql_audit import _record

    svc = build(Settings())
    from sqlalchemy import select, update

    from gatehouse.storage.schema import audit_head, audit_log

    async with svc.engine.begin() as conn:
        found = [
            _record(r) for r in await conn.execute(select(audit_log).order_by(audit_log.c.seq))
        ]
        prev = GENESIS
        for r in found:
            digest = link_hash(prev, r.seq, r)
            await conn.execute(
                update(audit_log)
                .where(audit_log.c.seq == r.seq)
                .values(prev_hash=prev, hash=digest)
            )
            prev = digest
        await conn.execute(update(audit_head).values(hash=prev))
    await svc.aclose()
