"""The runtime's cache of decoded sessions, in front of a store."""

from __future__ import annotations

import pytest

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
