"""What only the PostgreSQL store does: schema migrations and purging expired rows."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from omnia.sessions import Session, Turn
from omnia.sessions.postgres import MIGRATIONS, PostgresStore, migrate

pytestmark = pytest.mark.services


@pytest.fixture
def database_url(postgres_server) -> str:
    """A database of the test's own, so it sees the schema being created from nothing."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


async def test_replicas_starting_at_once_apply_each_migration_exactly_once(database_url):
    """Eight replicas reach an empty database together; the advisory lock lets one migrate
    and the others find the schema ready, none failing."""
    stores = [PostgresStore(dsn=database_url, namespace=f"agent-{n}") for n in range(8)]
    try:
        await asyncio.gather(*(store.ping() for store in stores))
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT version, name FROM omnia_schema_migrations ORDER BY version")
            assert [(row["version"], row["name"]) for row in rows] == [(v, name) for v, name, _ in MIGRATIONS]
            assert await migrate(conn) == [], "a migrated database needs nothing more"
        finally:
            await conn.close()
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))


async def test_purge_deletes_expired_sessions_with_their_turns_and_keeps_live_ones(database_url):
    short = PostgresStore(dsn=database_url, namespace="short", ttl_seconds=0.3)
    long = PostgresStore(dsn=database_url, namespace="long", ttl_seconds=60)
    try:
        for store in (short, long):
            for name in ("a", "b"):
                await store.create(Session(id=name, agent="x", prompt_version="1"))
                await store.append_turn(name, Turn(index=0, messages=({"role": "user", "content": name},)))
        await asyncio.sleep(0.5)
        assert await long.purge_expired() == 2, "the expired sessions of every namespace"
        assert await long.purge_expired() == 0
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM omnia_turns") == 2
            assert await conn.fetchval("SELECT count(DISTINCT namespace) FROM omnia_sessions") == 1
        finally:
            await conn.close()
        assert len((await long.get("a")).turns) == 1
    finally:
        await short.aclose()
        await long.aclose()
