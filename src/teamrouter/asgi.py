"""ASGI entry for uvicorn workers: `teamrouter.asgi:app_from_environment` (a factory)."""

from __future__ import annotations

from fastapi import FastAPI

from teamrouter.app import create_app
from teamrouter.config import load_settings
from teamrouter.runtime import build_runtime


def app_from_environment() -> FastAPI:
    return create_app(build_runtime(load_settings()))
