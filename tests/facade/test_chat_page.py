"""The chat page in a real headless Chromium, against a facade and a scripted runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browsers import open_page

from .conftest import RunningFacade
from .harness import HELLO_CHUNKS, SAY, RuntimeDouble

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


async def test_an_empty_conversation_shows_a_hint_until_the_first_message(
    facade: RunningFacade, page
) -> None:
    """A newcomer sees what to do; the hint gives way to the conversation."""
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    hint = page.locator("#empty-state")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("Send a message to start a conversation with test-agent")

    await page.fill("#input", "hello agent")
    await page.press("#input", "Enter")
    await expect(page.locator(".message.assistant").last).to_have_attribute("data-state", "done")
    await expect(hint).to_be_hidden()

    await page.click("#settings summary")
    await page.click("#new-session")
    await expect(hint).to_be_visible()


MARKDOWN_REPLY = """# Steps

Run **this** with `python`:

```python
print("hi")
```

- one
- two

| a | b |
|---|---|
| 1 | 2 |
"""


async def test_a_markdown_reply_renders_as_headings_code_blocks_lists_and_tables(
    facade: RunningFacade, page
) -> None:
    """The page's structure, not its pixels: each Markdown block becomes its element.

    The reply arrives in 5-character chunks, so the code fence is open for a
    while mid-stream; the finished reply is what counts.
    """
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.fill("#input", SAY + MARKDOWN_REPLY)
    await page.press("#input", "Enter")

    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    content = reply.locator(".content")
    await expect(content).to_match_aria_snapshot(
        """
        - heading "Steps" [level=1]
        - paragraph:
          - strong: this
          - code: python
        - code: print("hi")
        - list:
          - listitem: one
          - listitem: two
        - table:
          - rowgroup:
            - row "a b"
          - rowgroup:
            - row "1 2"
        """
    )
    code = content.locator("pre > code")
    await expect(code).to_have_class("language-python")
    await expect(code).to_have_text('print("hi")\n')
    await expect(reply.locator(".usage")).to_have_text("7 in · 3 out tokens · $0.002000 · stop")
    # The user's own message is shown as typed, not as Markdown.
    await expect(page.locator(".message.user").last).to_contain_text("# Steps")


HOSTILE_REPLY = (
    "<script>window.pwned = 'script'</script>"
    "<img src=\"missing.png\" onerror=\"window.pwned = 'onerror'\">"
    "<svg><g onload=\"window.pwned = 'svg'\"></g></svg>"
    "<iframe src=\"javascript:parent.pwned = 'iframe'\"></iframe>"
    "[click me](javascript:window.pwned='link') "
    "<a href=\"https://example.invalid/\" onclick=\"window.pwned = 'onclick'\">a link</a>"
    "<form action=\"https://example.invalid/\"><button>Sign in again</button><textarea></textarea></form>"
    "<style>body { display: none }</style>"
)


async def test_script_in_a_reply_is_removed_before_it_reaches_the_page(
    facade: RunningFacade, page
) -> None:
    """A model's reply is untrusted HTML: no script element, handler or javascript: URL survives.

    The Content-Security-Policy would block most of these too; the page is
    checked not to have needed it (no violation is reported), so this fails
    if the sanitising ever stops.
    """
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await page.evaluate(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation', (e) => window.violations.push([e.violatedDirective, e.sample, e.sourceFile, e.lineNumber, e.blockedURI]))"
    )
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.fill("#input", SAY + HOSTILE_REPLY)
    await page.press("#input", "Enter")
    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    await page.wait_for_function("() => [...document.images].every((image) => image.complete)")

    await reply.get_by_text("click me").click()
    assert await page.evaluate("window.pwned") is None
    # DOMPurify's inert parse of the reply meets the handlers too (and the policy blocks them
    # there); what must never happen is the page itself trying to run one.
    violations = await page.evaluate("window.violations")
    assert [v for v in violations if not v[2].endswith("/static/vendor/purify.min.js")] == []
    assert await reply.locator("script, iframe, form, button, textarea, style").count() == 0
    handlers = await reply.evaluate(
        "(node) => [...node.querySelectorAll('*')].flatMap((element) =>"
        " [...element.attributes].filter((a) => a.name.startsWith('on') || /javascript:/i.test(a.value))"
        ".map((a) => element.tagName + ' ' + a.name))"
    )
    assert handlers == []
    await expect(reply.locator("a", has_text="a link")).to_have_attribute("rel", "noopener noreferrer")


async def test_usage_shows_no_cost_when_the_model_is_free(facade: RunningFacade, page) -> None:
    """The embedded model and unpriced Providers cost nothing: no "$0.000000" on every reply."""
    from playwright.async_api import expect

    await page.goto(facade.url + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.fill("#input", "free please")
    await page.press("#input", "Enter")
    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    await expect(reply.locator(".usage")).to_have_text("7 in · 3 out tokens · stop")
