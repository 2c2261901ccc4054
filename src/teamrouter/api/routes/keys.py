"""Keys endpoints (filled in by their issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["keys"])
