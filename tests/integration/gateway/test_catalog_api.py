"""The catalog over HTTP (API.md, Inference): GET /models, /model/{author}/{slug},
/models/{author}/{slug}/endpoints and /providers in OpenRouter's shapes (and /models/{author}/{slug}
in OpenAI's), read by the official SDKs against a real teamrouter process; an
inference key required (401 without, 403 for a management key), `X-Generation-Id` on each answer."""

from __future__ import annotations

import warnings

import httpx
import pytest
from openrouter import components, operations, utils
from tests.support.gateway import add_key, funded_person
from tests.support.sdk import openrouter

from teamrouter.domain.keys import service as keys

pytestmark = pytest.mark.db


def get(gateway, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gateway.base_url}/api/v1{path}", headers=headers, timeout=30)


async def test_models_endpoints_and_providers_in_openrouters_shapes(sdk, gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    r = get(gateway, "/models", who.key)
    assert r.status_code == 200 and r.headers["x-generation-id"].startswith("gen-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        utils.unmarshal_json(r.text, components.ModelsListResponse)
    chat = next(m for m in r.json()["data"] if m["id"] == "test/chat")
    assert chat["name"] == "Test Chat" and chat["context_length"] == 32768
    # The cheapest endpoint's prices, USD per token, as strings.
    assert chat["pricing"]["prompt"] == "0.000001" and chat["pricing"]["completion"] == "0.000002"
    assert {m.id for m in sdk(who.key).models.list()} >= {"test/chat", "test/claude", "test/cent"}

    r = get(gateway, "/models/test/chat/endpoints", who.key)
    assert r.status_code == 200 and r.headers["x-generation-id"].startswith("gen-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        utils.unmarshal_json(r.text, operations.ListEndpointsResponse)
    endpoints = r.json()["data"]["endpoints"]
    assert [e["provider_name"] for e in endpoints] == ["Fake AI", "Fake Backup"]

    r = get(gateway, "/providers", who.key)
    assert r.status_code == 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        utils.unmarshal_json(r.text, operations.ListProvidersResponse)
    assert {"name": "Fake Anthropic", "slug": "claude"} in [
        {"name": p["name"], "slug": p["slug"]} for p in r.json()["data"]
    ]
    with (
        warnings.catch_warnings(),
        openrouter(who.key, gateway.base_url) as client,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        listed = client.models.list()
        assert "test/claude" in {m.id for m in listed.result.data}
        assert "claude" in {p.slug for p in client.providers.list().data}


async def test_one_model_for_the_openrouter_and_openai_sdks(sdk, gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    listed = next(m for m in get(gateway, "/models", who.key).json()["data"] if m["id"] == "test/chat")

    # OpenRouter's GET /model/{author}/{slug}: the listing's object, under `data`.
    r = get(gateway, "/model/test/chat", who.key)
    assert r.status_code == 200 and r.json() == {"data": listed}
    with (
        warnings.catch_warnings(),
        openrouter(who.key, gateway.base_url) as client,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        model = client.models.get(author="test", slug="chat").data
        assert model.id == "test/chat" and model.pricing.prompt == "0.000001"

    # OpenAI's GET /models/{model}, which `models.retrieve` calls with the id's slash unescaped.
    retrieved = sdk(who.key).models.retrieve("test/chat")
    assert (retrieved.id, retrieved.object, retrieved.owned_by) == ("test/chat", "model", "test")
    assert retrieved.created == listed["created"]


async def test_the_endpoints_listing_shows_each_quantization(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    with (
        warnings.catch_warnings(),
        openrouter(who.key, gateway.base_url) as client,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        endpoints = client.endpoints.list(author="test", slug="chat").data.endpoints
    # The catalog gives Fake AI's endpoint "fp8" and Fake Backup's none.
    assert [(e.provider_name, e.quantization) for e in endpoints] == [("Fake AI", "fp8"), ("Fake Backup", "unknown")]


@pytest.mark.parametrize("path", ["/models/nope/nothing/endpoints", "/model/nope/nothing", "/models/nope/nothing"])
async def test_an_unknown_model_is_a_404(gateway, gw_rt, path):
    who = await funded_person(gw_rt, usd="1")
    r = get(gateway, path, who.key)
    assert r.status_code == 404 and r.json()["error"] == {
        "code": 404,
        "message": "Model nope/nothing not found",
        "metadata": {"code": "model_not_found"},
    }


@pytest.mark.parametrize(
    "path", ["/models", "/model/test/chat", "/models/test/chat", "/models/test/chat/endpoints", "/providers"]
)
async def test_the_catalog_needs_an_inference_key(gateway, gw_rt, path):
    who = await funded_person(gw_rt, usd="1")
    for key in (None, "sk-tr-v1-nope"):
        r = get(gateway, path, key)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
    management = await keys.create_key(gw_rt, actor=who.actor, name="ops", management=True)
    r = get(gateway, path, management.plaintext)
    assert r.status_code == 403 and r.json()["error"]["metadata"]["code"] == "management_key"
    assert get(gateway, path, await add_key(gw_rt, who)).status_code == 200
