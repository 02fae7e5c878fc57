"""`gatehouse users find|show|disable|enable|revoke|delete` (and `import`, in admin/cli.py): the
admin API's user administration for the command line, through the same use cases
(admin/users.py). Audit records name the operator `cli:<login>`.

The sockets of the account are told through Redis, so they end on every api node at once;
embedded (no GATEHOUSE_REDIS_URL) the command cannot reach the sockets of a running
`gatehouse serve`, which then end at their token's expiry (use the admin API there)."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from gatehouse.admin import users as admin_users
from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.errors import GatehouseError

users = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="User administration.")
T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
UserId = Annotated[str, typer.Argument(help="The account's id.")]


def operator() -> str:
    """Who runs the command, for the audit records."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run(action: Callable[[Services], Awaitable[T]]) -> T:
    """`action` on the services of this configuration; a refusal (no such user, a bad
    argument) is printed and ends the command with status 1."""

    async def main() -> T:
        services = build(Settings(), role="cli")
        try:
            return await action(services)
        finally:
            await services.aclose()

    try:
        return asyncio.run(main())
    except GatehouseError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _show(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _line(user: dict[str, Any]) -> str:
    state = "disabled" if user["disabled"] else "active"
    return f"{user['id']}  {user['email']}  {user['name']}  {user['phone'] or '-'}  {state}"


@users.command("find")
def users_find(
    query: Annotated[str, typer.Argument(help="An email prefix, a phone or an id.")] = "",
    cursor: Annotated[str | None, typer.Option(help="A page's next cursor.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: AsJson = False,
) -> None:
    """Accounts by email prefix (all of them for none), an exact phone number or an id."""
    page = run(
        lambda s: admin_users.find(s.ctx, s.user_directory(), query, cursor, limit),
    )
    if as_json:
        _show({"users": page.items, "next_cursor": page.next_cursor})
        return
    for user in page.items:
        typer.echo(_line(user))
    if page.next_cursor:
        typer.echo(f"next: --cursor {page.next_cursor}")


@users.command("show")
def users_show(user_id: UserId) -> None:
    """One account with its live sessions and second factors (JSON, never a secret)."""
    _show(run(lambda s: admin_users.show(s.ctx, user_id)))


@users.command("disable")
def users_disable(user_id: UserId) -> None:
    """Disable the account: every session, token and socket ends; sign-in is refused."""
    user = run(lambda s: admin_users.disable(s.ctx, user_id, operator()))
    typer.echo(f"disabled {_line(user)}")


@users.command("enable")
def users_enable(user_id: UserId) -> None:
    """Let a disabled account sign in again."""
    user = run(lambda s: admin_users.enable(s.ctx, user_id, operator()))
    typer.echo(f"enabled {_line(user)}")


@users.command("revoke")
def users_revoke(user_id: UserId) -> None:
    """End every session of the account (it may sign in again)."""
    count = run(lambda s: admin_users.revoke_sessions(s.ctx, user_id, operator()))
    typer.echo(f"revoked {count} live session(s) of {user_id}")


@users.command("delete")
def users_delete(
    user_id: UserId,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase the account, its factors and its sessions."""
    if not yes:
        typer.confirm(f"Erase the account {user_id} for good?", abort=True)
    run(lambda s: admin_users.delete(s.ctx, user_id, operator()))
    typer.echo(f"deleted {user_id}")
