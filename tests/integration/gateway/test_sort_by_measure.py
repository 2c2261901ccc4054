"""`provider.sort` = "latency" and "throughput" over real HTTP: a gateway process learns each
provider's speed from its own answers and routes by it (one worker, so one process learns)."""

from __future__ import annotations

import httpx
import pytest
from tests.support.gateway import FakeUpstreamProcess, funded_person, start_gateway

pytestmark = pytest.mark.db


async def test_sorting_by_latency_prefers_the_provider_measured_faster(gw_database, gw_rt, tmp_path):
    fake = FakeUpstreamProcess()
    server = start_gateway(tmp_path, gw_database, fake.url, workers=1)
    try:
        # test/chat: "fake" (Fake AI) is the cheaper endpoint, "fakeb" (Fake Backup) the other.
        fake.set_script({"first_byte_delay_ms": 300, "chunks": 3}, model="fake-chat")
        who = await funded_person(gw_rt, usd="1")

        def ask(provider: dict[str, object]) -> httpx.Response:
            body = {"model": "test/chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            return httpx.post(
                f"{server.base_url}/api/v1/chat/completions",
                json={**body, "provider": provider},
                headers={"Authorization": f"Bearer {who.key}"},
                timeout=30,
            )

        assert ask({"sort": "latency"}).json()["provider"] == "Fake AI"  # nothing measured: cheapest
        assert ask({"order": ["fakeb"]}).json()["provider"] == "Fake Backup"
        assert ask({"sort": "latency"}).json()["provider"] == "Fake Backup"  # measured ~300 ms faster
        assert ask({"sort": "throughput"}).json()["provider"] == "Fake Backup"
        assert ask({}).json()["provider"] == "Fake AI"  # the default stays cheapest first
    finally:
        server.stop()
        fake.stop()
