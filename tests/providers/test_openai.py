"""The OpenAI-compatible provider against a real HTTP server speaking OpenAI's wire format."""

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
from omnia.providers.openai import OpenAIProvider

from . import openai_wire as wire

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather of a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _provider(api, *, provider_type="openai", max_retries=2, timeout=5.0, max_tokens=256) -> OpenAIProvider:
    config = ProviderConfig(
        type=provider_type,
        model="gpt-test",
        base_url=f"{api.base_url}/v1",
        timeout_seconds=timeout,
        max_retries=max_retries,
        max_tokens=max_tokens,
        temperature=0.2,
    )
    retry = RetryPolicy(max_retries=max_retries, base_delay=0.01, max_delay=0.05)
    return OpenAIProvider.from_config(config, api_key="sk-test", retry=retry)


def _ask(text: str = "Hello?") -> ChatRequest:
    return ChatRequest(messages=(Message("system", "Be brief."), Message("user", text)))


async def _events(provider: OpenAIProvider, request: ChatRequest | None = None) -> list:
    try:
        return [event async for event in provider.stream(request or _ask())]
    finally:
        await provider.aclose()


async def test_text_streams_as_deltas_then_finish_with_usage(openai_api):
    openai_api.script(wire.text("Hel", "lo", " there"))
    events = await _events(_provider(openai_api))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(" there"),
        Finish("stop", Usage(input_tokens=11, output_tokens=3)),
    ]


async def test_request_carries_conversation_tools_key_and_limits(openai_api):
    """Assistant tool calls and tool results map to OpenAI's message shapes."""
    openai_api.script(wire.text("ok"))
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    request = ChatRequest(
        messages=(
            Message("system", "Be brief."),
            Message("user", "Weather in Paris?"),
            Message("assistant", tool_calls=(call,)),
            Message("tool", '{"sky": "clear"}', tool_call_id="call_1", name="get_weather"),
        ),
        tools=(WEATHER,),
        max_tokens=64,
    )
    await _events(_provider(openai_api), request)
    (seen,) = openai_api.seen
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body["model"] == "gpt-test"
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["max_completion_tokens"] == 64
    assert seen.body["temperature"] == 0.2
    assert seen.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
    ]
    assert seen.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters},
        }
    ]


@pytest.mark.parametrize(
    ("provider_type", "limit_param"),
    [
        pytest.param("openai", "max_completion_tokens", id="openai"),
        pytest.param("vllm", "max_tokens", id="vllm"),
        pytest.param("ollama", "max_tokens", id="ollama"),
        pytest.param("gemini", "max_tokens", id="gemini"),
    ],
)
async def test_output_limit_parameter_per_server_type(openai_api, provider_type, limit_param):
    openai_api.script(wire.text("ok"))
    await _events(_provider(openai_api, provider_type=provider_type, max_tokens=99))
    assert openai_api.seen[0].body[limit_param] == 99


async def test_tool_call_fragments_become_complete_tool_calls(openai_api):
    """Fragments of two calls, interleaved by index, are put together before Finish."""
    openai_api.script(
        wire.tool_calls(
            ("call_a", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
            ("call_b", "get_weather", ['{"city": ', '"Oslo"}']),
        )
    )
    events = await _events(_provider(openai_api), ChatRequest(messages=_ask().messages, tools=(WEATHER,)))
    assert events == [
        ToolCallRequest(ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"})),
        ToolCallRequest(ToolCall(id="call_b", name="get_weather", arguments={"city": "Oslo"})),
        Finish("tool_calls", Usage(input_tokens=20, output_tokens=9)),
    ]


async def test_tool_calls_reported_as_stop_are_normalised(openai_api):
    """Some compatible servers finish a tool-calling reply with ``stop``."""
    openai_api.script(wire.tool_calls(("call_a", "get_weather", ['{"city": "Rome"}']), finish="stop"))
    events = await _events(_provider(openai_api, provider_type="ollama"))
    assert events[-1].reason == "tool_calls"


async def test_rate_limit_then_success_is_retried(openai_api):
    openai_api.script(wire.failure(429, "Rate limit reached", headers={"retry-after-ms": "10"}), wire.text("ok"))
    events = await _events(_provider(openai_api))
    assert events[0] == TextDelta("ok")
    assert len(openai_api.seen) == 2


@pytest.mark.parametrize(
    ("status", "retryable", "attempts"),
    [
        pytest.param(500, True, 3, id="500-retried-until-exhausted"),
        pytest.param(503, True, 3, id="503-retried-until-exhausted"),
        pytest.param(429, True, 3, id="429-retried-until-exhausted"),
        pytest.param(401, False, 1, id="401-not-retried"),
        pytest.param(400, False, 1, id="400-not-retried"),
        pytest.param(404, False, 1, id="404-not-retried"),
    ],
)
async def test_http_errors(openai_api, status, retryable, attempts):
    openai_api.script(*[wire.failure(status, f"vendor says {status}")] * 3)
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(openai_api, max_retries=2))
    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert f"vendor says {status}" in caught.value.message
    assert len(openai_api.seen) == attempts


async def test_timeout_is_a_retryable_error(openai_api):
    openai_api.script(wire.failure(500, "too late", delay=3.0))
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(openai_api, max_retries=0, timeout=0.3))
    assert caught.value.retryable is True
    assert "in time" in caught.value.message


async def test_stall_between_chunks_is_a_retryable_error(openai_api):
    """``timeout_seconds`` bounds every wait, including gaps inside a stream."""
    openai_api.script(wire.text("a", "b", gap=1.0))
    with pytest.raises(ProviderError) as caught:
        await _events(_provider(openai_api, max_retries=0, timeout=0.3))
    assert caught.value.retryable is True


async def test_connection_refused_is_a_retryable_error():
    config = ProviderConfig(type="vllm", model="m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ProviderError) as caught:
        await _events(OpenAIProvider.from_config(config, api_key=None))
    assert caught.value.retryable is True
    assert "cannot reach" in caught.value.message


async def test_failure_after_first_event_is_not_retried(openai_api):
    openai_api.script(wire.text_then_stream_error("Hal", "upstream died"), wire.text("never sent"))
    seen = []
    with pytest.raises(ProviderError, match="upstream died"):
        async for event in _provider(openai_api).stream(_ask()):
            seen.append(event)
    assert seen == [TextDelta("Hal")]
    assert len(openai_api.seen) == 1


async def test_closing_the_stream_closes_the_http_response(openai_api):
    """A cancelled turn must not keep the vendor generating (and billing)."""
    openai_api.script(wire.text(*["word "] * 50, gap=0.05))
    provider = _provider(openai_api)
    stream = provider.stream(_ask())
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert await asyncio.to_thread(openai_api.abandoned.wait, 5)
    await provider.aclose()
