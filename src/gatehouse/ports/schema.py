"""The database schema's port: migrations and the schema check (re-exported by `ports`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SchemaReport:
    """Revisions of the database and of the code, and what of the code's tables is missing
    (`missing_columns` as `table.column`, only for tables that exist)."""

    current: list[str]
    head: list[str]
    missing_tables: list[str]
    missing_columns: list[str]

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ok(self) -> bool:
        return self.at_head and not self.missing_tables and not self.missing_columns

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DatabaseSchema(Protocol):
    """Migrations and the schema check (seed 004's structure check), for `gatehouse migrate`,
    `gatehouse db check`, start-up and `/health/schema`."""

    async def upgrade(self, revision: str = "head") -> None: ...
    async def revisions(self) -> dict[str, Any]:
        """`{"current": [...], "head": [...]}` of the database and of the shipped migrations."""

    async def report(self) -> SchemaReport: ...
    async def aclose(self) -> None: ...
