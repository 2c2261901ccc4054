"""A real browser (Debian's Chromium, driven by Playwright) against a real `teamrouter serve`.

Never a browser download: Playwright launches /usr/bin/chromium. Without it the tests skip, unless
TEAMROUTER_TEST_REQUIRE_BROWSER=1 (CI installs Chromium and sets it), when they fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"
# What this machine's closed network needs: no background calls home, no sandbox as root, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="package")  # closed once these tests are done, not kept through the suite
async def browser() -> AsyncIterator[Any]:
    # The async API: the sync one keeps an event loop running on the main thread, and the
    # PostgreSQL test-database factory (asyncio.run) cannot start inside it.
    reason = _missing()
    if reason:
        if os.environ.get("TEAMROUTER_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) whose console errors and failed loads fail the test:
    a Content-Security-Policy violation shows up there."""
    context = await browser.new_context()
    tab = await context.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        # Chromium logs every failed load as an error, our own 4xx error pages' (by design) and the
        # favicon's (none is served) included: not problems (5xx are caught from the responses
        # below); anything else, a CSP violation first, is.
        url = message.location.get("url", "")
        expected = message.text.startswith("Failed to load resource") and (
            url == tab.url or url.endswith("/favicon.ico")
        )
        if message.type == "error" and not expected:
            problems.append(f"{url}: {message.text}")

    tab.on("console", on_console)
    # The console excuse above covers our own 4xx pages; a 5xx is never expected.
    tab.on(
        "response", lambda response: response.status >= 500 and problems.append(f"{response.url}: {response.status}")
    )
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
    tab.set_default_timeout(10_000)
    yield tab
    await context.close()
    assert problems == []


@pytest.fixture
def server(database_url: str, tmp_path: Path, smtp: Any) -> Iterator[ServerProcess]:
    """`teamrouter serve` whose emails link to itself, as a deployment's public URL would."""
    process = ServerProcess(
        {
            "TEAMROUTER_ENV": "dev",
            "TEAMROUTER_DATABASE_URL": database_url,
            "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
            "TEAMROUTER_SMTP_URL": smtp.url,
        },
        cwd=tmp_path,
    )
    process.env["TEAMROUTER_PUBLIC_URL"] = process.base_url
    process.start()
    yield process
    process.stop()
