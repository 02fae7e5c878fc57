"""Alembic migrations, shipped in the package; run with `gatehouse migrate`."""
