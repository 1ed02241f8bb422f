"""The PostgreSQL session store: shared by every replica, durable, queryable.

Layout: one row per session in ``omnia_sessions`` (unique per namespace and
id, with its turn count, size and ``expires_at``) and one row per turn in
``omnia_turns``, whose primary key ``(session_pk, turn_index)`` is the unique
constraint that makes a duplicate turn impossible whatever the code above
it does. Turns go in their own table so an append writes one small row
instead of rewriting the whole history.

An append is one transaction: lock the session row (``FOR UPDATE``), check
the expected index and the bounds, insert the turn, bump the counters and the
expiry. Concurrent appenders of one session queue on the row lock; the loser
then sees the new count and gets ``TurnConflict``. A reader sees a session
and its turns in one statement, so it never sees half a turn.

The schema is created and upgraded by the ``MIGRATIONS`` below, applied the
first time a store instance talks to the database. They run under a
transaction-scoped advisory lock, so replicas that start at once apply each
migration exactly once, and a replica that loses the race simply finds them
applied. Migrations only ever add, so replicas still running the previous
release keep working during a rolling upgrade.

TTL: ``expires_at`` moves forward on every write and reads ignore expired
rows, so expiry is exact whatever the cleanup does; the rows themselves are
deleted a bounded batch at a time (``purge_expired``), opportunistically by
``create`` at most once per ``cleanup_interval_seconds``.

The pool is created lazily and hands out fresh connections in place of ones
an outage broke, so the store recovers without a restart. Every driver or
socket error, and every operation that exceeds ``timeout_seconds``, surfaces
as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

import asyncpg

from omnia.sessions.base import (
    Session,
    SessionError,
    SessionExists,
    SessionFull,
    SessionNotFound,
    StoreUnavailable,
    Turn,
    TurnConflict,
    check_namespace,
    storable_id,
)

log = logging.getLogger(__name__)


# Any fixed 64-bit number, the same in every release: it names "the lock that
# serialises Omnia's session migrations" for the whole database.
MIGRATION_LOCK_KEY = 0x6F6D6E6961_5345  # "omnia" "SE"

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "sessions and turns",
        """
        CREATE TABLE omnia_sessions (
            pk             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            namespace      text NOT NULL,
            id             text NOT NULL,
            agent          text NOT NULL,
            prompt_version text NOT NULL,
            metadata       json NOT NULL,
            created_at     double precision NOT NULL,
            turn_count     integer NOT NULL DEFAULT 0,
            bytes          bigint NOT NULL DEFAULT 0,
            expires_at     timestamptz NOT NULL,
            CONSTRAINT omnia_sessions_namespace_id_key UNIQUE (namespace, id)
        );
        CREATE INDEX omnia_sessions_expires_at_idx ON omnia_sessions (expires_at);
        CREATE TABLE omnia_turns (
            session_pk    bigint NOT NULL REFERENCES omnia_sessions (pk) ON DELETE CASCADE,
            turn_index    integer NOT NULL CHECK (turn_index >= 0),
            messages      json NOT NULL,
            input_tokens  bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_usd      double precision NOT NULL,
            finish_reason text NOT NULL,
            created_at    double precision NOT NULL,
            bytes         integer NOT NULL,
            PRIMARY KEY (session_pk, turn_index)
        );
        """,
    ),
    (
        2,
        "budget usage",
        """
        CREATE TABLE omnia_budget_usage (
            scope       text NOT NULL,
            period_kind text NOT NULL,
            period      text NOT NULL,
            tokens      bigint NOT NULL DEFAULT 0,
            cost_usd    double precision NOT NULL DEFAULT 0,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, period_kind, period)
        );
        """,
    ),
)

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations ``conn``'s database lacks; returns the versions applied.

    Safe to run from many processes at once: the advisory lock serialises
    them and each finds what the previous one applied.
    """
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS omnia_schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM omnia_schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO omnia_schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied_now.append(version)
    if applied_now:
        log.info("session store schema migrated", extra={"versions": applied_now})
    return applied_now


