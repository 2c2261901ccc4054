"""Org settings (member reads, admin merges, strict validation), billing (admin only), the typed
`org_settings` helper, and the OpenRouter-compatible /organization endpoints checked with the SDK's
own models."""

from __future__ import annotations

import httpx
import pytest
from openrouter import components, operations
from sqlalchemy import select
from tests.support.orgs import assert_envelope, create_org, join, org_row, recording_mailer
from tests.support.sdk import openrouter

from teamrouter.domain.actor import Actor
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.keys import service as keys
from teamrouter.domain.orgs.settings import OrgSettings, org_settings
from teamrouter.domain.roles import Role
from teamrouter.gateway.catalog import parse_catalog
from teamrouter.gateway.routing import OrgPolicy, route
from teamrouter.gateway.setup import CATALOG_KEY

DEFAULTS = {
    "provider": {"order": [], "only": None, "ignore": [], "sort": None, "allow_fallbacks": True},
    "privacy": {"data_collection": "allow", "zdr_only": False},
    "activity_visibility": "all",
    "member_exit_keys": "disable",
    "filtered_model_catalog": False,
}
BILLING_DEFAULTS = {
    "billing_email": None,
    "contacts": [],
    "invoicing": {"company_name": None, "address": None, "tax_id": None},
}


# Settings name providers the catalog must list (by slug or display name).
CATALOG = """
[[providers]]
slug = "acme"
kind = "openai"
base_url = "http://acme.invalid/v1"

[[providers]]
slug = "demo"
name = "teamrouter demo"
kind = "demo"
base_url = "http://demo.invalid"

[[providers]]
slug = "slowco"
kind = "openai"
base_url = "http://slowco.invalid/v1"

[[models]]
id = "demo/echo"
context_length = 4096
[[models.endpoints]]
provider = "demo"
prompt_price = "0"
completion_price = "0"
"""


@pytest.fixture
async def team(make_person, rt):
    recording_mailer(rt)
    rt.extras[CATALOG_KEY] = parse_catalog(CATALOG, env={})
    admin = await make_person(name="Ada Lovelace")
    member = await make_person(name="Bob")
    org = await create_org(admin)
    await join(rt, admin, member, org)
    return admin, member, org


async def settings_audits(rt) -> int:
    async with rt.db.read() as s:
        return len(
            (
                await s.scalars(
                    select(AuditEvent.id).where(
                        AuditEvent.action.in_(["organization.settings_update", "organization.billing_update"])
                    )
                )
            ).all()
        )


async def test_settings_defaults_and_partial_merges(team, rt):
    admin, member, org = team
    for person in (admin, member):
        r = await person.client.get(f"/api/v1/organizations/{org}/settings")
        assert r.status_code == 200 and r.json()["data"] == DEFAULTS

    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"provider": {"sort": "price"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["provider"] == {**DEFAULTS["provider"], "sort": "price"}
    r = await admin.call(
        "PATCH",
        f"/organizations/{org}/settings",
        json={
            "privacy": {"zdr_only": True},
            "provider": {"order": ["acme", " Teamrouter Demo "], "ignore": ["slowco"], "only": None},
            "activity_visibility": "own",
        },
    )
    data = r.json()["data"]
    assert data["provider"] == {
        "order": ["acme", "demo"],  # stored as the catalog's slugs
        "only": None,  # null: no allow-list
        "ignore": ["slowco"],
        "sort": "price",  # kept from the first PATCH
        "allow_fallbacks": True,
    }
    assert data["privacy"] == {"data_collection": "allow", "zdr_only": True}
    assert data["activity_visibility"] == "own" and data["member_exit_keys"] == "disable"
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"provider": {"sort": None}})
    assert r.json()["data"]["provider"]["sort"] is None
    assert (await member.client.get(f"/api/v1/organizations/{org}/settings")).json()["data"] == r.json()["data"]

    # The typed helper the gateway reads.
    typed = org_settings(await org_row(rt, org))
    assert isinstance(typed, OrgSettings)
    assert typed.provider.order == ["acme", "demo"] and typed.privacy.zdr_only is True
    assert typed.activity_visibility == "own"

    async with rt.db.read() as s:
        events = (
            await s.scalars(
                # Ids grow with time; without an order PostgreSQL may return updated rows in any order.
                select(AuditEvent).where(AuditEvent.action == "organization.settings_update").order_by(AuditEvent.id)
            )
        ).all()
    assert len(events) == 3
    assert events[0].before == DEFAULTS and events[0].after["provider"]["sort"] == "price"
    assert events[0].actor_user_id == admin.id and events[0].organization_id == org


