"""Where an agent's ready pods are: the activator's one view of the cluster.

Two implementations share this interface: ``kubernetes`` reads the agent
Service's EndpointSlices (the real thing), ``memory`` is set by hand (the
tests' seam, and a way to run the activator without a cluster).

An agent's *ready addresses* are the Ready endpoints of its Service other
than the activator's own slice (``<agent>-activator``, which the operator
adds while the agent is at zero and which points back at the activator):
each is a pod IP with the facade's port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from omnia.activator.hosts import AgentRef


@dataclass(frozen=True, order=True)
class Address:
    """One ready pod of an agent: its IP and facade port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def activator_slice_name(agent: str) -> str:
    """The EndpointSlice the operator points at the activator while ``agent`` is at zero."""
    return f"{agent}-activator"


class Backends(Protocol):
    async def ready(self, agent: AgentRef) -> Sequence[Address]:
        """The agent's ready addresses now (one read)."""
        ...

    def watch(self, agent: AgentRef) -> AsyncIterator[Sequence[Address]]:
        """The agent's ready addresses, then again each time they may have changed.

        Runs until the consuming task is cancelled (which closes what it
        holds); errors talking to the cluster are retried inside, not raised.
        """
        ...

    async def scale_to_zero_namespaces(self, name: str) -> Sequence[str]:
        """The namespaces holding a scale-to-zero AgentRuntime called ``name``."""
        ...
