"""Build the Gateway for a runtime (in the app's lifespan) and tear it down again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select

from teamrouter.config import upstream_credentials
from teamrouter.domain.keys.auth import inference_key
from teamrouter.domain.keys.cache import key_cache
from teamrouter.domain.orgs.models import Organization
from teamrouter.gateway.admission import KeyInfo
from teamrouter.gateway.calls import make_http_session
from teamrouter.gateway.catalog import Catalog, load_catalog
from teamrouter.gateway.core import Gateway
from teamrouter.gateway.routing import OrgPolicy
from teamrouter.gateway.store.base import GatewayStore
from teamrouter.gateway.store.postgres import PostgresStore
from teamrouter.gateway.store.sqlite import SqliteStore
from teamrouter.listeners import ORG_SETTINGS_LISTENERS
from teamrouter.providers.registry import make_adapters
from teamrouter.runtime import Runtime
from teamrouter.storage.cache import TTLCache
from teamrouter.storage.invalidation import Invalidations
from teamrouter.storage.urls import async_url

log = logging.getLogger(__name__)


CATALOG_KEY = "catalog"


def catalog_for(rt: Runtime) -> Catalog:
    """The runtime's catalog, loaded (and validated) once."""
    catalog = rt.extras.get(CATALOG_KEY)
    if not isinstance(catalog, Catalog):
        catalog = load_catalog(rt.settings.catalog, env=upstream_credentials())
        rt.extras[CATALOG_KEY] = catalog
    return catalog


def provider_name(rt: Runtime, slug: str) -> str:
    """A provider's display name, as `/models/.../endpoints` and answers show it; the slug stored
    on activity rows when the catalog no longer lists that provider."""
    provider = catalog_for(rt).provider(slug)
    return provider.name if provider is not None else slug


async def open_store(rt: Runtime) -> GatewayStore:
    url = async_url(rt.settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return SqliteStore(url.database or ":memory:")
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await PostgresStore.connect(plain)


async def build_gateway(rt: Runtime) -> Gateway:
    catalog = catalog_for(rt)
    store = await open_store(rt)
    policies: TTLCache[str, OrgPolicy] = TTLCache(rt.settings.cache_ttl_seconds)
    # Bumped by every invalidation: a read that raced one must not cache what it read (as the key cache).
    epoch = [0]

    def settings_changed(organization_id: str) -> None:
        epoch[0] += 1
        policies.invalidate(organization_id)

    # The orgs service calls these after a settings change commits: this process sees it at once,
    # other processes within the TTL, or at once with Redis (storage.invalidation).
    rt.extras.setdefault(ORG_SETTINGS_LISTENERS, []).append(settings_changed)

    async def resolve_key(token: str) -> KeyInfo:
        return await inference_key(rt, token)

    async def org_policy(organization_id: str) -> OrgPolicy:
        cached = policies.get(organization_id)
        if cached is not None:
            return cached
        read_at = epoch[0]
        async with rt.db.read() as session:
            settings = await session.scalar(select(Organization.settings).where(Organization.id == organization_id))
        policy = OrgPolicy.from_settings(settings or {})
        if read_at == epoch[0]:
            policies.put(organization_id, policy)
        return policy

    gateway = Gateway(
        settings=rt.settings,
        clock=rt.clock,
        catalog=catalog,
        store=store,
        http=make_http_session(connect_timeout=rt.settings.upstream_connect_timeout),
        adapters=make_adapters(),
        resolve_key=resolve_key,
        org_policy=org_policy,
    )
    if rt.settings.redis_url:
        key_cache(rt)  # its listeners registered before the first message can arrive
        gateway.on_close.append(Invalidations.start(rt, rt.settings.redis_url).close)
    return gateway


async def close_gateway(gateway: Gateway) -> None:
    for close in gateway.on_close:
        try:
            await close()
        except Exception:  # the store and the upstream client still close
            log.exception("closing a gateway companion failed")
    await gateway.limiter.close()
    await gateway.http.close()
    await gateway.store.close()


async def sweep_forever(rt: Runtime) -> None:
    """Expire holds whose requests died with their process (TESTPLAN B14, C22)."""
    from teamrouter.domain.credits import holds

    while True:
        await asyncio.sleep(rt.settings.hold_sweep_seconds)
        try:
            expired = await holds.expire_holds(rt)
            if expired:
                log.info("expired %d abandoned holds", expired)
        except Exception:
            log.exception("hold sweeper failed; will retry")


def start_sweeper(rt: Runtime) -> asyncio.Task[Any]:
    return asyncio.create_task(sweep_forever(rt), name="hold-sweeper")


async def stop_sweeper(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
