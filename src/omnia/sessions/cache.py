"""A runtime's recent sessions, decoded, kept in step with the store.

Every turn needs its session's history. Reading and decoding the whole
history from the store on every turn is most of a turn's own CPU once
sessions grow, yet between two turns of a conversation usually nothing but
that turn was added. So the runtime keeps the sessions it served recently,
decoded, and before each turn asks the store only for what it lacks
(``SessionStore.refresh``: the turns past the cached turn index). Turns
written meanwhile by another replica, which took over the conversation
for a while, come back that way; nothing is ever served stale, and the
cache is never the record: a turn is added to it only after the store
committed it.

Bounded by the number of sessions (least recently used go first), so its
memory is at most ``capacity`` sessions of at most the store's
``maxBytes`` each.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from omnia.sessions.base import Session, SessionNotFound, SessionStore, Turn

DEFAULT_CAPACITY = 256


class SessionCache:
    """Reads sessions through ``store``, keeping the ``capacity`` most recent ones."""

    def __init__(self, store: SessionStore, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    async def get(self, session_id: str) -> Session:
        """The session as stored now; raises what the store raises.

        Safe to call concurrently: a slower read may put an older copy back,
        which the next read brings up to date again.
        """
        cached = self._sessions.get(session_id)
        try:
            if cached is None:
                session = await self.store.get(session_id)
            else:
                session = await self.store.refresh(cached)
        except SessionNotFound:
            self._sessions.pop(session_id, None)
            raise
        self._keep(session)
        return session

    def committed(self, session: Session, turn: Turn) -> None:
        """The store committed ``turn`` to ``session`` (as read for that turn)."""
        self._keep(replace(session, turns=(*session.turns, turn)))

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _keep(self, session: Session) -> None:
        self._sessions[session.id] = session
        self._sessions.move_to_end(session.id)
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
