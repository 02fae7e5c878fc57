"""Seed 004's Mysql_Structure check on SQLite, PostgreSQL and MariaDB: `schema_report`, `GET
/health/schema` and `gatehouse db check` say whether the migrations are at head and every table
and column of the code's schema exists; a dropped column or table and an unmigrated database are
reported."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.bootstrap import build
from gatehouse.entrypoints.app import create_app
from gatehouse.ports import SchemaReport
from gatehouse.storage import sql
from gatehouse.storage.migrate import code_heads, schema_report
from gatehouse.storage.schema import metadata
from tests.conftest import free_port
from tests.integration.conftest import create_database, drop_database
from tests.unit.helpers import offline_settings

pytestmark = pytest.mark.integration

BACKEND_OF = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mariadb"}
HEAD = list(code_heads())
ALL_TABLES = sorted(t.name for t in metadata.sorted_tables)

Throwaway = Callable[[str | None], str]


@pytest.fixture
def throwaway(database_url: str, tmp_path: Path) -> Iterator[Throwaway]:
    """Makes new databases on the same backend as `engine` (migrated to a revision, or not at
    all when None), dropped at the end: these tests break their schema on purpose."""
    backend = BACKEND_OF[make_url(database_url).get_backend_name()]
    made: list[tuple[str, str | None]] = []

    def make(revision: str | None) -> str:
        url, admin = create_database(backend, tmp_path, revision)
        made.append((url, admin))
        return url

    yield make
    for url, admin in made:
        drop_database(url, admin)


async def new_database(make: Throwaway, revision: str | None = "head") -> str:
    return await asyncio.to_thread(make, revision)  # create_database runs its own event loop


async def execute(url: str, statement: str) -> None:
    engine = sql.create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def report_of(url: str) -> SchemaReport:
    engine = sql.create_engine(url)
    try:
        return await schema_report(engine)
    finally:
        await engine.dispose()


async def over_http(url: str, tmp: Path) -> tuple[int, dict[str, Any]]:
    """GET /health/schema of an api on that database."""
    services = build(offline_settings(tmp, database_url=url))
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            reply = await client.get("/health/schema")
        return reply.status_code, reply.json()
    finally:
        await services.aclose()


async def db_check(url: str, tmp: Path) -> tuple[int, dict[str, Any], str]:
    """`gatehouse db check --json` as a subprocess: exit code, JSON report, plain output."""
    env = {**os.environ, "GATEHOUSE_DATABASE_URL": url, "GATEHOUSE_SECRETS_FILE": str(tmp / "s")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", "db", "check", *args],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )

    as_json, plain = await asyncio.gather(asyncio.to_thread(run, "--json"), asyncio.to_thread(run))
    assert as_json.returncode == plain.returncode, (as_json.stderr, plain.stderr)
    return as_json.returncode, json.loads(as_json.stdout.strip().splitlines()[-1]), plain.stdout


def expected(
    current: list[str], missing_tables: list[str], missing_columns: list[str]
) -> dict[str, Any]:
    return {
        "current": current,
        "head": HEAD,
        "missing_tables": missing_tables,
        "missing_columns": missing_columns,
    }


async def test_a_migrated_database_is_at_head(engine: AsyncEngine, tmp_path: Path) -> None:
    report = await schema_report(engine)
    assert report.as_dict() == expected(HEAD, [], [])
    assert report.ok and report.at_head
    url = engine.url.render_as_string(hide_password=False)
    status, body = await over_http(url, tmp_path)
    assert status == 200, body
    assert body["status"] == "success"
    assert body["data"] == expected(HEAD, [], [])


async def test_a_dropped_column_is_reported(throwaway: Throwaway, tmp_path: Path) -> None:
    url = await new_database(throwaway)
    await execute(url, "ALTER TABLE users DROP COLUMN image")
    report = await report_of(url)
    assert report.as_dict() == expected(HEAD, [], ["users.image"])
    assert report.at_head and not report.ok
    status, body = await over_http(url, tmp_path)
    assert status == 503, body
    assert (body["status"], body["code"]) == ("error", "not_ready")
    assert body["data"] == expected(HEAD, [], ["users.image"])
    assert {"field": "users.image", "message": "missing column"} in body["errors"]


async def test_a_dropped_table_is_reported(throwaway: Throwaway, tmp_path: Path) -> None:
    url = await new_database(throwaway)
    await execute(url, "DROP TABLE refresh_tokens")
    report = await report_of(url)
    assert report.as_dict() == expected(HEAD, ["refresh_tokens"], [])
    assert not report.ok
    status, body = await over_http(url, tmp_path)
    assert status == 503, body
    assert body["data"] == expected(HEAD, ["refresh_tokens"], [])
    assert {"field": "refresh_tokens", "message": "missing table"} in body["errors"]


async def test_an_unmigrated_database_is_not_at_head(throwaway: Throwaway, tmp_path: Path) -> None:
    url = await new_database(throwaway, None)
    report = await report_of(url)
    assert report.as_dict() == expected([], ALL_TABLES, [])
    assert not report.at_head and not report.ok
    status, body = await over_http(url, tmp_path)
    assert status == 503, body
    assert body["code"] == "not_ready"
    assert body["data"] == expected([], ALL_TABLES, [])
    assert body["errors"][0]["field"] == "migrations"


async def test_db_check_prints_the_report_and_exits_0_or_1(
    throwaway: Throwaway, tmp_path: Path
) -> None:
    url = await new_database(throwaway)
    code, report, plain = await db_check(url, tmp_path)
    assert code == 0, plain
    assert report == {"status": "success", "data": expected(HEAD, [], [])}
    assert "schema ok" in plain and f"head: {', '.join(HEAD)}" in plain

    await execute(url, "ALTER TABLE users DROP COLUMN image")
    code, report, plain = await db_check(url, tmp_path)
    assert code == 1, plain
    assert report == {"status": "error", "data": expected(HEAD, [], ["users.image"])}
    assert "missing columns: users.image" in plain and "schema NOT ok" in plain


async def test_an_unreachable_database_is_503_unavailable(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://nobody:nothing@127.0.0.1:{free_port()}/none"
    status, body = await over_http(url, tmp_path)
    assert status == 503, body
    assert body["code"] == "unavailable"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatehouse", "db", "check"],
        env={**os.environ, "GATEHOUSE_DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "database unavailable" in done.stderr
