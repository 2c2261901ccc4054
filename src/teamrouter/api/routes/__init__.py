"""Routers, one module per area; this is the single registration list."""

from __future__ import annotations

from fastapi import APIRouter

from teamrouter.api.routes import (
    activity,
    analytics,
    auth,
    credits,
    generation,
    health,
    keys,
    me,
    models,
    organization,
    orgs,
    staff,
)


def api_routers() -> list[APIRouter]:
    """Routers mounted under /api/v1."""
    return [
        auth.router,
        me.router,
        orgs.router,
        organization.router,
        keys.router,
        credits.router,
        staff.router,
        activity.router,
        analytics.router,
        models.router,
        generation.router,
    ]


def root_routers() -> list[APIRouter]:
    """Routers mounted at the root (health probes)."""
    return [health.router]
