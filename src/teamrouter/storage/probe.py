"""`python -m teamrouter.storage.probe URL`: exit 0 when the database answers (used by `make test`)."""

from __future__ import annotations

import asyncio
import sys

from teamrouter.storage.db import Database


async def _probe(url: str) -> bool:
    database = Database(url)
    try:
        return await database.ping(timeout=5)
    finally:
        await database.dispose()


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(_probe(sys.argv[1])) else 1)
