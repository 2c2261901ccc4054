"""Credits: OpenRouter's GET /credits, the ledger, payments, checkout and the Stripe webhook."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from teamrouter.api.deps import ActorDep, RuntimeDep, SessionActor
from teamrouter.api.policy import Access, access
from teamrouter.domain.credits import service as credits
from teamrouter.domain.credits.payments import stripe as stripe_payments
from teamrouter.domain.credits.schemas import CheckoutCreate, entry_public, payment_public
from teamrouter.money import to_usd

router = APIRouter(tags=["credits"])

Limit = Annotated[int, Query(ge=1, le=200)]
# The last id of the previous page (ids sort by time): anything else would read as an empty page.
Cursor = Annotated[str | None, Query(max_length=40, pattern=r"^[a-z]+_[0-9a-hjkmnp-tv-z]{26}$")]


@router.get("/credits", openapi_extra=access(Access.CONTEXT_ADMIN))
async def get_credits(actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    """Total credits and usage of the context's account (total_credits - total_usage = balance)."""
    totals = await credits.get_credits(rt, actor=actor)
    return {"data": {"total_credits": to_usd(totals.total_credits), "total_usage": to_usd(totals.total_usage)}}


@router.get("/credits/ledger", openapi_extra=access(Access.CONTEXT_ADMIN))
async def get_ledger(actor: ActorDep, rt: RuntimeDep, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """Ledger entries of the context's account, newest first; pass `next_cursor` as `cursor`."""
    entries, next_cursor = await credits.list_ledger(rt, actor=actor, limit=limit, cursor=cursor)
    return {"data": [entry_public(e) for e in entries], "next_cursor": next_cursor}


@router.get("/credits/payments", openapi_extra=access(Access.CONTEXT_ADMIN))
async def get_payments(actor: ActorDep, rt: RuntimeDep, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """Purchases and recorded invoices of the context's account, newest first."""
    payments, next_cursor = await credits.list_payments(rt, actor=actor, limit=limit, cursor=cursor)
    return {"data": [payment_public(p) for p in payments], "next_cursor": next_cursor}


@router.post("/credits/checkout", openapi_extra=access(Access.CONTEXT_ADMIN))
async def checkout(body: CheckoutCreate, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Buy credits for the context: a Stripe checkout URL, or (dev backend) credited at once."""
    result = await credits.start_checkout(rt, actor=actor, amount=body.amount)
    return {
        "data": {
            "id": result.payment_id,
            "status": result.status,
            "amount": to_usd(result.amount),
            "checkout_url": result.checkout_url,
        }
    }


@router.post("/billing/stripe/webhook", openapi_extra=access(Access.PUBLIC))
async def stripe_webhook(
    request: Request,
    rt: RuntimeDep,
    stripe_signature: Annotated[str | None, Header(max_length=2000)] = None,
) -> dict[str, Any]:
    """Stripe events, authenticated by their signature; idempotent per checkout session."""
    payload = await request.body()
    return await stripe_payments.handle_webhook(rt, payload=payload, signature=stripe_signature)
