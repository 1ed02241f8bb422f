"""Demand for agents at zero: the connections held for each, and who listens.

The proxy ``hold``s a connection while it waits for an agent's pod, and the
external scaler reads the counts (``IsActive``, ``GetMetrics``) and
``subscribe``s to be told the moment a connection is held, which is what
makes KEDA wake the agent without waiting for its polling interval.

``max_held`` bounds the connections held in all, and ``max_held_per_agent``
those held for one agent, so that a client flooding one agent at zero cannot
take the places every other agent (tenant) of the activator needs to wake:
one more is refused (:class:`HeldLimit`), never queued. A plain HTTP request that finds an agent
at zero is answered at once, but ``request``s a wake-up: the agent counts
as active for ``remember_seconds`` (the wake timeout), so a client retrying
after ``Retry-After`` finds it up.

Plain bookkeeping on one event loop: no sockets, tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

from omnia.activator.hosts import AgentRef


class HeldLimit(Exception):
    """``max_held`` connections are held already, or ``max_held_per_agent`` for this agent."""


class Demand:
    def __init__(self, *, max_held: int, remember_seconds: float, max_held_per_agent: int | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.max_held = max_held
        self.max_held_per_agent = max_held if max_held_per_agent is None else max_held_per_agent
        self._remember_seconds = remember_seconds
        self._clock = clock or asyncio.get_running_loop().time
        self._held: Counter[AgentRef] = Counter()
        self._requested: dict[AgentRef, float] = {}
        self._listeners: set[Callable[[AgentRef], None]] = set()

    @property
    def total_held(self) -> int:
        return self._held.total()

    def held(self, agent: AgentRef) -> int:
        return self._held[agent]

    def requested(self, agent: AgentRef) -> bool:
        """Whether a connection is held for ``agent`` or a request for it came within ``remember_seconds``."""
        if self._held[agent]:
            return True
        at = self._requested.get(agent)
        if at is not None and self._clock() - at > self._remember_seconds:
            del self._requested[agent]
            at = None
        return at is not None

    @contextlib.contextmanager
    def hold(self, agent: AgentRef) -> Iterator[None]:
        """Count a connection as held for ``agent`` for the ``with`` block; :class:`HeldLimit` when full."""
        if self.total_held >= self.max_held:
            raise HeldLimit(f"{self.total_held} connections are waiting for agents to start already")
        if self._held[agent] >= self.max_held_per_agent:
            raise HeldLimit(f"{self._held[agent]} connections are waiting for agent {agent} to start already")
        self._held[agent] += 1
        self._notify(agent)
        try:
            yield
        finally:
            self._held[agent] -= 1
            if not self._held[agent]:
                del self._held[agent]

    def request(self, agent: AgentRef) -> None:
        """Record a request that found ``agent`` at zero (see the module docstring)."""
        self._requested[agent] = self._clock()
        self._notify(agent)

    @contextlib.contextmanager
    def subscribe(self, listener: Callable[[AgentRef], None]) -> Iterator[None]:
        """Call ``listener(agent)`` at each new held connection or request, for the ``with`` block."""
        self._listeners.add(listener)
        try:
            yield
        finally:
            self._listeners.discard(listener)

    def _notify(self, agent: AgentRef) -> None:
        for listener in list(self._listeners):
            listener(agent)
