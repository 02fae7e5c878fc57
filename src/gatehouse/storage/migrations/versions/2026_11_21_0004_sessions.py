"""Sessions: one row per sign-in (refresh-token family), filled from the families already there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gatehouse.storage.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Every family signed in with a password (the only factor so far); a family is revoked as a
# whole, so its latest revocation is the session's. Plain SQL that all three databases run.
BACKFILL = """
INSERT INTO sessions
    (id, user_id, created_at, last_used_at, auth_time, user_agent, amr, aal,
     revoked_at, revoked_reason)
SELECT family_id, MIN(user_id), MIN(created_at), MAX(created_at), MIN(created_at), NULL,
       '["pwd"]', 1, MAX(revoked_at),
       CASE WHEN MAX(revoked_at) IS NULL THEN NULL ELSE 'revoked' END
FROM refresh_tokens
GROUP BY family_id
"""


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
        sa.Column("auth_time", UTCDateTime(), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=True),
        sa.Column("amr", sa.String(200), nullable=False),
        sa.Column("aal", sa.Integer(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_reason", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])
    op.execute(sa.text(BACKFILL))


def downgrade() -> None:
    op.drop_index(op.f("ix_sessions_user_id"), table_name="sessions")
    op.drop_table("sessions")