class PostgresStore:
    """Sessions in PostgreSQL; see the module docstring for the layout.

    Nothing connects until the first operation, which also applies the
    migrations. All methods are safe to call concurrently. A cancelled
    operation rolls its transaction back, unless the cancellation lands
    while the commit is in flight, in which case the caller cannot tell
    whether it committed: a later ``get`` can.
    """

    def __init__(
        self,
        *,
        dsn: str,
        namespace: str,
        ttl_seconds: float = 86_400,
        max_turns: int = 1_000,
        max_bytes: int = 4 * 1024 * 1024,
        timeout_seconds: float = 5.0,
        max_connections: int = 10,
        cleanup_interval_seconds: float = 60.0,
        cleanup_batch: int = 200,
    ) -> None:
        check_namespace(namespace)
        self._dsn = dsn
        self._namespace = namespace
        self._ttl = float(ttl_seconds)
        self._max_turns = max_turns
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._cleanup_interval = cleanup_interval_seconds
        self._cleanup_batch = cleanup_batch
        self._next_cleanup = 0.0
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False

    async def create(self, session: Session) -> None:
        async with self._transaction("create") as conn:
            # An expired session's id may be reused; its rows are simply stale.
            await conn.execute(
                "DELETE FROM omnia_sessions WHERE namespace = $1 AND id = $2 AND expires_at <= now()",
                self._namespace, session.id,
            )
            created = await conn.fetchval(
                """
                INSERT INTO omnia_sessions
                    (namespace, id, agent, prompt_version, metadata, created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
                ON CONFLICT (namespace, id) DO NOTHING
                RETURNING pk
                """,
                self._namespace, session.id, session.agent, session.prompt_version,
                json.dumps(session.metadata), session.created_at, self._ttl,
            )
        if created is None:
            raise SessionExists(session.id)
        if time.monotonic() >= self._next_cleanup:
            self._next_cleanup = time.monotonic() + self._cleanup_interval
            try:
                await self.purge_expired()
            except StoreUnavailable as exc:
                log.warning("expired sessions not purged: %s", exc)

    async def get(self, session_id: str) -> Session:
        return await self._read(session_id, operation="get", from_index=0)

    async def refresh(self, session: Session) -> Session:
        fresh = await self._read(session.id, operation="refresh", from_index=len(session.turns))
        if fresh.created_at != session.created_at:
            return await self.get(session.id)
        if not fresh.turns:
            return session
        return replace(session, turns=(*session.turns, *fresh.turns))

    async def _read(self, session_id: str, *, operation: str, from_index: int) -> Session:
        """The session with its turns from ``from_index`` on."""
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        async with self._connection(operation) as conn:
            # One statement, one snapshot: the header and every turn agree.
            rows = await conn.fetch(
                """
                SELECT s.id, s.agent, s.prompt_version, s.metadata, s.created_at,
                       t.turn_index, t.messages, t.input_tokens, t.output_tokens,
                       t.cost_usd, t.finish_reason, t.created_at AS turn_created_at
                FROM omnia_sessions s
                LEFT JOIN omnia_turns t ON t.session_pk = s.pk AND t.turn_index >= $3
                WHERE s.namespace = $1 AND s.id = $2 AND s.expires_at > now()
                ORDER BY t.turn_index
                """,
                self._namespace, session_id, from_index,
            )
        if not rows:
            raise SessionNotFound(session_id)
        first = rows[0]
        turns = tuple(
            Turn(
                index=row["turn_index"],
                messages=tuple(json.loads(row["messages"])),
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cost_usd=row["cost_usd"],
                finish_reason=row["finish_reason"],
                created_at=row["turn_created_at"],
            )
            for row in rows
            if row["turn_index"] is not None
        )
        return Session(
            id=first["id"],
            agent=first["agent"],
            prompt_version=first["prompt_version"],
            metadata=json.loads(first["metadata"]),
            created_at=first["created_at"],
            turns=turns,
        )

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        # The size bound counts the same bytes as the other stores: the turn's JSON.
        size = len(json.dumps(turn.to_dict()))
        async with self._transaction("append_turn") as conn:
            row = await conn.fetchrow(
                """
                SELECT pk, turn_count, bytes FROM omnia_sessions
                WHERE namespace = $1 AND id = $2 AND expires_at > now()
                FOR UPDATE
                """,
                self._namespace, session_id,
            )
            if row is None:
                raise SessionNotFound(session_id)
            count = row["turn_count"]
            if turn.index != count:
                raise TurnConflict(f"session {session_id}: expected turn {count}, got {turn.index}")
            if count >= self._max_turns:
                raise SessionFull(f"session {session_id} reached {self._max_turns} turns")
            if row["bytes"] + size > self._max_bytes:
                raise SessionFull(f"session {session_id} would exceed {self._max_bytes} bytes")
            try:
                await conn.execute(
                    """
                    INSERT INTO omnia_turns
                        (session_pk, turn_index, messages, input_tokens, output_tokens,
                         cost_usd, finish_reason, created_at, bytes)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    """,
                    row["pk"], turn.index, json.dumps(list(turn.messages)), turn.input_tokens,
                    turn.output_tokens, turn.cost_usd, turn.finish_reason, turn.created_at, size,
                )
            except asyncpg.UniqueViolationError:
                # Unreachable while every writer takes the row lock; the
                # constraint is the backstop if one ever does not.
                raise TurnConflict(f"session {session_id}: turn {turn.index} exists") from None
            await conn.execute(
                """
                UPDATE omnia_sessions
                SET turn_count = turn_count + 1, bytes = bytes + $2,
                    expires_at = now() + make_interval(secs => $3)
                WHERE pk = $1
                """,
                row["pk"], size, self._ttl,
            )

    async def ping(self) -> None:
        async with self._connection("ping") as conn:
            await conn.fetchval("SELECT 1")

    async def purge_expired(self) -> int:
        """Delete up to ``cleanup_batch`` expired sessions (all namespaces); returns how many.

        Replicas purging at once skip each other's rows instead of waiting.
        """
        async with self._connection("purge_expired") as conn:
            deleted = await conn.fetch(
                """
                DELETE FROM omnia_sessions WHERE pk IN (
                    SELECT pk FROM omnia_sessions WHERE expires_at <= now()
                    ORDER BY expires_at LIMIT $1
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING pk
                """,
                self._cleanup_batch,
            )
        return len(deleted)

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await pool.close()
            except (TimeoutError, *_DRIVER_ERRORS):
                pool.terminate()

    def connection(self, operation: str) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection to the migrated database, with the store's bounds and errors.

        For Omnia's other tables in the same database (the budget counters);
        see ``_connection``.
        """
        return self._connection(operation)

    @asynccontextmanager
    async def _connection(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, the whole operation bounded by the timeout.

        Driver and socket errors become ``StoreUnavailable``; the session
        errors raised inside pass through. A connection whose operation
        failed any other way (error, timeout, cancellation) is in an unknown
        state: it is closed at once, not cleaned up, since cleaning up would
        wait on the very server that just failed; the server rolls back
        whatever it had open.
        """
        if self._closed:
            raise StoreUnavailable("postgres: the store is closed")
        try:
            async with asyncio.timeout(self._timeout):
                pool = await self._connected_pool()
                conn = await pool.acquire()
                healthy = False
                try:
                    yield conn
                    healthy = True
                except SessionError:
                    healthy = True
                    raise
                finally:
                    if not healthy:
                        conn.terminate()
                    await pool.release(conn)
        except TimeoutError as exc:
            raise StoreUnavailable(f"postgres {operation}: no answer within {self._timeout:g}s") from exc
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"postgres {operation}: {exc or type(exc).__name__}") from exc

    @asynccontextmanager
    async def _transaction(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        """``_connection`` inside BEGIN … COMMIT.

        Not ``conn.transaction()``: on a failure it would send ROLLBACK and
        wait for the answer of a server that may be gone. Here a refusal
        (a session error) rolls back, anything else closes the connection.
        """
        async with self._connection(operation) as conn:
            await conn.execute("BEGIN")
            try:
                yield conn
            except SessionError:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def _connected_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_connections,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    max_inactive_connection_lifetime=60.0,
                )
                try:
                    async with pool.acquire() as conn:
                        await migrate(conn)
                except BaseException:
                    pool.terminate()
                    raise
                self._pool = pool
        return self._pool
