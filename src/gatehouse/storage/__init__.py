"""Storage: table schema, migrations, SQLAlchemy and asyncpg implementations."""
