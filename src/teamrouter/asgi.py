"""ASGI entry for uvicorn workers: `teamrouter.asgi:app_from_environment` (a factory)."""

from __future__ import annotations

from teamrouter.app import build_asgi
from teamrouter.config import load_settings
from teamrouter.gateway.asgi import InferenceFront
from teamrouter.runtime import build_runtime


def app_from_environment() -> InferenceFront:
    return build_asgi(build_runtime(load_settings()))
