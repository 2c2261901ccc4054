"""Payment backends: how money arrives (Stripe Checkout, an off-line invoice, or free in dev mode)."""

from __future__ import annotations

from teamrouter.config import PaymentsBackend, Settings
from teamrouter.domain.credits.payments.base import PaymentBackend
from teamrouter.domain.credits.payments.dev import DevBackend
from teamrouter.domain.credits.payments.manual import ManualBackend
from teamrouter.domain.credits.payments.stripe import StripeBackend


def backend_for(settings: Settings) -> PaymentBackend:
    """The configured backend. `dev` exists only in dev mode, whatever the setting says."""
    chosen = settings.effective_payments
    if chosen is PaymentsBackend.STRIPE:
        return StripeBackend()
    if chosen is PaymentsBackend.DEV and settings.is_dev:
        return DevBackend()
    return ManualBackend()


__all__ = ["PaymentBackend", "backend_for"]
