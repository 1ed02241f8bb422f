"""Backends set by hand: the in-memory stand-in for the cluster.

``set_ready`` changes an agent's ready addresses and wakes every watch of
it, as a new EndpointSlice would; ``add_agent`` declares a scale-to-zero
agent, for bare-name Hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from omnia.activator.backends import Address
from omnia.activator.hosts import AgentRef


class MemoryBackends:
    def __init__(self) -> None:
        self._ready: dict[AgentRef, tuple[Address, ...]] = {}
        self._agents: set[AgentRef] = set()
        self._changed = asyncio.Condition()
        self._version = 0
        self.watching: dict[AgentRef, int] = {}
        """How many watches of each agent are open (tests check they are closed)."""

    def add_agent(self, agent: AgentRef) -> None:
        self._agents.add(agent)

    async def set_ready(self, agent: AgentRef, addresses: Iterable[Address]) -> None:
        self._ready[agent] = tuple(addresses)
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def ready(self, agent: AgentRef) -> Sequence[Address]:
        return self._ready.get(agent, ())

    async def watch(self, agent: AgentRef) -> AsyncIterator[Sequence[Address]]:
        self.watching[agent] = self.watching.get(agent, 0) + 1
        seen = -1
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._version != seen)
                    seen = self._version
                    current = self._ready.get(agent, ())
                yield current
        finally:
            self.watching[agent] -= 1

    async def scale_to_zero_namespaces(self, name: str) -> Sequence[str]:
        return sorted(agent.namespace for agent in self._agents if agent.name == name)
