"""How teamrouter logs: one format and level for the CLI's process and every server worker.

`teamrouter serve --workers N` runs the app in processes uvicorn spawns; they inherit nothing of the
parent's logging set-up, so the same configuration is handed to uvicorn, which applies it in each.
"""

from __future__ import annotations

from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary (what uvicorn's `log_config` takes too)."""
    return {
        "version": 1,
        # Modules imported before this runs hold their loggers already; they must keep working.
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # uvicorn's loggers go through the root's handler, in the same format as everything else.
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }
