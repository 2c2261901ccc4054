"""Switching a SQLite database to WAL when several connections may be opening it at once.

The switch needs the database's exclusive lock. Two connections opening a new (rollback-journal)
file together can each hold its shared lock while wanting that lock; SQLite then refuses one of them
at once with "database is locked" instead of waiting, since waiting would deadlock, so the busy
timeout does not help. Instances starting together on a new file did this (CI saw two of four
migrations fail). The switch is idempotent, so the refused connection simply tries again.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

# Bounded like the busy timeout the connections use: a lock held longer is a real problem to report.
SWITCH_SECONDS = 30.0


def use_wal(execute: Callable[[str], Any], *, seconds: float = SWITCH_SECONDS) -> None:
    """Run `PRAGMA journal_mode=WAL` through `execute`, retrying while SQLite refuses it as locked.

    The retries sleep in the caller's thread, which for the ORM's connections is the event loop's:
    they happen only while a new file is being switched (WAL is persistent, and a file already in it
    answers at once below), i.e. when instances start together on a new database."""
    if _mode(execute) == "wal":
        return
    deadline = time.monotonic() + seconds
    while True:
        try:
            execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        # Jittered, so connections that collided do not collide again in step.
        time.sleep(random.uniform(0.005, 0.03))


def _mode(execute: Callable[[str], Any]) -> str | None:
    row = execute("PRAGMA journal_mode").fetchone()
    return str(row[0]).lower() if row else None
