"""The Redis session store: shared by every replica, expiry done by Redis.

Layout, for namespace ``ns`` and session ``id`` (the id in braces is a Redis
Cluster hash tag, so both keys of one session live in the same slot)::

    omnia:ns:session:{id}         hash  header (JSON of Session.header()), bytes (int)
    omnia:ns:session:{id}:turns   list  one JSON document per turn, index = position

Why Lua: an append must read the turn count and the size, check them against
the caller's expected index and the bounds, push the turn and refresh both
TTLs as one step. A server-side script does that in one round trip and Redis
runs it atomically (and persists its effects atomically, in the AOF or a
replica), so two writers can never interleave, lose or duplicate a turn, and
no reader ever sees half a turn: each turn is a single list element.

The client is lazy and self-healing: nothing connects until the first
command, and a connection broken by an outage is replaced the next time the
pool hands it out, so the store recovers without a restart. Commands are not
retried: every Redis or socket error, and every operation that exceeds
``timeout_seconds``, surfaces at once as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from omnia.sessions.base import (
    Session,
    SessionExists,
    SessionFull,
    SessionNotFound,
    StoreUnavailable,
    Turn,
    TurnConflict,
    check_namespace,
    storable_id,
)


# KEYS: header hash, turns list. ARGV: header JSON, ttl in ms.
# Returns 1 when created, 0 when the id is taken.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'header', ARGV[1], 'bytes', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_APPENDED, _NOT_FOUND, _CONFLICT, _TOO_MANY_TURNS, _TOO_MANY_BYTES = range(5)

# KEYS: header hash, turns list. ARGV: expected index, turn JSON, ttl in ms,
# max turns, max bytes. Returns {status, turns now}; checks in the same order
# as the in-memory store, so every store refuses a bad append the same way.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {1, 0}
end
local count = redis.call('LLEN', KEYS[2])
if tonumber(ARGV[1]) ~= count then
  return {2, count}
end
if count >= tonumber(ARGV[4]) then
  return {3, count}
end
local size = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0') + string.len(ARGV[2])
if size > tonumber(ARGV[5]) then
  return {4, count}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'bytes', size)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {0, count + 1}
"""


class RedisStore:
    """Sessions in Redis; see the module docstring for the layout.

    The store owns ``client`` and closes it in ``aclose``. Build one from a
    URL with ``RedisStore.from_url``. All methods are safe to call
    concurrently; a cancelled ``append_turn`` has either run its script
    entirely or not at all (Redis never runs half a script), though the
    caller cannot tell which: a later ``get`` can.
    """

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str,
        ttl_seconds: float = 86_400,
        max_turns: int = 1_000,
        max_bytes: int = 4 * 1024 * 1024,
        timeout_seconds: float = 2.0,
    ) -> None:
        check_namespace(namespace)
        self._client = client
        self._prefix = f"omnia:{namespace}:session:"
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._max_turns = max_turns
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._create = client.register_script(_CREATE)
        self._append = client.register_script(_APPEND)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        ttl_seconds: float = 86_400,
        max_turns: int = 1_000,
        max_bytes: int = 4 * 1024 * 1024,
        timeout_seconds: float = 2.0,
        max_connections: int = 32,
    ) -> RedisStore:
        """A store on ``url`` (``redis://``, ``rediss://`` or ``unix://``); connects lazily."""
        return cls(
            connect(url, timeout_seconds=timeout_seconds, max_connections=max_connections),
            namespace=namespace,
            ttl_seconds=ttl_seconds,
            max_turns=max_turns,
            max_bytes=max_bytes,
            timeout_seconds=timeout_seconds,
        )

    async def create(self, session: Session) -> None:
        header = json.dumps(session.header())
        async with self._reaching("create"):
            created = await self._create(keys=self._keys(session.id), args=[header, self._ttl_ms])
        if not created:
            raise SessionExists(session.id)

    async def get(self, session_id: str) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        header_key, turns_key = self._keys(session_id)
        async with self._reaching("get"):
            # MULTI/EXEC: the header and the turns are read at one instant.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hget(header_key, "header")
                pipe.lrange(turns_key, 0, -1)
                header, turns = await pipe.execute()
        if header is None:
            raise SessionNotFound(session_id)
        data = json.loads(header)
        return Session(
            id=data["id"],
            agent=data["agent"],
            prompt_version=data["prompt_version"],
            metadata=data["metadata"],
            created_at=data["created_at"],
            turns=tuple(Turn.from_dict(json.loads(turn)) for turn in turns),
        )

    async def refresh(self, session: Session) -> Session:
        header_key, turns_key = self._keys(session.id)
        async with self._reaching("refresh"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hget(header_key, "header")
                pipe.lrange(turns_key, len(session.turns), -1)
                header, turns = await pipe.execute()
        if header is None:
            raise SessionNotFound(session.id)
        if json.loads(header)["created_at"] != session.created_at:
            return await self.get(session.id)
        if not turns:
            return session
        return replace(
            session, turns=(*session.turns, *(Turn.from_dict(json.loads(turn)) for turn in turns))
        )

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        payload = json.dumps(turn.to_dict())
        args = [turn.index, payload, self._ttl_ms, self._max_turns, self._max_bytes]
        async with self._reaching("append_turn"):
            status, count = await self._append(keys=self._keys(session_id), args=args)
        if status == _APPENDED:
            return
        if status == _NOT_FOUND:
            raise SessionNotFound(session_id)
        if status == _CONFLICT:
            raise TurnConflict(f"session {session_id}: expected turn {count}, got {turn.index}")
        if status == _TOO_MANY_TURNS:
            raise SessionFull(f"session {session_id} reached {self._max_turns} turns")
        raise SessionFull(f"session {session_id} would exceed {self._max_bytes} bytes")

    async def ping(self) -> None:
        async with self._reaching("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)

    def _keys(self, session_id: str) -> list[str]:
        header = f"{self._prefix}{{{session_id}}}"
        return [header, f"{header}:turns"]

    def _reaching(self, operation: str):
        return reaching(f"redis {operation}", timeout=self._timeout)


def connect(url: str, *, timeout_seconds: float, max_connections: int) -> Redis:
    """A client on ``url`` (``redis://``, ``rediss://`` or ``unix://``) that connects lazily.

    No retries: a failed command is reported, not repeated. The pool already
    replaces connections broken by an outage before handing them out, and
    repeating a write whose reply was lost would turn a committed turn (or a
    counted one) into a conflict or a double count.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def reaching(operation: str, *, timeout: float) -> AsyncIterator[None]:
    """Bound ``operation`` by ``timeout``; driver and socket errors become ``StoreUnavailable``."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError as exc:
        raise StoreUnavailable(f"{operation}: no answer within {timeout:g}s") from exc
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"{operation}: {exc or type(exc).__name__}") from exc
