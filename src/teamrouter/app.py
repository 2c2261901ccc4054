"""The app factory. A lifespan owns the runtime (engine, clients, caches); nothing happens at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from teamrouter import __version__
from teamrouter.api import errors
from teamrouter.api.limits import BodyLimit
from teamrouter.api.routes import api_routers, root_routers
from teamrouter.gateway.asgi import GATEWAY_KEY, InferenceFront
from teamrouter.gateway.setup import build_gateway, close_gateway, start_sweeper, stop_sweeper
from teamrouter.runtime import Runtime

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime
        runtime.extras[GATEWAY_KEY] = gateway = await build_gateway(runtime)
        sweeper = start_sweeper(runtime)
        try:
            yield
        finally:
            await stop_sweeper(sweeper)
            await close_gateway(gateway)
            await runtime.close()

    app = FastAPI(
        title="teamrouter",
        version=__version__,
        description="OpenRouter-compatible LLM gateway for teams.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    for router in api_routers():
        app.include_router(router, prefix=API_PREFIX)
    for router in root_routers():
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    return app


def build_asgi(runtime: Runtime) -> InferenceFront:
    """What the server runs: the inference endpoints in front of the whole framework, so they never
    pay for its middleware stack (FastAPI's own telemetry hooks read the environment per request),
    routing or validation. Everything else, lifespan included, passes through to the app."""
    return InferenceFront(create_app(runtime), state=runtime.extras, max_body_bytes=runtime.settings.max_body_bytes)
