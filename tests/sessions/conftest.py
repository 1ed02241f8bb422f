"""The stores every contract test runs against, and the servers behind them.

``make_store`` is parametrised over the three stores; each store it makes is
fresh and empty (a namespace of its own on the shared servers), so tests
never see each other's sessions. ``store`` is the usual one: 60 s TTL, at
most 5 turns and 10,000 bytes per session.

One Redis and one PostgreSQL server serve the whole test session, started
only when a test needs them. Without the server binaries the tests skip on a
developer's machine but fail in CI, where a silent skip would hide that
nothing ran. Outage tests stop and restart these servers; the fixtures give
them back running whatever the test did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from omnia.sessions import MemoryStore
from omnia.sessions.postgres import PostgresStore
from omnia.sessions.redis import RedisStore
from omnia.testing import servers

# Short enough that the outage tests do not wait long, long enough for a
# loaded two-core CI machine.
TIMEOUT_SECONDS = 1.5


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.RedisServer]:
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.PostgresServer]:
    server = servers.start_for_pytest(servers.PostgresServer)
    yield server
    server.close()


@pytest.fixture
def durable_redis_server() -> Iterator[servers.RedisServer]:
    """A Redis of the test's own that appends every write to its AOF, for crash tests."""
    server = servers.start_for_pytest(servers.RedisServer, appendonly=True)
    yield server
    server.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def build_store(
    kind: str, *, url: str | None, namespace: str, timeout_seconds: float = TIMEOUT_SECONDS, **bounds
):
    """A store of ``kind``; ``bounds`` as the stores take them."""
    if kind == "memory":
        return MemoryStore(**bounds)
    if kind == "redis":
        return RedisStore.from_url(url, namespace=namespace, timeout_seconds=timeout_seconds, **bounds)
    return PostgresStore(
        dsn=url, namespace=namespace, timeout_seconds=timeout_seconds, max_connections=20, **bounds
    )


STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
    pytest.param("postgres", id="postgres", marks=pytest.mark.services),
]
DURABLE_STORES = [param for param in STORES if param.values[0] != "memory"]


class StoreFactory:
    """Makes stores of one kind and closes them all when the test ends."""

    def __init__(self, kind: str, server: servers.Server | None) -> None:
        self.kind = kind
        self.server = server
        self._made: list = []
        self._settings: dict[int, dict] = {}

    def __call__(
        self,
        *,
        ttl_seconds: float = 60,
        max_turns: int = 5,
        max_bytes: int = 10_000,
        namespace: str | None = None,
        timeout_seconds: float = TIMEOUT_SECONDS,
    ):
        """A store in a fresh namespace unless one is given.

        The short default timeout lets outage tests fail fast; a test of
        ordering under load gives a long one, since a loaded machine may
        keep an answer (or a free pooled connection) for seconds.
        """
        settings = {
            "namespace": namespace or _namespace(),
            "ttl_seconds": ttl_seconds,
            "max_turns": max_turns,
            "max_bytes": max_bytes,
            "timeout_seconds": timeout_seconds,
        }
        store = build_store(self.kind, url=self.server.url if self.server else None, **settings)
        self._made.append(store)
        self._settings[id(store)] = settings
        return store

    def replica(self, store):
        """Another store object on the same server and namespace: what a second replica holds."""
        return self(**self._settings[id(store)])

    async def aclose(self) -> None:
        for store in self._made:
            await store.aclose()


def _server_for(kind: str, request: pytest.FixtureRequest, *, fixture: str | None = None) -> servers.Server | None:
    if kind == "memory":
        return None
    server = request.getfixturevalue(fixture or f"{kind}_server")
    if not server.running:  # an outage test that failed half-way
        server.start()
    return server


@pytest.fixture(params=STORES)
async def make_store(request: pytest.FixtureRequest):
    factory = StoreFactory(request.param, _server_for(request.param, request))
    yield factory
    await factory.aclose()
    if factory.server is not None and not factory.server.running:
        factory.server.start()


@pytest.fixture(params=DURABLE_STORES)
async def make_durable_store(request: pytest.FixtureRequest):
    """Stores whose server the test may stop, crash, freeze and restart."""
    factory = StoreFactory(request.param, _server_for(request.param, request))
    yield factory
    factory.server.resume()
    await factory.aclose()
    if not factory.server.running:
        factory.server.start()


@pytest.fixture(
    params=[
        pytest.param(("redis", "durable_redis_server"), id="redis-aof", marks=pytest.mark.services),
        pytest.param(("postgres", "postgres_server"), id="postgres", marks=pytest.mark.services),
    ]
)
async def make_crashable_store(request: pytest.FixtureRequest):
    """Stores whose server keeps every acknowledged write across a crash of its process."""
    kind, fixture = request.param
    factory = StoreFactory(kind, _server_for(kind, request, fixture=fixture))
    yield factory
    await factory.aclose()
    if not factory.server.running:
        factory.server.start()


@pytest.fixture
async def store(make_store: StoreFactory):
    return make_store()
