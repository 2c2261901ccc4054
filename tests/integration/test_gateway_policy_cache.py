"""An admin's provider/privacy change reaches this process's gateway at once (not after the cache TTL)."""

from __future__ import annotations

from tests.support.gateway import funded_person

from teamrouter.domain.actor import Actor
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.settings import SettingsPatch
from teamrouter.domain.roles import Role
from teamrouter.gateway.setup import build_gateway, close_gateway


async def test_settings_change_invalidates_the_cached_org_policy(rt):
    admin = await funded_person(rt, usd="0")
    org = (await orgs.create_organization(rt, actor=admin.actor, name="Team")).org
    admin_actor = Actor(user_id=admin.user_id, email_verified=True, organization_id=org.id, role=Role.ADMIN)
    gateway = await build_gateway(rt)
    try:
        assert (await gateway.org_policy(org.id)).data_collection == "allow"  # now cached
        await orgs.update_settings(
            rt,
            actor=admin_actor,
            organization_id=org.id,
            patch=SettingsPatch.model_validate({"privacy": {"data_collection": "deny"}}),
        )
        assert (await gateway.org_policy(org.id)).data_collection == "deny"
    finally:
        await close_gateway(gateway)
