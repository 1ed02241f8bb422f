"""Waiting for an agent's first ready pod, one watch per agent.

Any number of connections may wait for the same agent; they share one
``Backends.watch`` of it, started by the first waiter and stopped when the
last one leaves, so a thousand held connections cost the API server one
watch, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from omnia.activator.backends import Address, Backends
from omnia.activator.hosts import AgentRef


class _Watch:
    def __init__(self, backends: Backends, agent: AgentRef) -> None:
        self.addresses: Sequence[Address] = ()
        self.ready = asyncio.Event()
        self.waiters = 0
        self.task = asyncio.create_task(self._follow(backends, agent), name=f"omnia-activator-watch-{agent}")

    async def _follow(self, backends: Backends, agent: AgentRef) -> None:
        async for addresses in backends.watch(agent):
            self.addresses = addresses
            if addresses:
                self.ready.set()
            else:
                self.ready.clear()


class Wakeups:
    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._watches: dict[AgentRef, _Watch] = {}

    async def ready(self, agent: AgentRef) -> Sequence[Address]:
        """The agent's ready addresses, as soon as there is at least one.

        Waits without bound: the caller sets the deadline (``asyncio.timeout``).
        Cancelling it leaves the wait; the last waiter to leave stops the
        agent's watch.
        """
        watch = self._watches.get(agent)
        if watch is None:
            watch = self._watches[agent] = _Watch(self._backends, agent)
        watch.waiters += 1
        try:
            while not watch.addresses:
                await _either(watch.ready.wait(), watch.task)
            return watch.addresses
        finally:
            watch.waiters -= 1
            if not watch.waiters:
                del self._watches[agent]
                watch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task

    async def aclose(self) -> None:
        for watch in list(self._watches.values()):
            watch.task.cancel()


async def _either(event_wait, task: asyncio.Task) -> None:
    """Wait for ``event_wait``; raise what ``task`` (the watch) raised if it ends first."""
    waiter = asyncio.ensure_future(event_wait)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done() and not waiter.done():
        task.result()
        raise RuntimeError("the watch of the agent's endpoints ended")
