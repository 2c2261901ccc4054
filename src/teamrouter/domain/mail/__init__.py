"""Outgoing mail, durable: recorded in the transaction that causes it, sent after its commit.

`outbox` records a mail in the caller's unit of work; `dispatcher` sends what is due (claimed row by
row, so several processes share the work) and retries failures; `store` holds their SQL.
"""
