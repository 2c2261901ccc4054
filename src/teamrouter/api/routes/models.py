"""The catalog in OpenRouter's shapes: GET /models, /model/{author}/{slug}, /models/{author}/{slug}/endpoints,
/providers; and GET /models/{author}/{slug} in OpenAI's shape (the `openai` SDK's `models.retrieve`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from teamrouter.api.deps import InferenceKeyDep, Offset, RuntimeDep
from teamrouter.api.policy import Access, access
from teamrouter.errors import NotFound
from teamrouter.gateway.catalog import Endpoint, Model
from teamrouter.gateway.setup import catalog_for
from teamrouter.runtime import Runtime

router = APIRouter(tags=["models"], dependencies=[InferenceKeyDep])

_ARCHITECTURE = {
    "input_modalities": ["text"],
    "output_modalities": ["text"],
    "modality": "text->text",
    "tokenizer": "Other",
    "instruct_type": None,
}
_PARAMETERS = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "n",
    "seed",
    "tools",
    "tool_choice",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "user",
]


def _model_public(model: Model) -> dict[str, Any]:
    cheapest = min(model.endpoints, key=lambda e: (e.prices.sort_key(), e.position))
    return {
        "id": model.id,
        "canonical_slug": model.id,
        "name": model.name,
        "created": model.created,
        "description": model.description,
        "context_length": model.context_length,
        "architecture": _ARCHITECTURE,
        "pricing": cheapest.prices.as_openrouter(),
        "top_provider": {
            "context_length": cheapest.context_length,
            "max_completion_tokens": cheapest.max_completion_tokens,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": _PARAMETERS,
        "default_parameters": None,
        "supported_voices": None,
        "links": {"details": f"/api/v1/models/{model.id}/endpoints"},
    }


def _endpoint_public(endpoint: Endpoint, model: Model) -> dict[str, Any]:
    provider = endpoint.provider
    return {
        "name": f"{provider.name} | {model.id}",
        "model_id": model.id,
        "model_name": model.name,
        "context_length": endpoint.context_length,
        "pricing": endpoint.prices.as_openrouter(),
        "provider_name": provider.name,
        "tag": provider.slug,
        "quantization": endpoint.quantization,
        "max_completion_tokens": endpoint.max_completion_tokens,
        "max_prompt_tokens": None,
        "supported_parameters": _PARAMETERS,
        "status": 0,
        "uptime_last_30m": None,
        "uptime_last_5m": None,
        "uptime_last_1d": None,
        "latency_last_30m": None,
        "throughput_last_30m": None,
        "supports_implicit_caching": False,
        "supports_diarization": False,
        "supports_tool_choice": {"auto": True, "none": True, "required": True, "function": True},
        "native_tools": {},
        "service_tier": None,
        # teamrouter additions: what privacy settings act on.
        "data_collection": provider.data_collection,
        "zdr": provider.zdr,
    }


@router.get("/models", openapi_extra=access(Access.INFERENCE_KEY))
async def list_models(rt: RuntimeDep, offset: Offset = 0, limit: int = Query(500, ge=1, le=1000)) -> dict[str, Any]:
    """Every model in the catalog, with its cheapest endpoint's prices (USD per token, strings)."""
    models = catalog_for(rt).models()
    page = models[offset : offset + limit]
    return {"data": [_model_public(m) for m in page], "links": {"next": None}, "total_count": len(models)}


def _model(rt: Runtime, author: str, slug: str) -> Model:
    model = catalog_for(rt).model(f"{author}/{slug}")
    if model is None:
        raise NotFound(f"Model {author}/{slug} not found", code="model_not_found")
    return model


@router.get("/model/{author}/{slug}", openapi_extra=access(Access.INFERENCE_KEY))
async def get_model(author: str, slug: str, rt: RuntimeDep) -> dict[str, Any]:
    """One model as GET /models lists it (the `openrouter` SDK's `models.get`)."""
    return {"data": _model_public(_model(rt, author, slug))}


@router.get("/models/{author}/{slug}", openapi_extra=access(Access.INFERENCE_KEY))
async def retrieve_model(author: str, slug: str, rt: RuntimeDep) -> dict[str, Any]:
    """One model, unwrapped and with OpenAI's `object` and `owned_by` (OpenAI's GET /models/{model},
    which the `openai` SDK's `models.retrieve("author/slug")` calls), plus OpenRouter's fields."""
    model = _model(rt, author, slug)
    return {"object": "model", "owned_by": model.author, **_model_public(model)}


@router.get("/models/{author}/{slug}/endpoints", openapi_extra=access(Access.INFERENCE_KEY))
async def list_endpoints(author: str, slug: str, rt: RuntimeDep) -> dict[str, Any]:
    """One model and the provider endpoints that serve it."""
    model = _model(rt, author, slug)
    return {
        "data": {
            "id": model.id,
            "name": model.name,
            "created": model.created,
            "description": model.description,
            "architecture": _ARCHITECTURE,
            "endpoints": [_endpoint_public(e, model) for e in model.endpoints],
        }
    }


@router.get("/providers", openapi_extra=access(Access.INFERENCE_KEY))
async def list_providers(rt: RuntimeDep) -> dict[str, Any]:
    """The upstream providers this deployment routes to."""
    return {
        "data": [
            {
                "name": p.name,
                "slug": p.slug,
                "privacy_policy_url": None,
                "data_collection": p.data_collection,
                "zdr": p.zdr,
            }
            for p in catalog_for(rt).providers()
        ]
    }
