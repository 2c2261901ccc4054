"""Names a person gives, over HTTP (the rule: teamrouter.domain.names). Every name field refuses line
breaks, control, bidi and formatting characters with a 400 naming the field, and changes nothing;
an organization name stored before the rule still gets its invitations delivered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, update
from tests.conftest import PASSWORD
from tests.support.keys import key_audit, key_count, key_row, new_key
from tests.support.orgs import create_org
from tests.support.smtp import delivered

from teamrouter.domain.accounts.models import User
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.orgs.models import Invitation, Organization

API = "/api/v1"

# As a JSON client sends them: escaped, so the lone surrogate (not UTF-8) can be sent at all.
BAD_NAMES = {
    "lf": "Line\nBreak",
    "crlf": "Line\r\nBreak",
    "nul": "Nul\x00Byte",
    "tab": "Tab\tbed",
    "rlo": "Acme\u202egnp.exe",
    "lri": "Acme\u2066x\u2069",
    "zwsp": "Zero\u200bwidth",
    "line-separator": "Line\u2028Separator",
    "surrogate": "Lone\ud800",  # refused by the JSON parser already ("not a valid string")
}


async def post_json(person_or_client: Any, method: str, path: str, body: dict[str, Any]) -> Any:
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if hasattr(person_or_client, "csrf"):
        return await person_or_client.call(method, path, content=content, headers=headers)
    return await person_or_client.request(method, f"{API}{path}", content=content, headers=headers)


def assert_refused(response: Any, field: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["metadata"] == {"code": "invalid_field", "field": field}, error
    message: str = error["message"]
    assert message.startswith(f"{field}: "), error
    return message


async def count(rt: Any, model: Any) -> int:
    async with rt.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_every_name_field_refuses_the_character_and_changes_nothing(client, make_person, rt, name):
    ada = await make_person()
    people = await count(rt, User)
    audit_before = await count(rt, AuditEvent)

    # An organization's name.
    message = assert_refused(await post_json(ada, "POST", "/organizations", {"name": name}), "name")
    if "\ud800" not in name:
        assert "must not contain" in message and "U+" in message  # named: it is usually invisible
    assert await count(rt, Organization) == 0

    # A key's name, at creation and renamed.
    assert_refused(await post_json(ada, "POST", "/keys", {"name": name}), "name")
    assert await key_count(rt) == 0
    key, _ = await new_key(ada, name="kept")
    assert_refused(await post_json(ada, "PATCH", f"/keys/{key['hash']}", {"name": name}), "name")
    assert (await key_row(rt, key["hash"])).name == "kept"
    assert [event.action for event in await key_audit(rt)] == ["api_key.create"]

    # A person's display name, at sign-up.
    body = {"email": "named@example.com", "password": PASSWORD, "name": name}
    assert_refused(await post_json(client, "POST", "/auth/signup", body), "name")
    assert await count(rt, User) == people
    assert await count(rt, AuditEvent) == audit_before + 1  # the key made above, nothing else


@pytest.mark.parametrize("email", ["lf@example.com\r\nBcc: x@example.com", "a\u202eb@example.com", "a\x00@example.com"])
async def test_an_invitation_address_with_such_characters_is_refused(make_person, rt, email):
    admin = await make_person()
    org = await create_org(admin)
    r = await post_json(admin, "POST", f"/organizations/{org}/invitations", {"email": email, "role": "member"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["metadata"]["field"] == "email"
    assert await count(rt, Invitation) == 0


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("  Acme\n", "Acme"),  # surrounding whitespace is dropped, line break included
        ("فارسی\u200cزبان", "فارسی\u200cزبان"),  # ZWNJ spells Persian words
        ("\U0001f469\u200d\U0001f4bb devs", "\U0001f469\u200d\U0001f4bb devs"),  # ZWJ joins an emoji
        ("שלום", "שלום"),
    ],
)
async def test_names_in_any_script_are_kept(make_person, sent, stored):
    ada = await make_person()
    r = await post_json(ada, "POST", "/organizations", {"name": sent})
    assert r.status_code == 201, r.text
    assert r.json()["data"]["name"] == stored


@pytest.mark.parametrize("stored", ["Line\nBreak", "Line\r\nBreak"], ids=["lf", "crlf"])
async def test_an_org_name_stored_before_the_rule_still_gets_its_invitations_delivered(make_person, rt, smtp, stored):
    admin = await make_person()
    org = await create_org(admin, name="Placeholder")
    async with rt.db.uow() as uow:  # as a row written before names were checked
        await uow.session.execute(update(Organization).where(Organization.id == org).values(name=stored))

    r = await post_json(admin, "POST", f"/organizations/{org}/invitations", {"email": "lf@example.com"})
    assert r.status_code == 201, r.text

    [message] = await delivered(rt, smtp, "lf@example.com", count=1)
    assert message["Subject"] == "Invitation to join Line Break on teamrouter"
    assert smtp.sink.token_in(message)
    smtp.sink.messages.remove(message)  # the sink is shared by the session: the next case starts clean
