"""Instants at the edges of the calendar and offsets past any integer column (TESTPLAN D35): a 400 in
the envelope naming the field, never a 500, and nothing changed.

`0001-01-01T00:00:00+01:00` is 31 December of year 0 in UTC and `9999-12-31T23:59:59-01:00` is in
year 10000: both parse, but neither has a UTC datetime. Offsets of 2**63 do not fit a SQLite INTEGER.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from tests.support.keys import add_member, enter, key_audit, key_count, make_org, new_key, with_key

pytestmark = pytest.mark.usefixtures("database_url")

TOO_EARLY = "0001-01-01T00:00:00+01:00"
TOO_LATE = "9999-12-31T23:59:59-01:00"
HUGE = str(2**63)


def assert_names_field(response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == 400
    assert error["metadata"]["field"] == field, error
    assert field in error["message"], error


def cursor_of(when: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([when, "gen-x"]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("when", [TOO_EARLY, TOO_LATE])
async def test_key_expiry_beyond_the_calendar(make_person, rt, when):
    ada = await make_person()
    assert_names_field(await ada.call("POST", "/keys", json={"name": "x", "expires_at": when}), "expires_at")
    assert await key_count(rt) == 0
    assert await key_audit(rt) == []


@pytest.mark.parametrize("path", ["/activity/generations", "/activity/export.csv"])
@pytest.mark.parametrize(("field", "when"), [("since", TOO_EARLY), ("until", TOO_LATE), ("since", TOO_LATE)])
async def test_activity_range_beyond_the_calendar(make_person, path, field, when):
    ada = await make_person()
    assert_names_field(await ada.call("GET", f"{path}?{field}={quote(when)}"), field)


@pytest.mark.parametrize("when", [TOO_EARLY, TOO_LATE])
async def test_feed_cursor_beyond_the_calendar(make_person, when):
    ada = await make_person()
    assert_names_field(await ada.call("GET", "/activity/generations", params={"cursor": cursor_of(when)}), "cursor")


@pytest.mark.parametrize(
    ("time_range", "field"),
    [
        ({"start": "9999-12-31T00:00:00Z", "end": "9999-12-31T23:59:59Z"}, "time_range.end"),
        ({"start": TOO_EARLY, "end": "0001-01-02T00:00:00Z"}, "time_range.start"),
        ({"start": "9999-12-30T00:00:00Z", "end": TOO_LATE}, "time_range.end"),
    ],
)
async def test_analytics_range_beyond_the_calendar(make_person, time_range, field):
    ada = await make_person()
    body = {"metrics": ["total_usage"], "time_range": time_range}
    assert_names_field(await ada.call("POST", "/analytics/query", json=body), field)


async def test_analytics_range_at_the_calendar_edges_still_answers(make_person):
    ada = await make_person()
    for time_range in (
        {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"},
        {"start": "9999-12-30T00:00:00Z", "end": "9999-12-31T22:30:00Z"},
    ):
        r = await ada.call("POST", "/analytics/query", json={"metrics": ["total_usage"], "time_range": time_range})
        assert r.status_code == 200, r.text


async def test_huge_offsets_are_400(make_person, client, rt):
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, member)
    await enter(admin, org)
    _, inference = await new_key(admin, name="inference")
    for path in ("/organization/members", f"/organizations/{org}/members", "/keys"):
        for offset in (HUGE, "1000001"):
            assert_names_field(await admin.call("GET", path, params={"offset": offset}), "offset")
    assert_names_field(await with_key(client, inference, "GET", "/models", params={"offset": HUGE}), "offset")
    # The bound is far above any real page: an offset past the end is still an empty page.
    r = await admin.call("GET", "/organization/members", params={"offset": 1_000_000})
    assert r.status_code == 200 and r.json()["data"] == [], r.text
    r = await with_key(client, inference, "GET", "/models", params={"offset": 1_000_000})
    assert r.status_code == 200 and r.json()["data"] == [], r.text
