"""The mock provider: a deterministic, scriptable model for tests and load tests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omnia.config import MockScript, ScriptedError, ScriptedReply, ScriptedToolCall
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from omnia.providers.mock import MockProvider


def _ask(*contents: str, system: str = "Be brief.") -> ChatRequest:
    return ChatRequest(messages=(Message("system", system), *(Message("user", c) for c in contents)))


async def _events(provider: MockProvider, request: ChatRequest) -> list:
    return [event async for event in provider.stream(request)]


async def _text(provider: MockProvider, request: ChatRequest) -> str:
    return "".join(e.text for e in await _events(provider, request) if isinstance(e, TextDelta))


@pytest.mark.parametrize(
    ("script", "prompts", "replies"),
    [
        pytest.param(
            None, ["hello there", "again"], ["hello there", "again"], id="no-script-echoes-the-user"
        ),
        pytest.param(MockScript(), ["ping"], ["ping"], id="empty-script-echoes-the-user"),
        pytest.param(
            MockScript(replies=[ScriptedReply(text="one"), ScriptedReply(text="two")]),
            ["a", "b", "c"],
            ["one", "two", "one"],
            id="replies-in-turn-cycling",
        ),
        pytest.param(
            MockScript(
                replies=[
                    ScriptedReply(text="Sunny.", match="weather"),
                    ScriptedReply(text="one"),
                    ScriptedReply(text="two"),
                ]
            ),
            ["hi", "weather today?", "hi", "hi"],
            ["one", "Sunny.", "two", "one"],
            id="match-first-and-skipped-in-turn",
        ),
        pytest.param(
            MockScript(replies=[ScriptedReply(text="Sunny.", match="weather")]),
            ["weather?", "something else"],
            ["Sunny.", "something else"],
            id="nothing-matches-echoes",
        ),
    ],
)
async def test_reply_choice(script, prompts, replies):
    provider = MockProvider(script)
    assert [await _text(provider, _ask(p)) for p in prompts] == replies


@pytest.mark.parametrize(
    ("text", "chunk_size", "chunks"),
    [
        pytest.param("abcdefghij", 4, ["abcd", "efgh", "ij"], id="remainder-last"),
        pytest.param("abcd", 4, ["abcd"], id="exact"),
        pytest.param("abc", 8, ["abc"], id="shorter-than-a-chunk"),
        pytest.param("", 8, [], id="no-text-no-chunks"),
    ],
)
async def test_text_is_streamed_in_chunks(text, chunk_size, chunks):
    provider = MockProvider(MockScript(replies=[ScriptedReply(text=text, chunk_size=chunk_size)]))
    events = await _events(provider, _ask("go"))
    assert events[:-1] == [TextDelta(c) for c in chunks]
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


async def test_usage_counts_words_deterministically():
    provider = MockProvider(MockScript(replies=[ScriptedReply(text="three little words")]))
    events = await _events(provider, _ask("what is this", system="two words"))
    assert events[-1] == Finish("stop", Usage(input_tokens=5, output_tokens=3))


async def test_tool_calls_then_the_next_reply_after_tool_results():
    """A tool-calling reply finishes with ``tool_calls``; the answer comes from the next reply."""
    script = MockScript(
        replies=[
            ScriptedReply(
                match="weather",
                tool_calls=[ScriptedToolCall(name="get_weather", arguments={"city": "Paris"})],
            ),
            ScriptedReply(text="It is sunny in Paris."),
            ScriptedReply(text="Anything else?"),
        ]
    )
    provider = MockProvider(script)
    first = await _events(provider, _ask("weather in Paris?"))
    call = ToolCall(id="mock-0-0", name="get_weather", arguments={"city": "Paris"})
    assert first[0] == ToolCallRequest(call)
    assert first[-1].reason == "tool_calls"

    history = (
        *_ask("weather in Paris?").messages,
        Message("assistant", tool_calls=(call,)),
        Message("tool", '{"sky": "clear"}', tool_call_id=call.id, name=call.name),
    )
    # The user message still says "weather": the follow-up rule must win over matching.
    assert await _text(provider, ChatRequest(messages=history)) == "It is sunny in Paris."
    assert await _text(provider, _ask("thanks")) == "Anything else?"


async def test_scripted_tool_call_ids_are_kept():
    script = MockScript(
        replies=[
            ScriptedReply(tool_calls=[ScriptedToolCall(id="call-42", name="lookup")]),
            ScriptedReply(text="found it"),
        ]
    )
    provider = MockProvider(script)
    (request, finish) = await _events(provider, _ask("look it up"))
    assert request == ToolCallRequest(ToolCall(id="call-42", name="lookup", arguments={}))
    history = (
        *_ask("look it up").messages,
        Message("assistant", tool_calls=(request.call,)),
        Message("tool", "42", tool_call_id="call-42"),
    )
    assert await _text(provider, ChatRequest(messages=history)) == "found it"


@pytest.mark.parametrize(
    ("reply", "before_error", "retryable", "status"),
    [
        pytest.param(
            ScriptedReply(error=ScriptedError(message="rate limited", retryable=True, status=429)),
            [],
            True,
            429,
            id="before-the-first-token",
        ),
        pytest.param(
            ScriptedReply(text="Hello wor", chunk_size=5, error=ScriptedError(message="dropped")),
            [TextDelta("Hello"), TextDelta(" wor")],
            False,
            None,
            id="in-the-middle-of-a-reply",
        ),
    ],
)
async def test_injected_errors(reply, before_error, retryable, status):
    provider = MockProvider(MockScript(replies=[reply]))
    seen = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(_ask("go")):
            seen.append(event)
    assert seen == before_error
    assert (caught.value.message, caught.value.retryable, caught.value.status) == (
        reply.error.message,
        retryable,
        status,
    )


async def test_delays_before_first_chunk_and_between_chunks():
    reply = ScriptedReply(text="abcdef", chunk_size=2, delay_ms=60, chunk_delay_ms=30)
    provider = MockProvider(MockScript(replies=[reply]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    arrivals = [loop.time() - start async for _ in provider.stream(_ask("go"))]
    assert arrivals[0] >= 0.055
    assert arrivals[2] - arrivals[0] >= 0.055  # two gaps of 30 ms between three chunks


async def test_zero_delays_never_sleep(monkeypatch):
    """The relay benchmark runs thousands of mock sessions: no timers when none are asked for."""

    # asyncio.sleep is global: the scripted HTTP servers of the other provider
    # tests run their own loops in threads, and must go on sleeping.
    real_sleep, this_thread = asyncio.sleep, threading.get_ident()

    async def no_sleep(delay: float, *args, **kwargs):
        if threading.get_ident() == this_thread:
            raise AssertionError("the mock slept")
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    provider = MockProvider(MockScript(replies=[ScriptedReply(text="x" * 100, chunk_size=1)]))
    assert len(await _events(provider, _ask("go"))) == 101


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(ScriptedReply(text="never", delay_ms=10_000), id="waiting-for-first-chunk"),
        pytest.param(
            ScriptedReply(text="abcdef", chunk_size=1, chunk_delay_ms=10_000), id="between-chunks"
        ),
    ],
)
async def test_cancel_stops_the_stream(reply):
    provider = MockProvider(MockScript(replies=[reply]))
    received: list = []

    async def consume() -> None:
        async for event in provider.stream(_ask("go")):
            received.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)
    assert not any(isinstance(e, Finish) for e in received)
