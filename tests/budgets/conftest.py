"""The counters every contract test runs against, on the session tests' servers.

Counters of one server are shared by all tests, so each test counts under
scopes of its own (``scope`` fixture).
"""

from __future__ import annotations

import uuid

import pytest

from omnia.budgets import MemoryCounter
from omnia.budgets.postgres import PostgresCounter
from omnia.budgets.redis import RedisCounter
from tests.sessions.conftest import postgres_server, redis_server  # noqa: F401  (fixtures)

COUNTERS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
    pytest.param("postgres", id="postgres", marks=pytest.mark.services),
]


class CounterFactory:
    """Makes counters of one kind on one server (each a replica's view) and closes them."""

    def __init__(self, kind: str, server) -> None:
        self.kind = kind
        self.server = server
        self._made: list = []
        self._memory = MemoryCounter()

    def __call__(self):
        if self.kind == "memory":
            return self._memory  # one process: every "replica" is the same counter
        if self.kind == "redis":
            counter = RedisCounter.from_url(self.server.url, timeout_seconds=5.0)
        else:
            counter = PostgresCounter(dsn=self.server.url, timeout_seconds=5.0, max_connections=10)
        self._made.append(counter)
        return counter

    async def aclose(self) -> None:
        for counter in self._made:
            await counter.aclose()


async def _factory(request: pytest.FixtureRequest):
    server = None if request.param == "memory" else request.getfixturevalue(f"{request.param}_server")
    if server is not None and not server.running:
        server.start()
    factory = CounterFactory(request.param, server)
    yield factory
    await factory.aclose()
    if server is not None and not server.running:  # an outage test
        server.start()


@pytest.fixture(params=COUNTERS)
async def make_counter(request: pytest.FixtureRequest):
    async for factory in _factory(request):
        yield factory


@pytest.fixture(params=[param for param in COUNTERS if param.values[0] != "memory"])
async def make_durable_counter(request: pytest.FixtureRequest):
    """Counters on a server the test may stop and start."""
    async for factory in _factory(request):
        yield factory


@pytest.fixture
async def counter(make_counter: CounterFactory):
    return make_counter()


@pytest.fixture
def scope() -> str:
    return f"agent:test-{uuid.uuid4().hex[:12]}/agent"
