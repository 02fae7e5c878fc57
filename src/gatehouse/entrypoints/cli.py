"""The `gatehouse` command line."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from gatehouse.admin import audit_cli
from gatehouse.admin import cli as admin
from gatehouse.admin import jobs_cli as job_admin
from gatehouse.bootstrap import build_schema
from gatehouse.config import Settings
from gatehouse.entrypoints import processes
from gatehouse.errors import Unavailable
from gatehouse.jobs.queues import QUEUES
from gatehouse.jobs.worker import worker_role
from gatehouse.observability import logs
from gatehouse.ports import SchemaReport

# Plain (click-style) help: typer's rich panels print every flag, --help included, as
# `--help <bool>`, as if it took a value.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Gatehouse identity service.",
)
app.add_typer(admin.keys, name="keys")
app.add_typer(admin.users, name="users")
app.add_typer(job_admin.jobs, name="jobs")
app.add_typer(audit_cli.audit, name="audit")
db = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The database schema.")
app.add_typer(db, name="db")


def _settings() -> Settings:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    return settings


@app.command()
def serve() -> None:
    """Everything in one process: api, worker, relay, courier and webhooks (embedded defaults
    when no URL is set)."""
    settings = _settings()
    roles = [
        worker_role(),
        processes.relay_role,
        processes.courier_role,
        processes.webhooks_role,
    ]
    processes.run(lambda: processes.serve_http(settings, roles, role="serve"))


@app.command()
def api() -> None:
    """The HTTP api (and Socket.IO) only; GATEHOUSE_API_WORKERS processes."""
    processes.serve_api(_settings())


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to consume (default: every queue).")
    ] = "",
) -> None:
    """Consume the job queues (BullMQ on Redis) and push each result over Socket.IO."""
    names = [q.strip() for q in queues.split(",") if q.strip()] or list(QUEUES)
    unknown = sorted(set(names) - set(QUEUES))
    if unknown:
        raise typer.BadParameter(
            f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}",
            param_hint="--queues",
        )
    settings = _settings()
    if not settings.redis_url:
        typer.echo(
            "gatehouse worker needs GATEHOUSE_REDIS_URL (embedded, `gatehouse serve` runs the "
            "jobs in its own process)",
            err=True,
        )
        raise typer.Exit(2)
    processes.run(lambda: processes.run_roles(settings, [worker_role(names)], "worker"))


@app.command()
def relay() -> None:
    """Publish the outbox to Kafka."""
    settings = _settings()
    processes.run(lambda: processes.run_roles(settings, [processes.relay_role], "relay"))


@app.command()
def courier() -> None:
    """Consume `send-otp` and deliver messages."""
    settings = _settings()
    processes.run(lambda: processes.run_roles(settings, [processes.courier_role], "courier"))


@app.command()
def webhooks() -> None:
    """Consume `user-events` (group GATEHOUSE_KAFKA_WEBHOOKS_GROUP) and deliver the webhooks."""
    settings = _settings()
    processes.run(lambda: processes.run_roles(settings, [processes.webhooks_role], "webhooks"))


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    settings = _settings()

    async def main() -> None:
        schema = build_schema(settings)
        try:
            await schema.upgrade()
            typer.echo(f"schema at {', '.join((await schema.revisions())['current'])}")
        finally:
            await schema.aclose()

    asyncio.run(main())


@db.command("check")
def db_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Is the schema at the newest migration, with every table and column? Exit 0 if so, 1 if
    not (or the database cannot be reached). The same report as GET /health/schema."""
    import json

    settings = _settings()

    async def main() -> SchemaReport:
        schema = build_schema(settings)
        try:
            return await schema.report()
        finally:
            await schema.aclose()

    try:
        report = asyncio.run(main())
    except Unavailable as exc:
        typer.echo(f"database unavailable: {exc.__cause__ or exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        status = "success" if report.ok else "error"
        typer.echo(json.dumps({"status": status, "data": report.as_dict()}))
    else:
        typer.echo(f"current: {', '.join(report.current) or '(no revision)'}")
        typer.echo(f"head: {', '.join(report.head)}")
        typer.echo(f"missing tables: {', '.join(report.missing_tables) or 'none'}")
        typer.echo(f"missing columns: {', '.join(report.missing_columns) or 'none'}")
        typer.echo("schema ok" if report.ok else "schema NOT ok")
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:
    app()
