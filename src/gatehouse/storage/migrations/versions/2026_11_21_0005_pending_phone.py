"""Pending phone: a new number on `users`, sealed, indexed and timed, until its code comes back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatehouse.storage.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: existing rows have nothing pending, and no table is rewritten on
    # PostgreSQL or MariaDB (SQLite copies it, under batch mode, as every alteration there).
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("pending_phone_ciphertext", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pending_phone_index", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pending_phone_expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("pending_phone_expires_at")
        batch.drop_column("pending_phone_index")
        batch.drop_column("pending_phone_ciphertext")
