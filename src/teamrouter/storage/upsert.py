"""INSERT … ON CONFLICT for both backends (their dialects spell it the same way in SQLAlchemy)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def insert_for(dialect_name: str, table: Table | Any) -> Any:
    """An INSERT construct that has `on_conflict_do_update` / `on_conflict_do_nothing`."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    statement: Insert = module.insert(table)
    return statement
