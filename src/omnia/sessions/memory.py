"""The in-memory session store: the local default and the unit-test double.

It keeps the same contract as the shared stores (ordered atomic appends,
TTL, size bounds), so code tested against it behaves the same on Redis or
PostgreSQL. Sessions live as long as the process: resume works only on the
same replica.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

from omnia.sessions.base import (
    Session,
    SessionExists,
    SessionFull,
    SessionNotFound,
    Turn,
    TurnConflict,
)


class MemoryStore:
    def __init__(
        self,
        *,
        ttl_seconds: float = 86_400,
        max_turns: int = 1_000,
        max_bytes: int = 4 * 1024 * 1024,
        max_sessions: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_turns = max_turns
        self._max_bytes = max_bytes
        self._max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._sizes: dict[str, int] = {}
        self._expires: dict[str, float] = {}

    async def create(self, session: Session) -> None:
        self._evict_expired()
        if session.id in self._sessions:
            raise SessionExists(session.id)
        if len(self._sessions) >= self._max_sessions:
            # Oldest-expiring first: dicts keep insertion order and every
            # write re-inserts, so the first key is the least recently used.
            self._drop(next(iter(self._expires)))
        self._sessions[session.id] = replace(session, turns=())
        self._sizes[session.id] = 0
        self._touch(session.id)

    async def get(self, session_id: str) -> Session:
        self._evict_expired()
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    async def refresh(self, session: Session) -> Session:
        return await self.get(session.id)

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        session = await self.get(session_id)
        if turn.index != session.next_index:
            raise TurnConflict(
                f"session {session_id}: expected turn {session.next_index}, got {turn.index}"
            )
        if session.next_index >= self._max_turns:
            raise SessionFull(f"session {session_id} reached {self._max_turns} turns")
        size = self._sizes[session_id] + len(json.dumps(turn.to_dict()))
        if size > self._max_bytes:
            raise SessionFull(f"session {session_id} would exceed {self._max_bytes} bytes")
        self._sessions[session_id] = replace(session, turns=(*session.turns, turn))
        self._sizes[session_id] = size
        self._touch(session_id)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._sessions.clear()
        self._sizes.clear()
        self._expires.clear()

    def _touch(self, session_id: str) -> None:
        self._expires.pop(session_id, None)
        self._expires[session_id] = self._clock() + self._ttl

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._sizes.pop(session_id, None)
        self._expires.pop(session_id, None)

    def _evict_expired(self) -> None:
        now = self._clock()
        while self._expires:
            session_id, deadline = next(iter(self._expires.items()))
            if deadline > now:
                break
            self._drop(session_id)
