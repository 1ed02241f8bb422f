"""Headless Chromium (Debian's package) driven by Playwright, for page tests.

Playwright's own browser download cannot be used here; the system Chromium
is launched by path with the flags a closed network needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Chromium's path; skips the test (fails it in CI) when Chromium or Playwright is missing."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = "needs Chromium (apt-get install chromium) and the playwright package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.asynccontextmanager
async def open_page(*, timeout_ms: int = 10_000) -> AsyncIterator[object]:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            await browser.close()