BAD_SETTINGS = (
    ({}, ["nothing to change"]),
    ({"colour": "red"}, ["colour", "unknown field"]),
    ({"provider": {"fastest": True}}, ["provider.fastest", "unknown field"]),
    ({"privacy": {"zdr": True}}, ["privacy.zdr", "unknown field"]),
    ({"provider": {"sort": "cheapest"}}, ["provider.sort"]),
    ({"provider": {"order": [1, 2]}}, ["provider.order"]),
    ({"provider": {"order": "acme"}}, ["provider.order"]),
    ({"provider": {"order": None}}, ["provider.order"]),
    ({"provider": {"only": ["x" * 101]}}, ["provider.only"]),
    ({"provider": {"ignore": [""]}}, ["provider.ignore"]),
    ({"provider": {"ignore": [f"p{i}" for i in range(51)]}}, ["provider.ignore"]),
    ({"provider": {"only": ["nosuch"]}}, ["provider.only", "unknown provider 'nosuch'", "acme, demo, slowco"]),
    ({"provider": {"order": ["acme", "Nope"]}}, ["provider.order", "unknown provider 'Nope'"]),
    ({"provider": {"ignore": ["slow co"]}}, ["provider.ignore", "unknown provider 'slow co'"]),
    ({"provider": {"allow_fallbacks": "yes"}}, ["provider.allow_fallbacks"]),
    ({"provider": {"allow_fallbacks": None}}, ["provider.allow_fallbacks"]),
    ({"privacy": {"data_collection": "sometimes"}}, ["privacy.data_collection"]),
    ({"privacy": {"zdr_only": 1}}, ["privacy.zdr_only"]),
    ({"activity_visibility": "mine"}, ["activity_visibility"]),
    ({"activity_visibility": None}, ["activity_visibility"]),
    ({"member_exit_keys": "delete"}, ["member_exit_keys"]),
    ({"provider": None}, ["provider"]),
    ({"organization_id": "org_x"}, ["organization_id", "unknown field"]),
)


async def test_bad_settings_change_nothing(team, rt):
    admin, _, org = team
    for body, words in BAD_SETTINGS:
        assert_envelope(await admin.call("PATCH", f"/organizations/{org}/settings", json=body), 400, *words)
    assert (await admin.client.get(f"/api/v1/organizations/{org}/settings")).json()["data"] == DEFAULTS
    assert await settings_audits(rt) == 0


async def test_provider_names_are_stored_as_the_catalogs_slugs(team, rt):
    # Display names and any case are accepted, as the gateway matches them; GET shows the slug.
    admin, member, org = team
    sent = {"order": ["Teamrouter Demo", "ACME"], "only": ["teamrouter demo", "Acme"], "ignore": ["SlowCo"]}
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"provider": sent})
    assert r.status_code == 200, r.text
    canonical = {"order": ["demo", "acme"], "only": ["demo", "acme"], "ignore": ["slowco"]}
    assert {k: r.json()["data"]["provider"][k] for k in canonical} == canonical
    shown = (await member.client.get(f"/api/v1/organizations/{org}/settings")).json()["data"]["provider"]
    assert {k: shown[k] for k in canonical} == canonical
    stored = (await org_row(rt, org)).settings
    assert {k: stored["provider"][k] for k in canonical} == canonical
    # The gateway reads the stored slugs as it read the names typed.
    catalog = rt.extras[CATALOG_KEY]
    as_typed = route(catalog, model="demo/echo", org=OrgPolicy.from_settings({"provider": sent}))
    assert route(catalog, model="demo/echo", org=OrgPolicy.from_settings(stored)) == as_typed


CONTRADICTIONS = (
    # A provider allowed (or preferred) and ignored at once: every org key would get 503s.
    (
        {"only": ["demo"], "ignore": ["demo"]},
        "provider.ignore",
        ["'demo' is in both provider.only and provider.ignore"],
    ),
    ({"only": ["Teamrouter Demo"], "ignore": ["DEMO"]}, "provider.ignore", ["'demo'", "provider.only"]),
    ({"order": ["acme", "demo"], "ignore": ["acme"]}, "provider.ignore", ["'acme'", "provider.order"]),
    ({"order": ["acme", "demo"], "only": ["demo"]}, "provider.only", ["'acme' is in provider.order but not in"]),
    # An empty allow-list allows nothing (null is "no allow-list").
    ({"only": []}, "provider.only", ["must not be empty", "allow no provider"]),
    # A provider twice, under one name or two.
    ({"order": ["demo", "demo"]}, "provider.order", ["'demo' is listed twice"]),
    ({"order": ["demo", "acme", "Teamrouter Demo"]}, "provider.order", ["'demo' and 'Teamrouter Demo' are both"]),
    ({"ignore": ["slowco", "SLOWCO"]}, "provider.ignore", ["are both 'slowco'"]),
    ({"only": ["demo", "acme", "Demo"]}, "provider.only", ["are both 'demo'"]),
    # Lists that leave no provider able to serve any model of the catalog (only "demo" serves one).
    ({"only": ["acme", "slowco"]}, "provider.only", ["leaves no provider", "allowed providers (only)"]),
    ({"ignore": ["demo"]}, "provider.ignore", ["leaves no provider", "ignored providers"]),
    ({"order": ["acme"], "allow_fallbacks": False}, "provider.order", ["leaves no provider", "allow_fallbacks"]),
)


