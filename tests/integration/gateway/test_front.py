"""The inference front in the app: it answers only the inference routes, in front of FastAPI, and an
unexpected failure still leaves as the app's 500 envelope."""

from __future__ import annotations

from typing import Any

import httpx

from teamrouter.gateway.asgi import GATEWAY_KEY
from teamrouter.runtime import Runtime


class Broken:
    async def prepare(self, **_: Any) -> Any:
        raise RuntimeError("a bug, not a TeamrouterError")


async def test_an_unexpected_error_is_a_500_envelope(app: Any, rt: Runtime) -> None:
    rt.extras[GATEWAY_KEY] = Broken()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.post("/api/v1/chat/completions", json={"model": "a/b"}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 500
    assert r.json() == {"error": {"code": 500, "message": "Internal error", "metadata": {"code": "internal"}}}


async def test_other_paths_go_to_the_app(client: httpx.AsyncClient, rt: Runtime) -> None:
    rt.extras[GATEWAY_KEY] = Broken()
    r = await client.post("/api/v1/chat/completions/x")
    assert r.status_code == 404
    assert r.json()["error"]["metadata"]["code"] == "not_found"  # the app's envelope, not the front's
    assert (await client.get("/healthz")).status_code == 200


async def test_other_methods_on_the_inference_paths_are_a_405(client: httpx.AsyncClient, rt: Runtime) -> None:
    rt.extras[GATEWAY_KEY] = Broken()  # never reached
    for method, path in (("GET", "/api/v1/chat/completions"), ("PUT", "/api/v1/completions")):
        r = await client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        error = r.json()["error"]
        assert error["code"] == 405 and error["metadata"]["code"] == "method_not_allowed"
        assert f"{method} is not allowed here: use POST" == error["message"]
