"""Alembic environment: runs migrations over the async engine for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from teamrouter.storage.db import Database
from teamrouter.storage.models import metadata

config = context.config
# pg_advisory_xact_lock key of "migrating teamrouter's schema" (any constant no other code uses).
MIGRATION_LOCK = 0x7465616D726F7574  # "teamrout"


def _run(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Alembic counts SQLite's DDL as non-transactional and so commits after each revision,
        # which lets another process starting together take the write lock in between, find the
        # first revision done and apply the next one too: both then apply it, and one fails
        # ("table already exists"). A transaction begun here (IMMEDIATE: storage/db.py) is one
        # Alembic leaves alone: every revision runs in it, and `_main` commits it once.
        connection.begin()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER needs table copies
        compare_type=True,
    )
    with context.begin_transaction():
        # Instances starting together on a new database would each find no schema and each create
        # it: all but one then fail (a unique violation on alembic_version or the catalog). Taken
        # before Alembic reads the current revision and held to the commit, the lock makes them
        # take turns; the later ones find the schema current and do nothing. SQLite needs no such
        # thing: every transaction here begins IMMEDIATE (storage/db.py), i.e. holds the write lock
        # from before the revision is read to its commit (and opening a new file together is
        # handled where connections switch it to WAL: storage/wal.py).
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _main(url: str) -> None:
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await database.dispose()


def _offline(url: str) -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


url: Any = config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    _offline(url)
else:
    asyncio.run(_main(url))
