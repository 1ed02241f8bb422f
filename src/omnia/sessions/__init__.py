"""Session stores behind one interface; see ``base`` for the contract.

``memory`` keeps sessions in the process; ``redis`` and ``postgres`` share
them between replicas. The durable stores' modules import their drivers, so
they are imported only when such a store is asked for.
"""

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
    "StoreConfigError",
    "StoreUnavailable",
    "Turn",
    "TurnConflict",
    "create_store",
]


DEFAULT_URL_ENV = "OMNIA_SESSION_URL"
URL_SCHEMES = {
    "redis": ("redis://", "rediss://", "unix://"),
    "postgres": ("postgresql://", "postgres://"),
}


class StoreConfigError(ValueError):
    pass


def create_store(
    config: SessionConfig, *, env: Mapping[str, str], namespace: str = "default"
) -> SessionStore:
    """The store ``config`` names, connected lazily (no I/O here).

    A shared store's URL is read from the environment variable
    ``config.url_env`` (``OMNIA_SESSION_URL`` when unset), which Kubernetes
    fills from the Secret named by ``spec.session.secretRef``. ``namespace``
    keeps agents that share one Redis or database apart: each sees only its
    own sessions.
    """
    if config.type == "memory":
        return MemoryStore(
            ttl_seconds=config.ttl_seconds,
            max_turns=config.max_turns,
            max_bytes=config.max_bytes,
        )
    url = store_url(config, env=env)
    if config.type == "redis":
        from omnia.sessions.redis import RedisStore

        return RedisStore.from_url(
            url,
            namespace=namespace,
            ttl_seconds=config.ttl_seconds,
            max_turns=config.max_turns,
            max_bytes=config.max_bytes,
        )
    if config.type == "postgres":
        from omnia.sessions.postgres import PostgresStore

        return PostgresStore(
            dsn=url,
            namespace=namespace,
            ttl_seconds=config.ttl_seconds,
            max_turns=config.max_turns,
            max_bytes=config.max_bytes,
        )
    raise StoreConfigError(f"session store type {config.type!r} is not available in this build")


def store_url(config: SessionConfig, *, env: Mapping[str, str]) -> str:
    name = config.url_env or DEFAULT_URL_ENV
    url = env.get(name, "").strip()
    if not url:
        raise StoreConfigError(
            f"session store {config.type!r} needs its URL in the environment variable {name}, "
            "which is unset or empty (set spec.session.secretRef to a Secret key holding the URL)"
        )
    schemes = URL_SCHEMES[config.type]
    if not url.startswith(schemes):
        # The URL is a secret: name its scheme only, never echo it.
        scheme = url.split("://", 1)[0] if "://" in url else "none"
        raise StoreConfigError(
            f"session store {config.type!r} needs a URL starting with {' or '.join(schemes)}; "
            f"{name} has scheme {scheme!r}"
        )
    return url
