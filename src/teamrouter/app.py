"""The app factory. A lifespan owns the runtime (engine, clients, caches); nothing happens at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from teamrouter import __version__
from teamrouter.api import errors
from teamrouter.api.limits import BodyLimit
from teamrouter.api.query import SingleValuedDep
from teamrouter.api.routes import api_routers, root_routers
from teamrouter.gateway.asgi import GATEWAY_KEY, InferenceFront, inference_kind
from teamrouter.gateway.setup import build_gateway, close_gateway, start_sweeper, stop_sweeper
from teamrouter.runtime import Runtime
from teamrouter.web import links

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


# See the lifespan: the young generation's collection threshold (CPython's default is 700).
YOUNG_GC_THRESHOLD = 10_000


class FrontedApp(FastAPI):
    """FastAPI with the inference endpoints answered in front of it, not as its middleware.

    Inside the stack every inference request paid FastAPI's per-request telemetry probe and
    Starlette's dispatch, about 10 µs of CPU; here it pays only the same `ServerErrorMiddleware`
    (with the app's own 500 handler) that stood outermost before. Everything else is plain FastAPI.
    """

    inference: ASGIApp | None = None  # set by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inference is not None and inference_kind(scope) is not None:
            await self.inference(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "HEAD":
            # HEAD wherever GET works (RFC 9110; load balancers probe /healthz so): FastAPI's routes
            # answer GET only, so a HEAD is served as the GET, without its body.
            await super().__call__({**scope, "method": "GET"}, receive, _headers_only(send))
            return
        await super().__call__(scope, receive, send)


def _headers_only(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime
        runtime.extras[GATEWAY_KEY] = gateway = await build_gateway(runtime)
        sweeper = start_sweeper(runtime)
        runtime.mail.start()  # mail that a process killed earlier left unsent goes out now
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight, so a full collection walks only what requests allocate (p99 at concurrency 32:
        # ~100 → 25-40 ms under `make bench`).
        gc.collect()
        gc.freeze()
        # A young-generation collection every YOUNG_GC_THRESHOLD net allocations instead of 700.
        # Nearly everything a request allocates dies by reference counting when it ends; at the
        # default, collections ran every ~16 requests at concurrency 32 and walked the live state of
        # the requests in flight (promoting it, so full collections followed every few thousand
        # requests): ~11 µs of CPU per request (4% of it) under `make bench`, and p99 spikes. Garbage
        # in cycles is still collected, once YOUNG_GC_THRESHOLD such objects have piled up.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            await stop_sweeper(sweeper)
            await close_gateway(gateway)
            await runtime.close()

    app = FrontedApp(
        title="teamrouter",
        version=__version__,
        description="OpenRouter-compatible LLM gateway for teams.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        dependencies=[SingleValuedDep],
    )
    app.state.runtime = runtime
    errors.install(app)
    for router in api_routers():
        app.include_router(router, prefix=API_PREFIX)
    for router in root_routers():
        app.include_router(router)
    # The pages the links in emails open (outside /api/v1: their URLs are in mails already sent).
    app.include_router(links.router())
    app.mount("/static", links.static_files(), name="static")
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    # Inference requests never enter the framework's stack; an unexpected error still becomes the
    # app's 500 envelope, as when this front was its outermost middleware.
    app.inference = ServerErrorMiddleware(
        InferenceFront(state=runtime.extras, max_body_bytes=runtime.settings.max_body_bytes),
        handler=app.exception_handlers.get(Exception),
        debug=app.debug,
    )
    return app
