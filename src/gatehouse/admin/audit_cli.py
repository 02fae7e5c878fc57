"""`gatehouse audit verify|chain|prune|list` (docs/audit.md), over the use cases of
admin/audit.py.

`verify` exits 0 with the number of records checked and the head (note it: given back later with
`--anchor`, a chain rewritten since no longer matches), or 1 with the first broken link. `chain`
links the records waiting (the relay role does it continuously)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gatehouse.admin import audit as admin_audit
from gatehouse.admin.users_cli import operator, run
from gatehouse.config import Settings
from gatehouse.domain.audit import ADMIN
from gatehouse.ports.audit import AuditStore

audit = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The audit trail.")


def _anchor(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter(f"{value!r}: give SEQ:HASH, as `audit verify` prints the head")
    return int(seq), digest.lower()


@audit.command("verify")
def audit_verify(
    anchor: Annotated[
        list[str] | None,
        typer.Option(help="SEQ:HASH noted from an earlier run; the record must still match."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Check the hash chain from the checkpoint (or the first record) to the head: exit 0 if it
    holds, 1 with the first broken link if a record was removed, altered or moved."""
    anchors = dict(_anchor(a) for a in anchor or [])
    verdict = run(lambda s: admin_audit.verify(s.audit_store(), anchors))
    start = verdict.checkpoint.seq if verdict.checkpoint else 0
    if as_json:
        broken = verdict.broken
        typer.echo(
            json.dumps(
                {
                    "ok": verdict.ok,
                    "records": verdict.count,
                    "from": start,
                    "head": {"seq": verdict.head.seq, "hash": verdict.head.hash},
                    "waiting": verdict.waiting,
                    "broken": None
                    if broken is None
                    else {"seq": broken.seq, "problem": broken.problem, "detail": broken.detail},
                }
            )
        )
    elif verdict.broken is None:
        typer.echo(
            f"audit chain ok: {verdict.count} record(s) after seq {start}; "
            f"head {verdict.head.seq}:{verdict.head.hash}"
        )
        if verdict.waiting:
            since = verdict.waiting_since.isoformat() if verdict.waiting_since else "?"
            typer.echo(
                f"{verdict.waiting} record(s) not linked yet, the oldest from {since} "
                "(the relay links them; or `gatehouse audit chain`)"
            )
    else:
        typer.echo(f"audit chain BROKEN at {verdict.broken}", err=True)
        typer.echo(f"(checked {verdict.count} record(s) after seq {start} before it)", err=True)
    raise typer.Exit(0 if verdict.ok else 1)


@audit.command("chain")
def audit_chain() -> None:
    """Link every record waiting into the chain now (the relay role does it continuously)."""

    async def link_all(store: AuditStore) -> int:
        total = 0
        while linked := await store.chain(admin_audit.BATCH):
            total += linked
        return total

    typer.echo(f"linked {run(lambda s: link_all(s.audit_store()))} record(s)")


@audit.command("prune")
def audit_prune(
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Keep this many days (default GATEHOUSE_AUDIT_RETENTION_DAYS)."),
    ] = None,
) -> None:
    """Remove the records older than the retention; the checkpoint keeps the rest verifiable."""
    keep = days if days is not None else Settings().audit_retention_days
    if keep <= 0:
        typer.echo("retention off (GATEHOUSE_AUDIT_RETENTION_DAYS=0): nothing removed")
        return
    removed = run(
        lambda s: admin_audit.prune(s.ctx, s.audit_store(), keep, actor=ADMIN, actor_id=operator())
    )
    typer.echo(f"removed {removed} record(s) older than {keep} day(s)")


@audit.command("list")
def audit_list(
    user: Annotated[str | None, typer.Option(help="Of this user id.")] = None,
    kind: Annotated[str | None, typer.Option("--type", help="Action; `login*`: a prefix.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601, with its offset.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601, with its offset.")] = None,
    cursor: Annotated[str | None, typer.Option(help="A page's next cursor.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
) -> None:
    """Records newest first, one JSON object a line, then the next page's cursor if any."""
    page = run(
        lambda s: admin_audit.records(
            s.audit_store(),
            user_id=user,
            action=kind,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )
    )
    for item in page.items:
        typer.echo(json.dumps(item, ensure_ascii=False))
    if page.next_cursor:
        typer.echo(f"next: --cursor {page.next_cursor}", err=True)
