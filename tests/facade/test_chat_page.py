"""The chat page in a real headless Chromium, against a facade and a scripted runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browsers import open_page

from .conftest import RunningFacade
from .harness import HELLO_CHUNKS, RuntimeDouble

pytestmark = pytest.mark.browser

@pytest.fixture
async def page() -> AsyncIterator[object]:
    async with open_page() as opened:
        yield opened


async def test_a_typed_message_streams_a_reply_into_the_page(
    facade: RunningFacade, page
) -> None:
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#agent")).to_have_text("test-agent")

    await page.fill("#input", "hello agent")
    await page.press("#input", "Enter")

    await expect(page.locator(".message.user")).to_have_text("hello agent")
    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    await expect(reply).to_contain_text("".join(HELLO_CHUNKS))
    await expect(reply.locator(".usage")).to_contain_text("7 in · 3 out tokens")
    assert "session_id=" in page.url


async def test_the_page_shows_errors_and_resumes_its_session(
    facade: RunningFacade, runtime: RuntimeDouble, page
) -> None:
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.fill("#input", "please fail")
    await page.click("#send")
    await expect(page.locator(".error")).to_contain_text("PROVIDER_ERROR")

    session_id = await page.locator("#session-label").text_content()
    await page.reload()
    await expect(page.locator(".notice")).to_contain_text("resumed session")
    assert await page.locator("#session-label").text_content() == session_id
    assert runtime.servicer.opens[-1].session_id == session_id
