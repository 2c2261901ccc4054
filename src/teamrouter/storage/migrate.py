"""Alembic, driven from code: `upgrade(url)` brings a database to the newest schema.

Used by `teamrouter serve` (migrates first), `teamrouter db upgrade` and the tests, so the schema the
tests see is the one the migrations build. Several processes may call it at once on one database:
the migration environment (migrations/env.py) makes them take turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from teamrouter.errors import ServiceUnavailable
from teamrouter.storage.db import Database, describe_failure
from teamrouter.storage.urls import display_url

MIGRATIONS = Path(__file__).with_name("migrations")
# A database that drops packets must not hang an operator's command (asyncpg's connect timeout is 5 s).
CHECK_SECONDS = 10.0


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    # `%` must be escaped for ConfigParser interpolation (passwords in URLs).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision the migrations know (what a migrated database is at)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return ScriptDirectory.from_config(config).get_current_head()


def unreachable(url: str, exc: BaseException) -> ServiceUnavailable:
    """One line for the operator naming the setting, the database (password hidden) and the cause."""
    return ServiceUnavailable(
        f"cannot use the database at TEAMROUTER_DATABASE_URL ({display_url(url)}): {describe_failure(exc)}",
        code="database_unreachable",
    )


def upgrade(url: str, revision: str = "head", *, quiet: bool = False) -> None:
    """Migrate; safe to call from inside a running event loop (the env runs its own loop).

    A database that cannot be reached, opened or created raises `ServiceUnavailable` with one line
    naming TEAMROUTER_DATABASE_URL. `quiet` keeps Alembic's progress lines out of the log (commands
    that migrate only in passing).
    """
    try:
        with _alembic_logs(quiet):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                command.upgrade(alembic_config(url), revision)
                return
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(command.upgrade, alembic_config(url), revision).result()
    except (OSError, DBAPIError) as exc:  # refused, timed out, no such database or file, read-only
        raise unreachable(url, exc) from exc


async def require_current(url: str) -> None:
    """Raise `ServiceUnavailable` (one line) unless the database answers and has the newest schema.

    For commands that work on an existing deployment's database: they should neither create one
    where the URL points by mistake nor fail halfway on a missing table.
    """
    try:
        database = Database(url)
        try:
            # A read: on SQLite a deferred transaction, not the write lock every uow takes.
            engine = database.engine.execution_options(sqlite_begin="DEFERRED")
            async with asyncio.timeout(CHECK_SECONDS), engine.connect() as conn:
                current = await conn.run_sync(_current_revision)
        finally:
            await database.dispose()
    except (OSError, DBAPIError) as exc:  # TimeoutError is an OSError
        raise unreachable(url, exc) from exc
    head = head_revision()
    if current != head:
        raise ServiceUnavailable(
            f"the database at TEAMROUTER_DATABASE_URL ({display_url(url)}) has schema revision "
            f"{current or 'none (empty)'}, not {head}: run `teamrouter db upgrade` first",
            code="database_not_migrated",
        )


def _current_revision(connection: Connection) -> str | None:
    with _alembic_logs(quiet=True):  # "Context impl …" lines say nothing to an operator
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _alembic_logs(quiet: bool) -> Iterator[None]:
    logger = logging.getLogger("alembic")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
