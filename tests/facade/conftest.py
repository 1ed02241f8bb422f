from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import CollectorRegistry

from omnia.config import FacadeConfig
from omnia.facade import auth
from omnia.facade.app import create_app
from omnia.facade.runtime_client import RuntimeClient
from omnia.facade.server import FacadeServer

from .harness import RuntimeDouble

AGENT = "support-agent"
"""The AgentRuntime name the test facades report in their ``agent`` metric label."""

# Generous limits so that only the tests about limits meet them.
TEST_CONFIG = FacadeConfig(
    port=0,
    messages_per_second=10_000,
    message_burst=10_000,
    drain_timeout_seconds=2.0,
)


@dataclass
class RunningFacade:
    server: FacadeServer
    registry: CollectorRegistry
    runtime: RuntimeClient

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://") + "/ws"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=5.0)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def connections(self) -> float:
        """The autoscaling gauge, ``active_connections{agent=AGENT}``."""
        return self.metric("active_connections", {"agent": AGENT})


StartFacade = Callable[..., Awaitable[RunningFacade]]


@pytest.fixture
async def runtime() -> AsyncIterator[RuntimeDouble]:
    double = RuntimeDouble()
    await double.start()
    yield double
    await double.kill()


@pytest.fixture
async def start_facade(runtime: RuntimeDouble) -> AsyncIterator[StartFacade]:
    """Start a facade on a free loopback port; each call may use its own config."""
    running: list[RunningFacade] = []

    async def start(
        config: FacadeConfig = TEST_CONFIG,
        *,
        authenticator: auth.Authenticator | None = None,
        open_timeout: float = 2.0,
        linger_seconds: float = 0.0,
    ) -> RunningFacade:
        client = RuntimeClient.connect(
            runtime.address, open_timeout=open_timeout, health_timeout=0.5
        )
        registry = CollectorRegistry()
        app = create_app(
            config,
            agent=AGENT,
            runtime=client,
            registry=registry,
            authenticator=authenticator or auth.Anonymous(),
        )
        server = FacadeServer(app, config=config, host="127.0.0.1", port=0, linger_seconds=linger_seconds)
        await server.start()
        facade = RunningFacade(server=server, registry=registry, runtime=client)
        running.append(facade)
        return facade

    yield start
    for facade in running:
        await facade.server.stop()
        await facade.runtime.close()


@pytest.fixture
async def facade(start_facade: StartFacade) -> RunningFacade:
    return await start_facade()
