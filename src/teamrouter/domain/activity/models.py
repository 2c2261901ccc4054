"""One row per generation (metadata only: never a prompt or a completion) and hourly rollups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from teamrouter.storage.base import HOT_TABLE, Base, Money


class Generation(Base):
    __tablename__ = "generation"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "gen-…"
    created_at: Mapped[datetime]
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_account.id"))
    organization_id: Mapped[str | None] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(ForeignKey("api_key.id"))
    key_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(40))  # the key's creator, on whose behalf it ran
    hold_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    endpoint_id: Mapped[str] = mapped_column(String(300))
    upstream_model: Mapped[str] = mapped_column(String(200))
    tokens_prompt: Mapped[int] = mapped_column(default=0)
    tokens_completion: Mapped[int] = mapped_column(default=0)
    tokens_reasoning: Mapped[int] = mapped_column(default=0)
    tokens_cached: Mapped[int] = mapped_column(default=0)
    cost: Mapped[int] = mapped_column(Money, default=0)
    latency_ms: Mapped[int] = mapped_column(default=0)  # request received → first byte to client
    generation_time_ms: Mapped[int] = mapped_column(default=0)  # first byte → last byte
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    streamed: Mapped[bool] = mapped_column(default=False)
    cancelled: Mapped[bool] = mapped_column(default=False)
    usage_estimated: Mapped[bool] = mapped_column(default=False)
    status_code: Mapped[int] = mapped_column(default=200)
    external_user: Mapped[str | None] = mapped_column(String(200))
    app_referer: Mapped[str | None] = mapped_column(String(500))
    app_title: Mapped[str | None] = mapped_column(String(200))


class UsageRollup(Base):
    """Per hour × account × key × user × model × provider, kept current as generations settle."""

    __tablename__ = "usage_rollup"
    __table_args__ = (HOT_TABLE,)

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    requests: Mapped[int] = mapped_column(default=0)
    tokens_prompt: Mapped[int] = mapped_column(default=0)
    tokens_completion: Mapped[int] = mapped_column(default=0)
    tokens_reasoning: Mapped[int] = mapped_column(default=0)
    tokens_cached: Mapped[int] = mapped_column(default=0)
    cost: Mapped[int] = mapped_column(Money, default=0)


Index("ix_generation_account_created", Generation.account_id, Generation.created_at)
Index("ix_generation_key_created", Generation.key_hash, Generation.created_at)
Index(
    "ix_generation_account_user_created",
    Generation.account_id,
    Generation.user_id,
    Generation.created_at,
)
Index("ix_usage_rollup_account_hour", UsageRollup.account_id, UsageRollup.hour)
