"""Sessions: the conversation history, its metadata and its prompt version.

One interface, several stores (``memory``, ``redis``, ``postgres``), one
contract test suite. The unit of writing is the *turn*: everything one user
message caused (the user message, tool calls and results, the assistant
reply, usage). ``append_turn`` is atomic and ordered: it only succeeds when the
caller's ``expected_index`` is the next turn index, so two writers can never
interleave or duplicate a session's history.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


# A shared store keeps each agent's sessions under its own namespace
# (``namespace/agent``); the characters are safe in Redis keys and SQL values.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} must match {NAMESPACE_PATTERN.pattern}")
    return namespace


@dataclass(frozen=True)
class Turn:
    index: int
    messages: tuple[dict, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str = "stop"
    created_at: float = field(default_factory=time.time)

    def decoded(self, decode: Callable[[dict], T]) -> tuple[T, ...]:
        """``messages``, each through ``decode``; decoded once per ``Turn`` object.

        The runtime's session cache hands the same turns to every turn of a
        conversation, so a turn's history is decoded once instead of on
        every later turn. The result is kept beside the fields (not one of
        them: equality and ``replace`` ignore it), for the last ``decode``
        asked; the messages of a stored turn never change.
        """
        memo = self.__dict__.get("_decoded")
        if memo is None or memo[0] != decode:
            memo = (decode, tuple(decode(message) for message in self.messages))
            object.__setattr__(self, "_decoded", memo)
        return memo[1]

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "messages": list(self.messages),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "finish_reason": self.finish_reason,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Turn:
        return cls(
            index=data["index"],
            messages=tuple(data["messages"]),
            input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0),
            cost_usd=data.get("cost_usd", 0.0),
            finish_reason=data.get("finish_reason", "stop"),
            created_at=data.get("created_at", 0.0),
        )


@dataclass(frozen=True)
class Session:
    id: str
    agent: str
    prompt_version: str
    metadata: dict = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    turns: tuple[Turn, ...] = ()

    @property
    def next_index(self) -> int:
        return len(self.turns)

    def header(self) -> dict:
        return {
            "id": self.id,
            "agent": self.agent,
            "prompt_version": self.prompt_version,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


class SessionError(Exception):
    """Base of the store's errors."""


class SessionNotFound(SessionError):
    pass


class SessionExists(SessionError):
    pass


class TurnConflict(SessionError):
    """Another writer appended a turn first; the caller's view is stale."""


class SessionFull(SessionError):
    """The session reached its turn or size bound."""


class StoreUnavailable(SessionError):
    """The store cannot be reached; the operation may be retried later."""


def storable_id(session_id: str) -> bool:
    """Whether every backend can hold ``session_id``: UTF-8 text without NUL.

    Clients name the sessions they resume, in JSON (which can carry a lone
    surrogate) or a query string. An id no store could have created is not
    found; passed to the backend it failed as an outage (PostgreSQL refuses
    NUL in text, and neither driver encodes a lone surrogate), and the
    PostgreSQL store closed a healthy connection for it.
    """
    if "\x00" in session_id:
        return False
    try:
        session_id.encode()
    except UnicodeEncodeError:
        return False
    return True


class SessionStore(Protocol):
    """A place sessions live.

    All methods are coroutines safe to call concurrently from many tasks.
    A cancelled ``append_turn`` has either committed the whole turn or
    nothing. Stores raise ``StoreUnavailable`` (never a driver exception)
    when their backend is unreachable.
    """

    async def create(self, session: Session) -> None:
        """Store a new, empty session; ``SessionExists`` if the id is taken."""

    async def get(self, session_id: str) -> Session:
        """The session with all its turns; ``SessionNotFound`` if unknown or expired."""

    async def refresh(self, session: Session) -> Session:
        """``session`` as stored now, reading only the turns it lacks.

        Turns are never rewritten, so an earlier read of a session stays a
        true prefix of it; this brings one up to date at the price of the new
        turns (usually none) instead of the whole history. A session that
        expired raises ``SessionNotFound``; one created afresh under the same
        id (its creation time differs) is read whole.
        """

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        """Commit ``turn`` atomically; ``TurnConflict`` unless ``turn.index`` is next."""

    async def ping(self) -> None:
        """Return when the store is reachable, else raise ``StoreUnavailable``."""

    async def aclose(self) -> None: ...
