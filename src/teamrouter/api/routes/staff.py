"""Deployment-staff operations (audited): move personal credits to an org, record paid invoices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from starlette.responses import JSONResponse

from teamrouter.api.deps import RuntimeDep, SessionActor
from teamrouter.api.policy import Access, access
from teamrouter.domain.actor import Actor
from teamrouter.domain.credits import service as credits
from teamrouter.domain.credits.schemas import GrantCreate, TransferCreate
from teamrouter.errors import Forbidden
from teamrouter.money import to_usd

router = APIRouter(prefix="/staff", tags=["staff"])


async def _staff_actor(actor: SessionActor) -> Actor:
    # A dependency, so a non-staff caller gets 403 before their body is even validated.
    if not actor.is_staff:
        raise Forbidden("Only deployment staff may do this", code="staff_only")
    return actor


StaffActor = Annotated[Actor, Depends(_staff_actor)]


@router.post("/credit-transfers", status_code=201, openapi_extra=access(Access.STAFF))
async def transfer_credits(
    body: TransferCreate,
    actor: StaffActor,
    rt: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=100)] = None,
) -> JSONResponse:
    """Personal balance of a member → the org's pool, in one ledger transaction."""
    result = await credits.transfer_personal_to_org(
        rt,
        actor=actor,
        user_id=body.user_id,
        organization_id=body.organization_id,
        amount=body.amount,
        note=body.note,
        idempotency_key=idempotency_key,
    )
    data: dict[str, Any] = {
        "transaction_id": result.transaction_id,
        "amount": to_usd(result.amount),
        "personal_balance": to_usd(result.personal_balance),
        "organization_balance": to_usd(result.organization_balance),
    }
    return JSONResponse({"data": data}, status_code=201 if result.created else 200)


@router.post("/credit-grants", status_code=201, openapi_extra=access(Access.STAFF))
async def grant_credits(body: GrantCreate, actor: StaffActor, rt: RuntimeDep) -> JSONResponse:
    """Record an invoice paid off-line; the same reference again returns the original grant (200)."""
    result = await credits.grant_credits(
        rt, actor=actor, organization_id=body.organization_id, amount=body.amount, reference=body.reference
    )
    data = {
        "payment_id": result.payment_id,
        "entry_id": result.entry_id,
        "amount": to_usd(result.amount),
        "balance_after": to_usd(result.balance_after),
    }
    return JSONResponse({"data": data}, status_code=201 if result.created else 200)
