"""Headless Debian Chromium, driven by Playwright, for the gateway's test pages.

Playwright's sync API runs its own event loop between calls, so the browser
lives only as long as one module of these (sync) tests, never across the
asyncio tests of other packages.
"""

import uuid
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.browser.pages import BROWSER_TIMEOUT_MS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Pages talk only to the gateway on 127.0.0.1.
    "--no-proxy-server",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless. Never skipped: its absence fails the run."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page; an uncaught script error fails the test."""
    context = browser.new_context()
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    page = context.new_page()
    script_errors = []
    page.on("pageerror", lambda error: script_errors.append(error))
    yield page
    context.close()
    if script_errors:
        pytest.fail(f"the page raised: {script_errors}")


@pytest.fixture
def unique():
    """Names no other test uses: `unique("alice")` -> "alice-1f3a9c0d"."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
