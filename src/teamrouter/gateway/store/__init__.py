"""The hot path's thin store: admission holds, settlement and activity rows, in raw SQL.

The ORM serves the management side; here every statement is short and prepared (inline `sqlite3` on
SQLite, `asyncpg` on PostgreSQL) because the inference path pays for each one on every request.
Both implementations run the same SQL text (`sql.py`) and keep the ledger's invariants: a hold is
reserved by guarded UPDATEs, resolves exactly once, and settlement posts one usage entry per hold.
"""
