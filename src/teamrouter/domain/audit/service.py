"""Record audit events inside the caller's unit of work (never its own transaction)."""

from __future__ import annotations

from typing import Any

from teamrouter.clock import Clock
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.ids import new_id
from teamrouter.storage.db import UnitOfWork


def record(
    uow: UnitOfWork,
    *,
    actor: Actor | None,
    clock: Clock,
    action: str,
    target_type: str,
    target_id: str | None,
    organization_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row. `before`/`after` must hold no secrets (callers pass public fields only)."""
    event = AuditEvent(
        id=new_id("aud"),
        created_at=clock.now(),
        actor_user_id=actor.user_id if actor else None,
        actor_key_id=actor.key_id if actor else None,
        organization_id=organization_id if organization_id is not None else (actor.organization_id if actor else None),
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
    )
    uow.session.add(event)
    return event
