"""A bare pass-through proxy (Starlette + aiohttp, no auth, no accounting) — the floor any gateway on
this machine pays, measured in the same run as teamrouter so the comparison is fair.

`python -m bench.bare_proxy --upstream URL --port N`
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build(upstream: str) -> Starlette:
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await state["http"].close()

    async def chat(request: Request) -> Response:
        body = await request.body()
        upstream_response = await state["http"].post(
            f"{upstream}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
        )
        if b'"stream":true' in body.replace(b" ", b""):

            async def relay() -> AsyncIterator[bytes]:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk
                upstream_response.release()

            return StreamingResponse(relay(), media_type="text/event-stream")
        data = await upstream_response.read()
        upstream_response.release()
        return Response(data, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
