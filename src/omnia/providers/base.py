"""The one streaming interface every LLM provider implements.

The agent loop speaks only these types. A provider turns a ``ChatRequest``
into an async stream of ``TextDelta`` and ``ToolCallRequest`` events closed by
exactly one ``Finish``; vendor SDKs, wire formats and retries stay inside the
provider module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from omnia.eventbound import bounding

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict


@dataclass(frozen=True)
class Message:
    """One message of a conversation, in a vendor-neutral shape.

    ``tool_calls`` is set on assistant messages that asked for tools;
    ``tool_call_id`` on the ``tool`` message that answers one of them.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict:
        data: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content", ""),
            tool_calls=tuple(
                ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments", {}))
                for c in data.get("tool_calls", ())
            ),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description, JSON schema of arguments."""

    name: str
    description: str
    parameters: dict


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    # The most characters of model output (text and tool call arguments) the
    # caller can hold; a stream past it fails (``runaway_reply``).
    max_reply_chars: int | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    call: ToolCall


@dataclass(frozen=True)
class Finish:
    """The end of one model response.

    ``reason`` is normalised: ``stop``, ``length``, ``tool_calls``.
    """

    reason: str
    usage: Usage = field(default_factory=Usage)


ProviderEvent = TextDelta | ToolCallRequest | Finish


class ProviderError(Exception):
    """A provider call failed; ``retryable`` tells the client whether to retry."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


class Provider(Protocol):
    """An LLM endpoint.

    ``stream`` may be cancelled at any await point (the client sent ``cancel``
    or went away); implementations must release their HTTP stream or model
    slot when that happens. One provider instance serves many concurrent
    streams.
    """

    type: str
    model: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]: ...

    async def prepare(self) -> None:
        """Get ready to serve: load what the first stream would otherwise wait for.

        The runtime awaits it before it serves (so an agent is not reported
        ready with its model still loading) and turns a ``ProviderError``
        into a start-up failure. A remote API has nothing to load here.
        """
        ...

    async def aclose(self) -> None: ...


# The largest server-sent event read from a model's server. Its SDK keeps an
# event whole until it ends; one that never ends would grow the runtime.
MAX_EVENT_BYTES = 16 * 1024 * 1024


def bounded_events() -> dict:
    """The ``event_hooks`` of a vendor SDK's HTTP client: every event read bounded at ``MAX_EVENT_BYTES``."""
    return {"response": [bounding(MAX_EVENT_BYTES, what="an event of the model's stream")]}


def runaway_reply(limit: int) -> ProviderError:
    """The failure of a model reply past ``limit`` characters: a model server that never ends its reply."""
    return ProviderError(
        f"the model's reply went past {limit} characters, more than the session can hold "
        "(spec.session.maxBytes); its stream was closed and the turn not stored"
    )


def past(limit: int | None, count: int) -> bool:
    return limit is not None and count > limit
