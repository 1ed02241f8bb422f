"""The stores every contract test runs against.

Each parameter builds a fresh, empty store; durable stores join this list
with their server fixtures, and the whole contract runs against them too.
"""

from __future__ import annotations

import pytest

from omnia.sessions import MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[pytest.param("memory", id="memory")])
async def store(request, clock):
    if request.param == "memory":
        made = MemoryStore(ttl_seconds=60, max_turns=5, max_bytes=10_000, clock=clock)
    yield made
    await made.aclose()
