"""The inference endpoints as a bare ASGI layer in front of the FastAPI app.

`POST /api/v1/chat/completions` and `/api/v1/completions` skip the framework's routing, dependency
injection and validation (DESIGN.md measures them at several milliseconds of CPU a request); every
other path goes to the app (`teamrouter.app` dispatches with `inference_kind`). Errors still leave
in the OpenRouter envelope.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from teamrouter.errors import MethodNotAllowed, PayloadTooLarge, TeamrouterError, Unauthorized
from teamrouter.gateway.core import Gateway
from teamrouter.gateway.streaming import Head
from teamrouter.ids import new_generation_id
from teamrouter.providers.base import Kind, sse_event
from teamrouter.query_strings import refuse_repeated_in
from teamrouter.server import DISCONNECTED

ROUTES: dict[str, Kind] = {"/api/v1/chat/completions": "chat", "/api/v1/completions": "completion"}
GATEWAY_KEY = "gateway"


def _json_head(status: int, extra: list[tuple[bytes, bytes]], length: int) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(length).encode()), *extra],
    }


def inference_kind(scope: Scope) -> Kind | None:
    """The kind of inference request `scope` is, or None for anything the app itself serves. Any
    method: the front answers other methods than POST on these paths with a 405."""
    if scope["type"] != "http":
        return None
    return ROUTES.get(scope["path"])


class InferenceFront:
    """Answers the requests `inference_kind` recognises (and only those)."""

    def __init__(self, *, state: dict[str, Any], max_body_bytes: int) -> None:
        self.state = state  # the runtime's extras; the lifespan puts the Gateway there
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = inference_kind(scope)
        if kind is None:
            raise ValueError("InferenceFront only serves inference requests")
        if scope["method"] != "POST":
            refusal = MethodNotAllowed(f"{scope['method']} is not allowed here: use POST")
            await _send_error(send, refusal, [(b"allow", b"POST")])
            return
        await self._handle(scope, receive, send, kind)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
        started = time.perf_counter()
        gateway: Gateway = self.state[GATEWAY_KEY]
        headers = dict(scope["headers"])
        # Chosen before anything can fail, so every answer (errors included) carries it.
        generation_id = new_generation_id()
        generation = [(b"x-generation-id", generation_id.encode())]
        try:
            refuse_repeated_in(scope["query_string"])  # these take no parameters: empty, nearly always
            body = await self._body(receive, headers)
            token = _bearer(headers.get(b"authorization"))
            prepared = await gateway.prepare(
                token=token,
                body=body,
                kind=kind,
                referer=_text(headers.get(b"http-referer") or headers.get(b"referer")),
                title=_text(headers.get(b"x-title")),
                started=started,
                generation_id=generation_id,
            )
        except TeamrouterError as exc:
            await _send_error(send, exc, generation)
            return
        # Resolved when the client goes away, so that an upstream it no longer waits for is cancelled.
        # teamrouter's server provides it (teamrouter.server); under another, a task listens.
        disconnected: asyncio.Future[None] | None = scope.get("extensions", {}).get(DISCONNECTED)
        listener: asyncio.Task[None] | None = None
        if disconnected is None:
            disconnected = asyncio.get_running_loop().create_future()
            listener = asyncio.create_task(_listen(receive, disconnected))
        try:
            if not prepared.admission.request.stream:
                await self._complete(gateway, prepared, send, generation, disconnected)
            else:
                await self._stream(gateway, prepared, send, generation, disconnected)
        finally:
            if listener is not None:
                listener.cancel()

    async def _complete(
        self,
        gateway: Gateway,
        prepared: Any,
        send: Send,
        generation: list[tuple[bytes, bytes]],
        disconnected: asyncio.Future[None],
    ) -> None:
        try:
            payload = await gateway.complete(prepared, disconnected)
        except TeamrouterError as exc:
            await _send_error(send, exc, generation)
            return
        if payload is None:
            return  # the client left: nobody to answer
        await send(_json_head(200, generation, len(payload)))
        await send({"type": "http.response.body", "body": payload})

    async def _stream(
        self,
        gateway: Gateway,
        prepared: Any,
        send: Send,
        generation: list[tuple[bytes, bytes]],
        disconnected: asyncio.Future[None],
    ) -> None:
        async def start() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                        *generation,
                    ],
                }
            )

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        # Sent once, by the stream or its keepalive; whether it went out decides how an error ends.
        head = Head(start)
        try:
            await gateway.stream(prepared, emit, head, disconnected)
        except TeamrouterError as exc:
            if not head.sent:
                await _send_error(send, exc, generation)  # nothing was sent yet: an ordinary error
                return
            # The gateway raises only before the head; should anything escape after it (a keepalive
            # comment can send the head at any time), the stream still ends as API.md has it.
            await emit(sse_event({**exc.envelope(), "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise PayloadTooLarge("Client went away while sending the body", code="client_disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _listen(receive: Receive, disconnected: asyncio.Future[None]) -> None:
    """Resolves `disconnected` when the client goes away. Once the response is complete the server
    reports a disconnect too (ASGI), which then changes nothing: the request is done."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not disconnected.done():
                disconnected.set_result(None)
            return


def _bearer(value: bytes | None) -> str:
    if not value:
        raise Unauthorized("No API key provided: send 'Authorization: Bearer <key>'", code="no_credentials")
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <key>'", code="bad_authorization")
    return token.strip()


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value else None


async def _send_error(send: Send, exc: TeamrouterError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(exc.envelope())
    headers = list(extra or [])
    retry_after = exc.metadata.get("retry_after")
    if retry_after is not None:
        headers.append((b"retry-after", str(int(retry_after)).encode()))
    await send(_json_head(exc.status, headers, len(payload)))
    await send({"type": "http.response.body", "body": payload})
