"""Shared fixtures: a fresh migrated database per test (SQLite or PostgreSQL, by TEAMROUTER_TEST_DB),
a runtime over it, an in-process HTTP client, a real SMTP sink, and signed-in people."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from teamrouter.app import create_app
from teamrouter.config import Settings, load_settings
from teamrouter.domain.accounts.passwords import Passwords
from teamrouter.runtime import Runtime, build_runtime
from tests.support.databases import PostgresFactory, SqliteFactory, backend
from tests.support.smtp import SmtpServer

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that touch a database run again on PostgreSQL (`pytest -m db`).
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "db: uses a database (run on SQLite and on PostgreSQL)")


@pytest.fixture(scope="session")
def db_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteFactory | PostgresFactory]:
    factory: SqliteFactory | PostgresFactory
    factory = PostgresFactory() if backend() == "postgres" else SqliteFactory(tmp_path_factory.mktemp("db"))
    yield factory
    factory.close()


@pytest.fixture
def database_url(db_factory: SqliteFactory | PostgresFactory) -> Iterator[str]:
    url = db_factory.create()
    yield url
    db_factory.release(url)


@pytest.fixture(scope="session")
def passwords() -> Passwords:
    # In-process tests create hundreds of people; production cost (19 MiB, t=2) is pinned by
    # tests/unit/test_passwords.py and used by every real server process the tests start.
    return Passwords(time_cost=1, memory_cost_kib=1024)


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp: SmtpServer) -> Settings:
    return load_settings(
        {},
        env="dev",
        database_url=database_url,
        var_dir=str(tmp_path / "var"),
        secret_key="test-secret-" + "x" * 40,
        smtp_url=smtp.url,
        public_url="http://testserver",
    )


@pytest.fixture
async def rt(settings: Settings, passwords: Passwords) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings, passwords=passwords)
    yield runtime
    await runtime.close()


@pytest.fixture
async def app(rt: Runtime) -> Any:
    return create_app(rt)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@dataclass
class Person:
    """A signed-in person with their own cookie jar; `call` adds the CSRF header."""

    id: str
    email: str
    client: httpx.AsyncClient
    csrf: str

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return await self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)


@pytest.fixture
async def make_person(app: Any, rt: Runtime) -> AsyncIterator[Any]:
    from teamrouter.domain.accounts import service as accounts

    clients: list[httpx.AsyncClient] = []
    counter = iter(range(1, 10_000))

    async def make(email: str | None = None, *, verified: bool = True, staff: bool = False, name: str = "") -> Person:
        email = email or f"person{next(counter)}@example.com"
        user = await accounts.create_user(rt, email=email, password=PASSWORD, name=name, verified=verified, staff=staff)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append(c)
        response = await c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return Person(id=user.id, email=email, client=c, csrf=response.json()["data"]["csrf_token"])

    yield make
    for c in clients:
        await c.aclose()
