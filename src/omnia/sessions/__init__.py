"""Session stores behind one interface; see ``base`` for the contract."""

from __future__ import annotations

from collections.abc import Mapping

from omnia.config import SessionConfig
from omnia.sessions.base import (
    Session,
    SessionError,
    SessionExists,
    SessionFull,
    SessionNotFound,
    SessionStore,
    StoreUnavailable,
    Turn,
    TurnConflict,
)
from omnia.sessions.memory import MemoryStore

__all__ = [
    "MemoryStore",
    "Session",
    "SessionError",
    "SessionExists",
    "SessionFull",
    "SessionNotFound",
    "SessionStore",
    "StoreUnavailable",
    "Turn",
    "TurnConflict",
    "create_store",
]


class StoreConfigError(ValueError):
    pass


def create_store(config: SessionConfig, *, env: Mapping[str, str]) -> SessionStore:
    """The store ``config`` names, connected lazily (no I/O here)."""
    if config.type == "memory":
        return MemoryStore(
            ttl_seconds=config.ttl_seconds,
            max_turns=config.max_turns,
            max_bytes=config.max_bytes,
        )
    raise StoreConfigError(f"session store type {config.type!r} is not available in this build")
