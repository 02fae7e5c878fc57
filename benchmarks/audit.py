"""Issue 16: what the audit record adds to a sign-in and a refresh. The same `gatehouse api` (one
worker per core, on PostgreSQL through asyncpg, as deployed) is measured with its records and
without, the two alternating within each run (the order reversed every other run), with wrk as
in `routes.py`: `POST /api/auth/login` over 16 accounts at 8 connections (argon2-bound), and
`POST /api/auth/refresh` at 32 connections (the cheap, database-bound route, where the record's
insert weighs most). `gatehouse relay` runs throughout: its chainer links the records as they
come, on the same database and cores, as deployed.

Then the record's own cost, away from HTTP and the load's noise: one connection, transactions
one after the other through the asyncpg unit of work, each adding one outbox event (as a
refresh's rotation writes rows), with and without one audit record, alternating; the median
time of each and the difference (`audit_insert_added_ms`).

"Without" is the shipped code with the unit of work's audit flush made a no-op, in the api
processes only, by a `sitecustomize` module this script puts on their PYTHONPATH with
GATEHOUSE_BENCH_AUDIT=off: Gatehouse itself has no switch to turn its audit trail off. The rows
counted in `audit_log` before and after each run show which mode ran.

    .venv/bin/python benchmarks/audit.py [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import routes
import seed

from gatehouse.domain import events
from gatehouse.domain.audit import entry
from gatehouse.storage import sql
from gatehouse.storage.pg import PgDatabase
from gatehouse.storage.schema import audit_log

NO_AUDIT = '''"""Benchmark only (benchmarks/audit.py): the audit flush made a no-op here."""
import os

if os.environ.get("GATEHOUSE_BENCH_AUDIT") == "off":
    from gatehouse.storage import pg_audit, sql_audit

    async def _skip(self):
        self._staged.clear()
        self._kept.clear()

    pg_audit.PgAuditTrail.flush = _skip
    sql_audit.SqlAuditTrail.flush = _skip
'''


async def audit_rows(database_url: str, unlinked: bool = False) -> int:
    """Records in the table (`unlinked`: those the chainer has not linked yet)."""
    engine = sql.create_engine(database_url)
    query = select(func.count()).select_from(audit_log)
    if unlinked:
        query = query.where(audit_log.c.seq.is_(None))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def unit_cost(database_url: str, rounds: int = 1000) -> dict[str, float]:
    """Median milliseconds of a unit of work writing one outbox event, without and with one
    audit record, alternating on one asyncpg connection."""
    database = PgDatabase(database_url, pool_size=1)
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for n in range(2 * rounds + 20):
            audited = n % 2 == 1
            started = time.perf_counter()
            async with database.uow() as uow:
                now = datetime.now(UTC)
                await uow.outbox.add(events.user_event(events.LOGGED_IN, "bench", {}, now))
                if audited:
                    uow.audit.add(entry(now, "refresh", "success", user_id="bench"))
                await uow.commit()
            if n >= 20:  # the first ones warm the connection and prepare the statements
                times[audited].append((time.perf_counter() - started) * 1000)
    finally:
        await database.close()
    without, with_record = statistics.median(times[False]), statistics.median(times[True])
    return {
        "unit_without_audit_ms": round(without, 3),
        "unit_with_audit_ms": round(with_record, 3),
        "audit_insert_added_ms": round(with_record - without, 3),
    }


def run(bench: harness.Bench, runs: int = 3, seconds: float = 10) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    env = bench.stack.env
    emails = asyncio.run(seed.users(env, 64, f"a{uuid.uuid4().hex[:6]}"))
    login_env = {"BENCH_EMAILS": ",".join(emails[:16]), "BENCH_PASSWORD": seed.PASSWORD}
    figures: dict[str, list[float]] = {}
    rows: dict[str, list[int]] = {"on": [], "off": []}
    unlinked_at_end: list[int] = []
    bench.start("relay", "relay")  # the chainer
    with tempfile.TemporaryDirectory() as site:
        (Path(site) / "sitecustomize.py").write_text(NO_AUDIT)
        path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
        for n in range(runs):
            for mode in ("on", "off") if n % 2 == 0 else ("off", "on"):
                api = bench.api(workers, {"PYTHONPATH": path, "GATEHOUSE_BENCH_AUDIT": mode})
                before = asyncio.run(audit_rows(bench.database_url))
                _access, refresh = routes.sessions(api.url, emails[: routes.CONNECTIONS * 2])
                harness.wrk(api.url, "login", seconds=2, connections=8, env=login_env)  # warm-up
                login = harness.wrk(api.url, "login", seconds=seconds, connections=8, env=login_env)
                refresh_env = {"BENCH_REFRESH": ",".join(refresh), "BENCH_THREADS": "1"}
                rotated = harness.wrk(
                    api.url,
                    "refresh",
                    seconds=seconds,
                    connections=routes.CONNECTIONS,
                    env=refresh_env,
                )
                bench.stop("api")
                rows[mode].append(asyncio.run(audit_rows(bench.database_url)) - before)
                if mode == "on":  # how far behind the chainer was when the load stopped
                    unlinked_at_end.append(asyncio.run(audit_rows(bench.database_url, True)))
                suffix = "" if mode == "on" else "_no_audit"
                for name, result in (("login", login), ("refresh", rotated)):
                    figures.setdefault(f"{name}_per_s_audit{suffix}", []).append(result["per_s"])
                    figures.setdefault(f"{name}_p50_ms_audit{suffix}", []).append(result["p50_ms"])
                    figures.setdefault(f"{name}_p99_ms_audit{suffix}", []).append(result["p99_ms"])
    result: dict[str, Any] = {k: harness.median(v) for k, v in figures.items()}
    result.update(asyncio.run(unit_cost(bench.database_url)))
    for name in ("login", "refresh"):
        ratios = [
            on / off
            for on, off in zip(
                figures[f"{name}_per_s_audit"], figures[f"{name}_per_s_audit_no_audit"], strict=True
            )
        ]
        result[f"{name}_audit_rate_ratio"] = harness.median(ratios, digits=3)
        added = [
            on - off
            for on, off in zip(
                figures[f"{name}_p50_ms_audit"],
                figures[f"{name}_p50_ms_audit_no_audit"],
                strict=True,
            )
        ]
        result[f"{name}_audit_added_p50_ms"] = harness.median(added)
    result["audit_runs"] = {k: [round(x, 2) for x in v] for k, v in figures.items()}
    result["audit_method"] = {
        "api_workers": workers,
        "seconds_per_run": seconds,
        "runs": runs,
        "wrk_connections": {"login": 8, "refresh": routes.CONNECTIONS},
        "audit_rows_written_per_run": rows,  # "off" must be 0: the mode really ran
        "audit_rows_unlinked_when_load_stopped": unlinked_at_end,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with harness.bench_stack() as bench:
        result = run(bench, args.runs, args.seconds)
    for key, value in result.items():
        print(f"{key}: {value}")
    harness.write_result("audit", result)


if __name__ == "__main__":
    main()
