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
from teamrouter.runtime import Runtime

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime
        try:
            yield
        finally:
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
