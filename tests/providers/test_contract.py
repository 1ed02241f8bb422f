"""The contract every provider keeps, checked against each of them.

The agent loop relies on exactly this: text arrives as deltas, a reply ends
with exactly one ``Finish`` carrying usage, and a stream closed early (a
cancelled turn) is released cleanly and leaves the provider usable.
"""

from __future__ import annotations

import pytest

from omnia.config import MockScript, ProviderConfig, ScriptedReply
from omnia.providers import create_provider
from omnia.providers._retrying import RetryPolicy
from omnia.providers.base import ChatRequest, Finish, Message, Provider, TextDelta
from omnia.providers.claude import ClaudeProvider
from omnia.providers.local import LocalProvider
from omnia.providers.openai import OpenAIProvider

from . import anthropic_wire, openai_wire

REQUEST = ChatRequest(
    messages=(Message("system", "Be brief."), Message("user", "Say hello.")), max_tokens=16, temperature=0.0
)
FAST = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05)


def _mock(request) -> Provider:
    script = MockScript(replies=[ScriptedReply(text="Hello there, friend.", chunk_size=4)])
    return create_provider(ProviderConfig(type="mock", mock=script), env={})


def _openai(request) -> Provider:
    api = request.getfixturevalue("openai_api")
    api.script(*[openai_wire.text("Hello", " there,", " friend.")] * 3)
    config = ProviderConfig(type="openai", model="gpt-test", base_url=f"{api.base_url}/v1")
    return OpenAIProvider.from_config(config, api_key="sk-test", retry=FAST)


def _claude(request) -> Provider:
    api = request.getfixturevalue("anthropic_api")
    api.script(*[anthropic_wire.text("Hello", " there,", " friend.")] * 3)
    config = ProviderConfig(type="claude", model="claude-test", base_url=api.base_url)
    return ClaudeProvider.from_config(config, api_key="sk-ant-test", retry=FAST)


def _local(request) -> Provider:
    return LocalProvider(engine=request.getfixturevalue("local_engine"))


@pytest.fixture(
    params=[
        pytest.param(_mock, id="mock"),
        pytest.param(_openai, id="openai"),
        pytest.param(_claude, id="claude"),
        pytest.param(_local, id="local", marks=pytest.mark.model),
    ]
)
async def provider(request):
    built = request.param(request)
    yield built
    await built.aclose()


async def test_reply_is_text_deltas_then_exactly_one_finish(provider: Provider):
    events = [event async for event in provider.stream(REQUEST)]
    assert isinstance(events[-1], Finish)
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    assert "".join(event.text for event in events[:-1]).strip()
    assert events[-1].reason in ("stop", "length")
    assert events[-1].usage.output_tokens > 0


async def test_closing_a_stream_early_leaves_the_provider_usable(provider: Provider):
    stream = provider.stream(REQUEST)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    events = [event async for event in provider.stream(REQUEST)]
    assert isinstance(events[-1], Finish)


async def test_prepare_readies_the_provider_and_may_be_repeated(provider: Provider):
    """The runtime awaits ``prepare`` before it serves; a stream after it needs no more loading."""
    await provider.prepare()
    await provider.prepare()
    events = [event async for event in provider.stream(REQUEST)]
    assert isinstance(events[-1], Finish)
