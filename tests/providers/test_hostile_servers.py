"""A model's server that never ends what it sends, against each vendor adapter.

Who deploys an agent chooses its model's server, but a self-hosted one may
loop past ``max_tokens``, and a broken proxy may never end an event. The
SDKs keep an event whole until it ends and the adapters keep a tool call's
arguments until the call ends, so either grew the runtime until the turn's
timeout. Each case must fail the call with ``ProviderError`` and close the
response (the server sees its client go).
"""

from __future__ import annotations

import asyncio

import pytest

from omnia.config import ProviderConfig
from omnia.providers._retrying import RetryPolicy
from omnia.providers.base import MAX_EVENT_BYTES, ChatRequest, Message, ProviderError
from omnia.providers.claude import ClaudeProvider
from omnia.providers.openai import OpenAIProvider

from . import anthropic_wire, openai_wire

ONCE = RetryPolicy(max_retries=0)
REPLY_BOUND = 200_000
REQUEST = ChatRequest(messages=(Message("user", "Search."),), max_reply_chars=REPLY_BOUND)


def _openai(api):
    config = ProviderConfig(type="openai", model="gpt-test", base_url=f"{api.base_url}/v1")
    return OpenAIProvider.from_config(config, api_key="sk-test", retry=ONCE)


def _claude(api):
    config = ProviderConfig(type="claude", model="claude-test", base_url=api.base_url)
    return ClaudeProvider.from_config(config, api_key="sk-ant-test", retry=ONCE)


# Each vendor: its scripted server's fixture, its adapter, its wire format.
VENDORS = [
    pytest.param(("openai_api", _openai, openai_wire), id="openai"),
    pytest.param(("anthropic_api", _claude, anthropic_wire), id="claude"),
]


async def _fails(request, vendor, reply) -> tuple[ProviderError, object]:
    fixture, build, _ = vendor
    api = request.getfixturevalue(fixture)
    api.script(reply)
    provider = build(api)
    try:
        with pytest.raises(ProviderError) as caught:
            async for _ in provider.stream(REQUEST):
                pass
    finally:
        await provider.aclose()
    return caught.value, api


@pytest.mark.parametrize("vendor", VENDORS)
async def test_tool_arguments_that_never_end_fail_at_the_reply_bound(request, vendor):
    error, api = await _fails(request, vendor, vendor[2].endless_tool_call())
    assert f"past {REPLY_BOUND} characters" in error.message and not error.retryable
    assert await asyncio.to_thread(api.abandoned.wait, 5)
    assert len(api.seen) == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_an_event_that_never_ends_fails_the_call(request, vendor):
    error, api = await _fails(request, vendor, vendor[2].endless_event())
    assert f"{MAX_EVENT_BYTES} bytes" in error.message and "cannot reach" not in error.message
    assert not error.retryable  # another try would read as much again
    assert await asyncio.to_thread(api.abandoned.wait, 5)