@pytest.mark.parametrize(("provider", "field", "words"), CONTRADICTIONS)
async def test_provider_settings_that_contradict_themselves_or_leave_no_provider_are_refused(
    team, rt, provider, field, words
):
    admin, _, org = team
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"provider": provider})
    error = assert_envelope(r, 400, field, *words)
    assert error["metadata"]["field"] == field
    assert (await org_row(rt, org)).settings == {} and await settings_audits(rt) == 0


async def test_provider_settings_are_checked_together_with_what_is_stored(team, rt):
    admin, _, org = team

    async def patch(provider: dict) -> httpx.Response:
        return await admin.call("PATCH", f"/organizations/{org}/settings", json={"provider": provider})

    assert (await patch({"only": ["demo"]})).status_code == 200
    assert_envelope(await patch({"ignore": ["demo"]}), 400, "provider.ignore", "'demo' is in both provider.only")
    assert_envelope(await patch({"order": ["acme"]}), 400, "provider.order", "not in provider.only")
    r = await patch({"only": None, "order": ["acme"]})  # null removes the allow-list
    assert r.status_code == 200 and r.json()["data"]["provider"]["only"] is None
    # Without fallbacks, the order alone is allowed: "acme" serves no model.
    error = assert_envelope(await patch({"allow_fallbacks": False}), 400, "provider.allow_fallbacks", "leaves no")
    assert error["metadata"]["field"] == "provider.allow_fallbacks"
    assert (await patch({"order": ["demo"], "allow_fallbacks": False})).status_code == 200
    assert org_settings(await org_row(rt, org)).provider.model_dump() == {
        "order": ["demo"], "only": None, "ignore": [], "sort": None, "allow_fallbacks": False
    }  # fmt: skip


ZDR_CATALOG = """
[[providers]]
slug = "safe"
kind = "demo"
zdr = true
data_collection = "deny"

[[providers]]
slug = "leaky"
name = "Leaky AI"
kind = "demo"

[[models]]
id = "demo/echo"
context_length = 4096
[[models.endpoints]]
provider = "safe"
prompt_price = "0"
completion_price = "0"
[[models.endpoints]]
provider = "leaky"
prompt_price = "0"
completion_price = "0"
"""


async def test_provider_lists_must_leave_a_provider_the_privacy_settings_allow(team, rt):
    admin, _, org = team
    rt.extras[CATALOG_KEY] = parse_catalog(ZDR_CATALOG, env={})

    async def patch(body: dict) -> httpx.Response:
        return await admin.call("PATCH", f"/organizations/{org}/settings", json=body)

    assert (await patch({"privacy": {"zdr_only": True}})).status_code == 200
    error = assert_envelope(await patch({"provider": {"only": ["Leaky AI"]}}), 400, "provider.only", "zdr_only = true")
    assert error["metadata"]["field"] == "provider.only"
    assert (await patch({"provider": {"only": ["leaky", "safe"]}})).status_code == 200
    # A privacy setting is never refused for leaving nothing: refusing `zdr_only` or "deny" would keep
    # the org's data going to providers it means to rule out. Its requests get a 503 naming it.
    assert (await patch({"privacy": {"zdr_only": False}, "provider": {"only": ["leaky"]}})).status_code == 200
    r = await patch({"privacy": {"data_collection": "deny"}})
    assert r.status_code == 200 and r.json()["data"]["privacy"]["data_collection"] == "deny"
    # Settings that already leave nothing so do not block a change that is not what leaves nothing:
    # refused was a change of allow_fallbacks, naming provider.only, which it had not sent.
    assert (await patch({"provider": {"sort": "price"}})).status_code == 200
    assert (await patch({"provider": {"allow_fallbacks": False}})).status_code == 200
    assert (await patch({"provider": {"order": ["leaky"], "allow_fallbacks": True}})).status_code == 200
    assert (await patch({"provider": {"only": None}})).status_code == 200  # mended: "safe" serves
    assert_envelope(await patch({"provider": {"only": ["leaky"]}}), 400, "provider.only", 'data_collection = "deny"')


