"""`gatehouse jobs failed|retry`: the failed set of the BullMQ queues, seen and re-driven.

A job fails for good once its attempts are spent on infrastructure errors (database or Redis
away for longer than the backoff) or once it stalled too often. Its data (passwords, codes,
tokens) is never shown; a re-driven job goes back to waiting with its attempts reset."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.errors import Unavailable
from gatehouse.jobs.queues import QUEUES
from gatehouse.ports import JobState

# Plain help, as the main command's (entrypoints/cli.py): rich panels show flags as `<bool>`.
jobs = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The job queues' failed set.")
T = TypeVar("T")
QueueOption = Annotated[
    str, typer.Option("--queue", "-q", help="One queue (default: every queue).")
]


def describe(state: JobState) -> dict[str, object]:
    """What an operator sees of a failed job: never its data."""
    return {
        "job_id": state.id,
        "queue": state.queue,
        "name": state.name,
        "attempts_made": state.attempts_made,
        "failed_reason": state.failed_reason,
        "failed_at": state.finished_at.isoformat() if state.finished_at else None,
    }


def _queues(queue: str) -> list[str]:
    if not queue:
        return list(QUEUES)
    if queue not in QUEUES:
        raise typer.BadParameter(f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")
    return [queue]


def _run(work: Callable[[Services], Awaitable[T]]) -> T:
    settings = Settings()
    if not settings.redis_url:
        typer.echo("gatehouse jobs needs GATEHOUSE_REDIS_URL (the BullMQ queues)", err=True)
        raise typer.Exit(2)

    async def main() -> T:
        services = build(settings)
        try:
            return await work(services)
        finally:
            await services.aclose()

    try:
        return asyncio.run(main())
    except Unavailable as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@jobs.command("failed")
def failed(
    queue: QueueOption = "",
    limit: Annotated[int, typer.Option(min=1, help="At most this many per queue.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List failed jobs, most recent first: id, queue, name, attempts, reason (never the data)."""
    names = _queues(queue)

    async def work(services: Services) -> list[JobState]:
        found: list[JobState] = []
        for name in names:
            found.extend(await services.jobs.failed(name, limit))
        return found

    found = _run(work)
    for state in found:
        row = describe(state)
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(
                f"{row['queue']}\t{row['job_id']}\t{row['name']}\tattempts={row['attempts_made']}"
                f"\t{row['failed_at'] or '-'}\t{row['failed_reason'] or '-'}"
            )
    if not as_json:
        typer.echo(f"{len(found)} failed job(s)", err=True)


@jobs.command("retry")
def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Ids of failed jobs.")] = None,
    queue: QueueOption = "",
    every: Annotated[bool, typer.Option("--all", help="Every failed job.")] = False,
) -> None:
    """Move failed jobs back to waiting, with their attempts reset."""
    if bool(job_ids) == every:
        raise typer.BadParameter("give job ids or --all (not both)")
    names = _queues(queue)

    async def work(services: Services) -> dict[str, list[str]]:
        return {name: await services.jobs.retry(name, job_ids or None) for name in names}

    moved = _run(work)
    for name, ids in moved.items():
        for job_id in ids:
            typer.echo(f"{name}\t{job_id}")
    total = sum(len(ids) for ids in moved.values())
    typer.echo(f"{total} job(s) moved back to waiting", err=True)
    missing = set(job_ids or ()) - {i for ids in moved.values() for i in ids}
    if missing:
        typer.echo(f"not in the failed set: {', '.join(sorted(missing))}", err=True)
        raise typer.Exit(1)
