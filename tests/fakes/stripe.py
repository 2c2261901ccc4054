"""A fake Stripe API on 127.0.0.1 for the official SDK (`stripe_api_base` points at it). No network.

Implements `POST /v1/checkout/sessions` (form-encoded, as the SDK sends it): records the call and
answers a Checkout Session object. `FakeStripe.event(...)` builds a signed webhook delivery
(payload bytes and a `Stripe-Signature` header) the way Stripe signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web


class FakeStripe:
    def __init__(self, webhook_secret: str = "whsec_test_secret") -> None:
        self.webhook_secret = webhook_secret
        self.sessions: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.fail_next = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeStripe:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create_session(self, request: web.Request) -> web.Response:
        form = dict(parse_qsl((await request.read()).decode()))
        self.calls.append(
            {
                "form": form,
                "authorization": request.headers.get("Authorization", ""),
                "idempotency_key": request.headers.get("Idempotency-Key"),
            }
        )
        if self.fail_next:
            self.fail_next = False
            return web.json_response(
                {"error": {"type": "invalid_request_error", "message": "Invalid amount"}}, status=400
            )
        session_id = f"cs_test_{secrets.token_hex(8)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.test/pay/{session_id}",
            "mode": form.get("mode"),
            "client_reference_id": form.get("client_reference_id"),
            "metadata": {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")},
            "amount_total": int(form.get("line_items[0][price_data][unit_amount]", "0")),
            "currency": form.get("line_items[0][price_data][currency]"),
            "payment_status": "unpaid",
            "status": "open",
        }
        self.sessions[session_id] = session
        return web.json_response(session)

    def event(
        self,
        session_id: str,
        *,
        event_type: str = "checkout.session.completed",
        event_id: str | None = None,
        secret: str | None = None,
        **overrides: Any,
    ) -> tuple[bytes, dict[str, str]]:
        session = {**self.sessions[session_id], "payment_status": "paid", "status": "complete", **overrides}
        body = {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "api_version": "2024-06-20",
            "data": {"object": session},
        }
        payload = json.dumps(body).encode()
        return payload, {"Stripe-Signature": sign(payload, secret or self.webhook_secret)}


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = timestamp or int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
