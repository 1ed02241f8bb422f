"""The chat page against a real agent: `omnia run` on the embedded model, in Chromium."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browsers import open_page

from .processes import free_port, readyz, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quickstart(spawned):
    port = free_port()
    spawned(
        [sys.executable, "-m", "omnia", "run", str(REPO / "examples/quickstart"), "--port", str(port)],
        stop_signal=signal.SIGINT,
        stop_timeout=60,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: readyz(url) == 200, timeout=120, what="omnia run")
    return url


async def test_the_page_streams_a_real_generated_reply_with_usage(quickstart):
    from playwright.async_api import expect

    async with open_page(timeout_ms=60_000) as page:
        await page.goto(quickstart + "/")
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        await expect(page.locator("#agent")).to_have_text("quickstart")
        await page.fill("#input", "Name one color of the rainbow.")
        await page.press("#input", "Enter")
        reply = page.locator(".message.assistant").last
        # A whole reply from the CPU model: expect's own 5 s default is no bound for
        # that on a busy machine, only for the page's reactions.
        await expect(reply).to_have_attribute("data-state", "done", timeout=120_000)
        await expect(reply.locator(".usage")).to_contain_text(re.compile(r"[1-9]\d* in · [1-9]\d* out tokens"))
        usage = await reply.locator(".usage").text_content()
        streamed = (await reply.text_content()).replace(usage, "")
        assert len(streamed.split()) >= 2, streamed
