"""Organizations, memberships and invitations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from teamrouter.storage.base import Base


class Organization(Base):
    __tablename__ = "organization"
    __table_args__ = (CheckConstraint("member_count >= 0", name="member_count_nonnegative"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    # Kept in step with membership rows inside the same transaction; the cap is enforced by a guarded
    # UPDATE on this counter, so concurrent accepts cannot overshoot it.
    member_count: Mapped[int] = mapped_column(default=0)
    member_cap: Mapped[int | None]  # staff override; None = the deployment default
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # provider, privacy, visibility, exit keys
    billing: Mapped[dict[str, Any]] = mapped_column(default=dict)  # billing email, contacts, invoicing
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Membership(Base):
    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("organization_id", "user_id", name="uq_membership_org_user"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Invitation(Base):
    __tablename__ = "invitation"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None]
