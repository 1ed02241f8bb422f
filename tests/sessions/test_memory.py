"""What only the in-memory store does: expiry by its clock and a session cap."""

from __future__ import annotations

import pytest

from omnia.sessions import MemoryStore, Session, SessionNotFound, Turn


async def test_idle_session_expires_after_ttl_and_activity_extends_it(clock):
    store = MemoryStore(ttl_seconds=60, clock=clock)
    await store.create(Session(id="s", agent="a", prompt_version="1"))
    clock.now += 50
    await store.append_turn("s", Turn(index=0, messages=({"role": "user", "content": "x"},)))
    clock.now += 50
    assert len((await store.get("s")).turns) == 1
    clock.now += 61
    with pytest.raises(SessionNotFound):
        await store.get("s")


async def test_session_cap_evicts_the_least_recently_used(clock):
    store = MemoryStore(max_sessions=2, clock=clock)
    for name in ("a", "b"):
        await store.create(Session(id=name, agent="x", prompt_version="1"))
        clock.now += 1
    await store.append_turn("a", Turn(index=0, messages=()))
    await store.create(Session(id="c", agent="x", prompt_version="1"))
    await store.get("a")
    await store.get("c")
    with pytest.raises(SessionNotFound):
        await store.get("b")
