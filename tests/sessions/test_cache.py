"""The runtime's cache of decoded sessions, in front of a store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from omnia.providers.base import Message
from omnia.sessions import MemoryStore, Session, SessionNotFound, Turn
from omnia.sessions.cache import SessionCache


class CountingStore(MemoryStore):
    """A memory store that counts the whole reads and refreshes made by its callers."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.refreshes = 0

    async def get(self, session_id: str) -> Session:
        self.gets += 1
        return await super().get(session_id)

    async def refresh(self, session: Session) -> Session:
        self.refreshes += 1
        return await super().get(session.id)

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        gets = self.gets
        await super().append_turn(session_id, turn)
        self.gets = gets


def _turn(index: int) -> Turn:
    return Turn(index=index, messages=({"role": "user", "content": f"m{index}"},), created_at=1.0)


async def _started(store: MemoryStore, *ids: str) -> None:
    for session_id in ids:
        await store.create(Session(id=session_id, agent="a", prompt_version="1"))


async def test_a_cached_session_is_refreshed_not_read_whole() -> None:
    store = CountingStore()
    await _started(store, "s")
    cache = SessionCache(store)
    session = await cache.get("s")
    await store.append_turn("s", _turn(0))
    cache.committed(session, _turn(0))
    again = await cache.get("s")
    assert (store.gets, store.refreshes) == (1, 1)
    assert again.turns == (_turn(0),)


async def test_the_least_recently_used_session_goes_first() -> None:
    store = CountingStore()
    await _started(store, "a", "b", "c")
    cache = SessionCache(store, capacity=2)
    await cache.get("a")
    await cache.get("b")
    await cache.get("a")
    await cache.get("c")
    assert len(cache) == 2
    await cache.get("b")  # evicted: read whole again
    assert store.gets == 4


async def test_a_session_gone_from_the_store_is_gone_from_the_cache() -> None:
    store = CountingStore()
    await _started(store, "s")
    cache = SessionCache(store)
    await cache.get("s")
    await store.aclose()
    with pytest.raises(SessionNotFound):
        await cache.get("s")
    assert len(cache) == 0


def test_a_turns_messages_are_decoded_once_and_the_turn_stays_equal_to_its_copies():
    """The loop decodes each cached turn's history on every later turn of
    the conversation; the decoded messages are kept on the turn, without
    becoming part of what the turn is."""
    calls = []

    def decode(data: dict) -> Message:
        calls.append(data["content"])
        return Message.from_dict(data)

    turn = Turn(index=0, messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}))
    first = turn.decoded(decode)
    assert first == (Message("user", "hi"), Message("assistant", "hello"))
    assert turn.decoded(decode) is first
    assert calls == ["hi", "hello"]
    assert turn == replace(turn) and turn == Turn.from_dict(turn.to_dict())
    assert "_decoded" not in turn.to_dict() and "_decoded" not in repr(turn)
    other = turn.decoded(lambda data: data["role"])
    assert other == ("user", "assistant")
