"""Operator commands: `gatehouse keys …` (generate, rotate, rotate-data) and `gatehouse users
import` (the other `users` commands are in admin/users_cli.py). Key changes are written to the
secrets file atomically; processes pick them up when restarted (verification keeps the retired
signing key, decryption keeps every data key)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from gatehouse.admin.maintenance import import_users, reencrypt
from gatehouse.admin.schemas import imported
from gatehouse.admin.users_cli import users as users  # `gatehouse users`, with `import` below
from gatehouse.bootstrap import build
from gatehouse.config import Settings
from gatehouse.domain.crypto import add_data_key, generate_secrets_document, rotate_signing_keys

# Plain help, as the main command's (entrypoints/cli.py): rich panels show flags as `<bool>`.
keys = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Secrets and keys.")


def _write_secrets(settings: Settings, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    if settings.secrets_json:
        # Inline secrets live in the operator's environment: print the new document for them.
        json.dump(change(json.loads(settings.secrets_json)), sys.stdout, indent=2)
        sys.stdout.write("\n")
        typer.echo("GATEHOUSE_SECRETS_JSON is set: store the document above there.", err=True)
        return
    path = Path(settings.secrets_file)
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist: run `gatehouse keys generate` first")
    doc = change(json.loads(path.read_text()))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2)
    os.replace(tmp, path)  # atomic: a crash leaves the old or the new document, never half
    typer.echo(f"updated {path}", err=True)


@keys.command("generate")
def keys_generate() -> None:
    """Print a new secrets document (for GATEHOUSE_SECRETS_FILE or GATEHOUSE_SECRETS_JSON)."""
    json.dump(generate_secrets_document(), sys.stdout, indent=2)
    sys.stdout.write("\n")


@keys.command("rotate")
def keys_rotate() -> None:
    """New signing key for access tokens; the previous one keeps verifying until its tokens have
    expired, and keys retired longer than a token's lifetime are dropped."""
    settings = Settings()
    keep = timedelta(seconds=settings.access_token_ttl_seconds)
    _write_secrets(settings, lambda doc: rotate_signing_keys(doc, datetime.now(UTC), keep))


@keys.command("rotate-data")
def keys_rotate_data(
    new_key: Annotated[bool, typer.Option(help="Add a new data key first.")] = True,
    batch: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 500,
) -> None:
    """Re-encrypt personal data under the newest data key, in batches; safe to interrupt and run
    again (it resumes with the rows still under an older key)."""
    settings = Settings()
    if new_key:
        _write_secrets(settings, add_data_key)
        settings = Settings()

    async def main() -> int:
        services = build(settings)
        try:
            return await reencrypt(services.ctx, batch=batch)
        finally:
            await services.aclose()

    count = asyncio.run(main())
    typer.echo(f"re-encrypted {count} rows")


def _records(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if fmt == "csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
        yield from csv.DictReader(text.splitlines())
        return
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(stripped)
    else:  # JSON lines
        yield from (json.loads(line) for line in text.splitlines() if line.strip())


@users.command("import")
def users_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto, json or csv")] = "auto",
) -> None:
    """Import users with their bcrypt or argon2id hashes from a JSON, JSON-lines or CSV export
    (fields: email, password_hash, name?, phone?, email_verified?)."""
    settings = Settings()

    async def main() -> None:
        services = build(settings)
        try:
            report = await import_users(services.ctx, map(imported, _records(file, fmt)))
        finally:
            await services.aclose()
        typer.echo(
            f"created {report.created}, already present {report.existing}, "
            f"invalid {len(report.invalid)}"
        )
        for number, reason in report.invalid:
            typer.echo(f"  record {number}: {reason}", err=True)

    asyncio.run(main())
