"""One fake upstream process per session and one gateway server process per test module, over a
database of the module's own; every test seeds its own people and keys, and the ledger checker runs
after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import openai
import pytest
from tests.support.credits import check_ledger
from tests.support.gateway import FakeUpstreamProcess, start_gateway
from tests.support.server import ServerProcess

from teamrouter.config import load_settings
from teamrouter.domain.accounts.passwords import Passwords
from teamrouter.runtime import Runtime, build_runtime


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstreamProcess]:
    upstream = FakeUpstreamProcess()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gw_database(db_factory) -> str:
    return db_factory.create()


@pytest.fixture(scope="module")
def gw_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
async def gw_rt(gw_database: str, gw_tmp: Path, passwords: Passwords) -> AsyncIterator[Runtime]:
    settings = load_settings({}, env="dev", database_url=gw_database, var_dir=str(gw_tmp / "rt"), secret_key="t" * 48)
    runtime = build_runtime(settings, passwords=passwords)
    yield runtime
    await runtime.close()


@pytest.fixture(scope="module")
def gateway(gw_database: str, gw_tmp: Path, fake: FakeUpstreamProcess) -> Iterator[ServerProcess]:
    server = start_gateway(gw_tmp, gw_database, fake.url, workers=2)
    yield server
    server.stop()


@pytest.fixture
def sdk(gateway: ServerProcess) -> Iterator[Callable[[str], openai.OpenAI]]:
    """Build official `openai` clients for a key (no retries); all closed after the test."""
    made: list[openai.OpenAI] = []

    def make(key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{gateway.base_url}/api/v1", api_key=key, max_retries=0, timeout=30)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(autouse=True)
async def ledger_stays_consistent(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "gw_rt" in request.fixturenames:
        rt = request.getfixturevalue("gw_rt")
        await check_ledger(rt)
