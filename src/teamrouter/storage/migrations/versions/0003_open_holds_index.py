"""open holds index: partial (status = 'open'), on expires_at only

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    with op.batch_alter_table("credit_hold", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_hold_open")
        batch_op.create_index(
            "ix_credit_hold_open", ["expires_at"], unique=False, sqlite_where=OPEN, postgresql_where=OPEN
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_hold", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_hold_open")
        batch_op.create_index("ix_credit_hold_open", ["status", "expires_at"], unique=False)
