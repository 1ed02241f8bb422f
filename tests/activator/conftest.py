"""A real agent (``omnia runtime`` + ``omnia facade`` processes, mock model) and activators in front of it.

The agent runs for the whole module; "waking" it is making its address
appear in the activator's in-memory backends, exactly what a new ready
EndpointSlice does in a cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from omnia.activator import ActivatorServer, Address, MemoryBackends
from tests.e2e.processes import AgentProcesses

from .harness import AGENT, agent_config


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[AgentProcesses]:
    processes = AgentProcesses(agent_config(), tmp_path_factory.mktemp("agent"))
    try:
        yield processes.start()
    finally:
        processes.stop()


@pytest.fixture
def agent_address(agent: AgentProcesses) -> Address:
    return Address("127.0.0.1", agent.port)


@pytest.fixture
def backends() -> MemoryBackends:
    backends = MemoryBackends()
    backends.add_agent(AGENT)
    return backends


StartActivator = Callable[..., Awaitable[ActivatorServer]]


@pytest.fixture
async def start_activator(backends: MemoryBackends) -> AsyncIterator[StartActivator]:
    started: list[ActivatorServer] = []

    async def start(**options) -> ActivatorServer:
        server = ActivatorServer(backends=options.pop("backends", backends), host="127.0.0.1", port=0, scaler_port=0,
                                 drain_timeout=options.pop("drain_timeout", 2.0), **options)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def activator(start_activator: StartActivator) -> ActivatorServer:
    return await start_activator()
