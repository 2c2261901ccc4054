"""The official `openrouter` SDK, pointed at a real teamrouter server process, manages keys with a
management key: list, create, get, update, delete, and GET /key."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from openrouter import errors
from tests.conftest import PASSWORD
from tests.support.sdk import openrouter
from tests.support.server import ServerProcess


@pytest.fixture
def server(database_url: str, tmp_path) -> Iterator[ServerProcess]:
    env = {
        "TEAMROUTER_ENV": "dev",
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_SECRET_KEY": "sdk-test-secret-" + "k" * 40,
        "TEAMROUTER_PUBLIC_URL": "http://127.0.0.1",
    }
    proc = ServerProcess(env, cwd=tmp_path)
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "teamrouter",
            "users",
            "create",
            "--email",
            "sdk@example.com",
            "--password",
            PASSWORD,
            "--verified",
        ],
        env=proc.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def management_key(base: str) -> str:
    """Sign in over HTTP and create a management key in personal context (SDK create() cannot)."""
    with httpx.Client(base_url=base) as http:
        r = http.post("/api/v1/auth/login", json={"email": "sdk@example.com", "password": PASSWORD})
        assert r.status_code == 200, r.text
        csrf = r.json()["data"]["csrf_token"]
        r = http.post("/api/v1/keys", json={"name": "sdk admin", "management": True}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def test_openrouter_sdk_manages_keys(server: ServerProcess):
    mgmt = management_key(server.base_url)
    sdk = openrouter(mgmt, server.base_url)
    with sdk:
        listed = sdk.api_keys.list().data
        assert [k.name for k in listed] == ["sdk admin"]
        assert listed[0].workspace_id == "default"

        created = sdk.api_keys.create(
            name="ci", limit=5, limit_reset="monthly", expires_at=datetime(2099, 1, 1, tzinfo=UTC)
        )
        assert created.key.startswith("sk-tr-v1-") and len(created.key) == len("sk-tr-v1-") + 64
        h = created.data.hash
        assert created.data.name == "ci" and created.data.limit == 5 and created.data.limit_reset == "monthly"
        assert created.data.limit_remaining == 5 and created.data.usage == 0
        assert created.data.expires_at == datetime(2099, 1, 1, tzinfo=UTC)

        got = sdk.api_keys.get(hash=h).data
        assert got.hash == h and got.label == created.data.label and got.disabled is False

        updated = sdk.api_keys.update(hash=h, name="ci-renamed", disabled=True, limit=None).data
        assert updated.name == "ci-renamed" and updated.disabled is True and updated.limit is None
        assert [k.hash for k in sdk.api_keys.list().data] == [listed[0].hash]
        assert {k.hash for k in sdk.api_keys.list(include_disabled=True).data} == {listed[0].hash, h}

        with pytest.raises(errors.OpenRouterError) as empty:
            sdk.api_keys.update(hash=h)
        assert empty.value.status_code == 400

        deleted = sdk.api_keys.delete(hash=h)
        assert deleted.DELETED is True  # (the SDK only accepts a 200 JSON answer here)
        with pytest.raises(errors.OpenRouterError) as gone:
            sdk.api_keys.get(hash=h)
        assert gone.value.status_code == 404

        # The SDK's current-key model marks rate_limit / is_provisioning_key deprecated.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            current = sdk.api_keys.get_current_key_metadata().data
        assert current.is_management_key is True and current.label == listed[0].label
        assert current.organization_id is None and current.limit is None

        # The new key, used as a management key: refused with OpenRouter's message.
        inference = sdk.api_keys.create(name="inference only")
    with openrouter(inference.key, server.base_url) as as_inference:
        with pytest.raises(errors.OpenRouterError) as refused:
            as_inference.api_keys.list()
        assert refused.value.status_code == 403
        assert "Only management keys can perform this operation" in refused.value.body
