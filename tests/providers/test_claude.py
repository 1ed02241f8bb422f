"""The Claude provider against a real HTTP server speaking Anthropic's wire format."""

from __future__ import annotations

import asyncio

import pytest

from omnia.config import ProviderConfig
from omnia.providers._retrying import RetryPolicy
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from omnia.providers.claude import ClaudeProvider

from . import anthropic_wire as wire

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather of a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _provider(api, *, max_retries=2, timeout=5.0, max_tokens=256) -> ClaudeProvider:
    config = ProviderConfig(
        type="claude",
        model="claude-test",
        base_url=api.base_url,
        timeout_seconds=timeout,
        max_retries=max_retries,
        max_tokens=max_tokens,
    )
    retry = RetryPolicy(max_retries=max_retries, base_delay=0.01, max_delay=0.05)
    return ClaudeProvider.from_config(config, api_key="sk-ant-test", retry=retry)


def _ask(text: str = "Hello?") -> ChatRequest:
    return ChatRequest(messages=(Message("system", "Be brief."), Message("user", text)))


async def _events(provider: ClaudeProvider, request: ChatRequest | None = None) -> list:
    try:
        return [event async for event in provider.stream(request or _ask())]
    finally:
        await provider.aclose()


async def test_text_streams_as_deltas_then_finish_with_usage(anthropic_api):
    anthropic_api.script(wire.text("Hel", "lo", " there", usage=(12, 4)))
    events = await _events(_provider(anthropic_api))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(" there"),
        Finish("stop", Usage(input_tokens=12, output_tokens=4)),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        pytest.param("end_turn", "stop", id="end_turn"),
        pytest.param("stop_sequence", "stop", id="stop_sequence"),
        pytest.param("max_tokens", "length", id="max_tokens"),
        pytest.param("refusal", "stop", id="refusal"),
    ],
)
async def test_stop_reasons_are_normalised(anthropic_api, stop_reason, reason):
    anthropic_api.script(wire.text("x", stop_reason=stop_reason))
    events = await _events(_provider(anthropic_api))
    assert events[-1].reason == reason


async def test_request_separates_system_and_merges_tool_results(anthropic_api):
    """System goes to ``system``; tool results (and a user message after them) form one user turn."""
    anthropic_api.script(wire.text("ok"))
    calls = (
        ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="toolu_2", name="get_weather", arguments={"city": "Oslo"}),
    )
    request = ChatRequest(
        messages=(
            Message("system", "Be brief."),
            Message("system", "Answer in English."),
            Message("user", "Weather in Paris and Oslo?"),
            Message("assistant", "Let me check.", tool_calls=calls),
            Message("tool", "sunny", tool_call_id="toolu_1"),
            Message("tool", "snow", tool_call_id="toolu_2"),
            Message("user", "And tomorrow?"),
        ),
        tools=(WEATHER,),
        temperature=0.5,  # not sent: the Messages API has no sampling parameters any more
        max_tokens=64,
    )
    await _events(_provider(anthropic_api), request)
    (seen,) = anthropic_api.seen
    # SDK 2.x sends the API key as a bearer token (1.x used ``x-api-key``).
    assert seen.headers["authorization"] == "Bearer sk-ant-test"
    assert "anthropic-version" in seen.headers
    assert seen.body["model"] == "claude-test"
    assert seen.body["stream"] is True
    assert seen.body["max_tokens"] == 64
    assert "temperature" not in seen.body
    assert seen.body["system"] == "Be brief.\n\nAnswer in English."
    assert seen.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "snow"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert seen.body["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.parameters}
    ]


async def test_tool_use_blocks_become_complete_tool_calls(anthropic_api):
    anthropic_api.script(
        wire.tool_use(
            ("toolu_1", "get_weather", ['{"city":', ' "Par', 'is"}']),
            ("toolu_2", "get_weather", ['{"city": "Oslo"}']),
            preamble="Checking.",
            usage=(30, 17),
        )
    )
    events = await _events(_provider(anthropic_api), ChatRequest(messages=_ask().messages, tools=(WEATHER,)))
    assert events == [
        TextDelta("Checking."),
        ToolCallRequest(ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"})),
        ToolCallRequest(ToolCall(id="toolu_2", name="get_weather", arguments={"city": "Oslo"})),
        Finish("tool_calls", Usage(input_tokens=30, output_tokens=17)),
    ]


async def test_rate_limit_then_success_is_retried(anthropic_api):
    anthropic_api.script(
        wire.failure(429, "rate_limit_error", "Number of requests exceeded", headers={"retry-after": "0.01"}),
        wire.text("ok"),
    )
    events = await _events(_provider(anthropic_api))
    assert events[0] == TextDelta("ok")
    assert len(anthropic_api.seen) == 2


async def test_overloaded_error_event_before_output_is_retried(anthropic_api):
    """Anthropic may fail inside a ``200 OK`` stream; before any output that is safe to retry."""
    anthropic_api.script(wire.stream_error("overloaded_error", "Overloaded"), wire.text("ok"))
    events = await _events(_provider(anthropic_api))
    assert events[0] == TextDelta("ok")
    assert len(anthropic_api.seen) == 2


async def test_error_event_after_output_is_not_retried(anthropic_api):
    anthropic_api.script(wire.stream_error("overloaded_error", "Overloaded", after=("Hal",)), wire.text("no"))
    seen = []
    with pytest.raises(ProviderError) as caught:
        async for event in _provider(anthropic_api).stream(_ask()):
            seen.append(event)
    assert seen == [TextDelta("Hal")]
    assert (caught.value.status, caught.value.retryable) == (529, True)
    assert "Overloaded" in caught.value.message
    assert len(anthropic_api.seen) == 1


@pytest.mark.parametrize(
    ("status", "error_type", "retryable", "attempts"),
    [
        pytest.param(500, "api_error", True, 3, id="500-retried-until-exhausted"),
        pytest.param(529, "overloaded_error", True, 3, id="529-retried-until-exhausted"),
        pytest.param(401, "authentication_error", False, 1, id="401-not-retried"),
        pytest.param(400, "invalid_request_error", False, 1, id="400-not-retried"),
    ],
)
async def test_http_errors(anthropic_api, status, error_type, retryable, attempts):
    anthropic_api.script(*[wire.failure(status, error_type, f"vendor says {status}")] * 3)
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(anthropic_api, max_retries=2))
    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert f"vendor says {status}" in caught.value.message
    assert len(anthropic_api.seen) == attempts


async def test_timeout_is_a_retryable_error(anthropic_api):
    anthropic_api.script(wire.failure(500, "api_error", "too late", delay=3.0))
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(anthropic_api, max_retries=0, timeout=0.3))
    assert caught.value.retryable is True
    assert "in time" in caught.value.message


async def test_stall_in_the_middle_of_a_stream_is_a_retryable_error(anthropic_api):
    """The SDK lets raw transport errors out of a stream; they still become ``ProviderError``."""
    anthropic_api.script(wire.text("a", "b", gap=1.0))
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(anthropic_api, max_retries=0, timeout=0.3))
    assert caught.value.retryable is True


async def test_closing_the_stream_closes_the_http_response(anthropic_api):
    anthropic_api.script(wire.text(*["word "] * 50, gap=0.05))
    provider = _provider(anthropic_api)
    stream = provider.stream(_ask())
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert await asyncio.to_thread(anthropic_api.abandoned.wait, 5)
    await provider.aclose()
