"""API keys. Only the SHA-256 of a key is stored; usage counters live on the row for the hot path."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from teamrouter.storage.base import HOT_TABLE, Base, Money


class ApiKey(Base):
    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint("held >= 0", name="held_nonnegative"),
        CheckConstraint("spend_limit IS NULL OR spend_limit >= 0", name="limit_nonnegative"),
        HOT_TABLE,
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    # The context: an org, or (NULL) the creator's personal account. account_id is the credit account
    # it bills, denormalised so the hot path needs one row.
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_account.id"), index=True)
    creator_user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id"), index=True)
    management: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    # Set once an org admin other than the creator sets `disabled`, `limit` or `limit_reset` (at creation
    # too), or the key is (or already was) disabled at its creator's exit or demotion; cleared only by an
    # org admin other than the creator (`admin_managed: false`, handing it back). Meanwhile its creator,
    # unless an admin, may rename, disable, delete it or lower its limit, but not undo an admin's decision.
    admin_managed: Mapped[bool] = mapped_column(default=False)
    spend_limit: Mapped[int | None] = mapped_column(Money)  # nano-USD; None = no limit
    limit_reset: Mapped[str | None] = mapped_column(String(16))  # daily | weekly | monthly | None (lifetime)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]  # soft delete: activity keeps naming the key; auth refuses it

    # Spend counters (nano-USD). Window counters roll over lazily: a counter whose *_start is not the
    # current window's start counts as zero and is reset by the next settlement.
    usage: Mapped[int] = mapped_column(Money, default=0)
    usage_day: Mapped[int] = mapped_column(Money, default=0)
    day_start: Mapped[date | None]
    usage_week: Mapped[int] = mapped_column(Money, default=0)
    week_start: Mapped[date | None]
    usage_month: Mapped[int] = mapped_column(Money, default=0)
    month_start: Mapped[date | None]
    held: Mapped[int] = mapped_column(Money, default=0)  # open holds against this key's limit
