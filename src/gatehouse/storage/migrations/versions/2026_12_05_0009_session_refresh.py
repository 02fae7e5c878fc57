"""A session's refresh token in its own row (`domain.tokens.SessionRefresh`): the current
generation, the keyed hash of its token, its expiry and the session's end. Tokens of
sessions opened before stay rows of refresh_tokens until their next rotation.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatehouse.storage.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("refresh_generation", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("sessions", sa.Column("refresh_hash", sa.String(64), nullable=True))
    op.add_column("sessions", sa.Column("refresh_expires_at", UTCDateTime(), nullable=True))
    op.add_column("sessions", sa.Column("expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    for column in ("expires_at", "refresh_expires_at", "refresh_hash", "refresh_generation"):
        op.drop_column("sessions", column)
