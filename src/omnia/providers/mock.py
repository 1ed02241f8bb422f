"""The ``mock`` provider: a deterministic model, scripted by a ``MockScript``.

It exists for tests and load tests of everything above the provider: the
agent loop, the facade protocol, the relay under thousands of sessions. So it
must behave like a real streaming model (chunks, pauses, tool calls, failures)
while costing next to nothing: with zero delays it never sleeps, never spawns
a task and never touches the network.

Choosing a reply, in order:

1. Right after tool results (the last message is a ``tool`` message), the
   reply that follows, in the script, the reply that asked for those tools.
   That is read from the conversation itself (the tool call ids), so it holds
   however many sessions share the provider.
2. The first reply whose ``match`` is a substring of the last user message.
3. The next reply without ``match``, in turn, cycling.
4. With no such reply (or no script at all), an echo of the last user message.

A reply with ``error`` streams its text first, if it has any, then raises
the ``ProviderError``: with text it is a failure in the middle of a reply,
without text a failure before the first token.

Usage is counted in whitespace-separated words, which is deterministic and
close enough to tokens for cost accounting tests. A conversation's history is
counted again on every turn, so the counts of short texts are remembered
(a bounded cache): in load tests the provider stands in for a remote model,
whose work costs the pod nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import lru_cache

from omnia.config import MockScript, ScriptedReply
from omnia.providers.base import (
    ChatRequest,
    Finish,
    Message,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)


class MockProvider:
    """A scripted, deterministic provider.

    One instance serves any number of concurrent streams. The only state it
    keeps is the position of the in-turn cursor (rule 3 above).

    Cancellation: ``stream`` awaits only its scripted pauses, so it can be
    cancelled there, or at any await of its consumer.
    """

    type = "mock"

    def __init__(self, script: MockScript | None = None, *, model: str = "mock") -> None:
        self.model = model
        self._replies: tuple[ScriptedReply, ...] = tuple(script.replies) if script else ()
        self._cursor = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        index = self._choose(request.messages)
        reply = self._replies[index] if index is not None else _echo(request.messages)

        if reply.delay_ms:
            await asyncio.sleep(reply.delay_ms / 1000)
        for offset in range(0, len(reply.text), reply.chunk_size):
            if offset and reply.chunk_delay_ms:
                await asyncio.sleep(reply.chunk_delay_ms / 1000)
            yield TextDelta(reply.text[offset : offset + reply.chunk_size])
        if reply.error is not None:
            raise ProviderError(
                reply.error.message, retryable=reply.error.retryable, status=reply.error.status
            )

        calls = tuple(_tool_calls(reply, index))
        for call in calls:
            yield ToolCallRequest(call)
        yield Finish(
            reason="tool_calls" if calls else "stop",
            usage=Usage(
                input_tokens=(
                    reply.input_tokens
                    if reply.input_tokens is not None
                    else sum(_words(message) for message in request.messages)
                ),
                output_tokens=(
                    reply.output_tokens
                    if reply.output_tokens is not None
                    else len(reply.text.split()) + sum(_words_of_call(c) for c in calls)
                ),
            ),
        )

    async def prepare(self) -> None:
        """Nothing to load."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def _choose(self, messages: tuple[Message, ...]) -> int | None:
        """The index of the scripted reply for this conversation, ``None`` to echo."""
        if not self._replies:
            return None
        follow_up = self._follow_up(messages)
        if follow_up is not None:
            self._cursor = follow_up + 1
            return follow_up
        prompt = _last_user_text(messages)
        for index, reply in enumerate(self._replies):
            if reply.match is not None and reply.match in prompt:
                return index
        for step in range(len(self._replies)):
            index = (self._cursor + step) % len(self._replies)
            if self._replies[index].match is None:
                self._cursor = index + 1
                return index
        return None

    def _follow_up(self, messages: tuple[Message, ...]) -> int | None:
        """After tool results, the reply that follows the one that asked for the tools."""
        if not messages or messages[-1].role != "tool":
            return None
        asked = next((m for m in reversed(messages) if m.role == "assistant" and m.tool_calls), None)
        if asked is None:
            return None
        ids = [call.id for call in asked.tool_calls]
        for index, reply in enumerate(self._replies):
            if reply.tool_calls and [c.id for c in _tool_calls(reply, index)] == ids:
                return (index + 1) % len(self._replies)
        return None


def _tool_calls(reply: ScriptedReply, index: int | None) -> list[ToolCall]:
    return [
        ToolCall(id=call.id or f"mock-{index}-{position}", name=call.name, arguments=call.arguments)
        for position, call in enumerate(reply.tool_calls)
    ]


def _echo(messages: tuple[Message, ...]) -> ScriptedReply:
    return ScriptedReply(text=_last_user_text(messages))


def _last_user_text(messages: tuple[Message, ...]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


# Texts up to this length have their word counts remembered, at most this many.
_REMEMBERED_TEXT_CHARS = 4096
_REMEMBERED_TEXTS = 4096


def _words(message: Message) -> int:
    content = message.content
    words = _remembered_words(content) if len(content) <= _REMEMBERED_TEXT_CHARS else len(content.split())
    if message.tool_calls:
        words += sum(_words_of_call(c) for c in message.tool_calls)
    return words


@lru_cache(maxsize=_REMEMBERED_TEXTS)
def _remembered_words(text: str) -> int:
    return len(text.split())


def _words_of_call(call: ToolCall) -> int:
    return 1 + len(json.dumps(call.arguments).split())