async def test_members_cannot_change_settings_or_see_billing(team, rt):
    _, member, org = team
    assert_envelope(
        await member.call("PATCH", f"/organizations/{org}/settings", json={"activity_visibility": "own"}), 403
    )
    assert_envelope(await member.client.get(f"/api/v1/organizations/{org}/billing"), 403)
    assert_envelope(
        await member.call("PATCH", f"/organizations/{org}/billing", json={"billing_email": "m@example.com"}), 403
    )
    assert_envelope(
        await member.call("PATCH", "/organization/settings", json={"is_filtered_model_catalog_enabled": True}), 404
    )  # personal context: no org there
    assert (await member.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
    assert_envelope(
        await member.call("PATCH", "/organization/settings", json={"is_filtered_model_catalog_enabled": True}), 403
    )
    row = await org_row(rt, org)
    assert row.settings == {} and row.billing == {}
    assert await settings_audits(rt) == 0


async def test_billing_settings(team, rt):
    admin, _, org = team
    r = await admin.client.get(f"/api/v1/organizations/{org}/billing")
    assert r.status_code == 200 and r.json()["data"] == BILLING_DEFAULTS
    r = await admin.call(
        "PATCH",
        f"/organizations/{org}/billing",
        json={
            "billing_email": "Billing@Example.com",
            "contacts": ["cfo@example.com", {"email": "ap@example.com", "name": "Payables"}],
            # Surrounding whitespace goes, as for names; an address has lines (LF or CRLF).
            "invoicing": {"company_name": " Acme Ltd\n", "address": "1 Road \r\nTown\n"},
        },
    )
    assert r.status_code == 200, r.text
    r = await admin.call("PATCH", f"/organizations/{org}/billing", json={"invoicing": {"tax_id": "GB123"}})
    data = r.json()["data"]
    assert data["billing_email"].lower() == "billing@example.com"
    assert data["contacts"] == [
        {"email": "cfo@example.com", "name": None},
        {"email": "ap@example.com", "name": "Payables"},
    ]
    assert data["invoicing"] == {"company_name": "Acme Ltd", "address": "1 Road\nTown", "tax_id": "GB123"}
    assert (await admin.client.get(f"/api/v1/organizations/{org}/billing")).json()["data"] == data
    # The length is the stored text's: surrounding whitespace is gone before it is measured.
    r = await admin.call("PATCH", f"/organizations/{org}/billing", json={"invoicing": {"tax_id": " " * 10 + "X" * 64}})
    assert r.status_code == 200 and r.json()["data"]["invoicing"]["tax_id"] == "X" * 64, r.text
    # Text that shows nothing is none: a Hangul filler for a company name, spaces for an address.
    r = await admin.call(
        "PATCH", f"/organizations/{org}/billing", json={"invoicing": {"company_name": "\u3164", "address": "  "}}
    )
    assert r.status_code == 200 and r.json()["data"]["invoicing"]["company_name"] is None, r.text
    assert r.json()["data"]["invoicing"]["address"] is None
    assert await settings_audits(rt) == 4


BAD_BILLING = (
    ({}, ["nothing to change"]),
    ({"billing_email": "nope"}, ["billing_email"]),
    ({"contacts": ["nope"]}, ["contacts"]),
    ({"contacts": [{"email": "a@example.com", "phone": "1"}]}, ["phone", "unknown field"]),
    ({"invoicing": {"vat": "x"}}, ["invoicing.vat", "unknown field"]),
    ({"invoicing": {"address": "x" * 1001}}, ["invoicing.address"]),
    ({"contacts": [f"c{i}@example.com" for i in range(21)]}, ["contacts"]),
    ({"balance": 100}, ["balance", "unknown field"]),
    # Billing text is written onto invoices and into mail: one line of visible text, as names.
    ({"invoicing": {"company_name": "Acme\nLtd"}}, ["invoicing.company_name", "line breaks"]),
    ({"invoicing": {"tax_id": "GB\u202e123"}}, ["invoicing.tax_id", "direction"]),
    ({"invoicing": {"address": "1 Road\nTown\x00"}}, ["invoicing.address", "control"]),
    ({"invoicing": {"address": "1 Road\x0bTown"}}, ["invoicing.address", "line breaks"]),
    ({"invoicing": {"address": "1 Road\u2028Town"}}, ["invoicing.address", "line breaks"]),
    ({"invoicing": {"address": "1 Road\rTown"}}, ["invoicing.address", "line breaks"]),
    ({"contacts": [{"email": "a@example.com", "name": "A\rB"}]}, ["contacts", "line breaks"]),
)


async def test_bad_billing_changes_nothing(team, rt):
    admin, _, org = team
    for body, words in BAD_BILLING:
        assert_envelope(await admin.call("PATCH", f"/organizations/{org}/billing", json=body), 400, *words)
    assert (await org_row(rt, org)).billing == {}


async def test_openrouter_members_and_settings_match_the_sdk(team, rt, make_person):
    admin, member, org = team
    assert (await admin.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200

    r = await admin.client.get("/api/v1/organization/members", params={"offset": 0, "limit": 50})
    assert r.status_code == 200, r.text
    body = operations.ListOrganizationMembersResponseBody.model_validate(r.json())
    assert body.total_count == 2
    assert [(m.id, m.role, m.first_name, m.last_name) for m in body.data] == [
        (admin.id, "org:admin", "Ada", "Lovelace"),
        (member.id, "org:member", "Bob", None),
    ]
    page = (await admin.client.get("/api/v1/organization/members", params={"offset": 1, "limit": 1})).json()
    assert [m["id"] for m in page["data"]] == [member.id] and page["total_count"] == 2
    assert_envelope(await admin.client.get("/api/v1/organization/members", params={"limit": 0}), 400, "limit")
    assert_envelope(await admin.client.get("/api/v1/organization/members", params={"offset": -1}), 400, "offset")

    r = await admin.client.get("/api/v1/organization/settings")
    got = operations.GetOrganizationSettingsResponse.model_validate(r.json())
    assert got.data.id == org and got.data.is_filtered_model_catalog_enabled is False
    r = await admin.call("PATCH", "/organization/settings", json={"is_filtered_model_catalog_enabled": True})
    assert r.status_code == 200, r.text
    updated = operations.UpdateOrganizationSettingsResponse.model_validate(r.json())
    assert isinstance(updated.data, components.OrganizationSettings)
    assert updated.data.is_filtered_model_catalog_enabled is True
    assert org_settings(await org_row(rt, org)).filtered_model_catalog is True
    assert (await admin.client.get(f"/api/v1/organizations/{org}/settings")).json()["data"][
        "filtered_model_catalog"
    ] is True

    for bad, words in (
        ({}, ["is_filtered_model_catalog_enabled", "required"]),
        ({"is_filtered_model_catalog_enabled": "yes"}, ["is_filtered_model_catalog_enabled"]),
        ({"is_filtered_model_catalog_enabled": False, "id": "org_x"}, ["id", "unknown field"]),
    ):
        assert_envelope(await admin.call("PATCH", "/organization/settings", json=bad), 400, *words)
    assert org_settings(await org_row(rt, org)).filtered_model_catalog is True

    # Personal context: no organization to talk about.
    loner = await make_person()
    error = assert_envelope(await loner.client.get("/api/v1/organization/members"), 404, "switch to an organization")
    assert error["metadata"]["code"] == "no_organization_context"
    assert_envelope(await loner.client.get("/api/v1/organization/settings"), 404)
    assert_envelope(await loner.client.get("/api/v1/organization/members", headers={"cookie": ""}), 401)


async def test_official_sdk_with_a_management_key(team, rt, app):
    """The `openrouter` SDK itself, with a management key, in process; a removed creator's key stops."""
    admin, member, org = team
    r = await admin.call("PATCH", f"/organizations/{org}/members/{member.id}", json={"role": "admin"})
    assert r.status_code == 200
    as_member = Actor(user_id=member.id, email_verified=True, organization_id=org, role=Role.ADMIN)
    created = await keys.create_key(rt, actor=as_member, name="ci", management=True)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        sdk = openrouter(created.plaintext, "http://testserver", async_client=http)
        page = await sdk.organization.list_members_async()
        assert page.result.total_count == 2
        assert {(m.email, m.role) for m in page.result.data} == {
            (admin.email, "org:admin"),
            (member.email, "org:admin"),
        }
        settings = await sdk.organization.update_settings_async(is_filtered_model_catalog_enabled=True)
        assert settings.data.id == org and settings.data.is_filtered_model_catalog_enabled is True

        assert (await admin.call("DELETE", f"/organizations/{org}/members/{member.id}")).status_code == 204
        r = await http.get("/api/v1/organization/members", headers={"Authorization": f"Bearer {created.plaintext}"})
        assert r.status_code == 401, r.text
