"""The runtime process: provider, store and agent behind a gRPC server.

Two servers, one event loop: the conversation service (``omnia.runtime.v1``)
on the address the facade dials, loopback in a pod, and, when asked for, the
standard ``grpc.health.v1`` service on an address the kubelet's gRPC probe
reaches. The health answers come from the same event loop as the
conversations, so a runtime whose loop is wedged stops answering its probe
and is restarted. They say nothing of the session store or the provider: an
outage of those must not restart every pod, and the facade's ``/readyz``
reports them. ``SERVING`` from start-up until the drain starts, then
``NOT_SERVING``. Started from a config file, the runtime follows a change of
its prompt rollout in that file without a restart (``omnia.runtime.routing``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from omnia._proto.omnia.runtime.v1 import runtime_pb2
from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc
from omnia import budgets
from omnia.agent import Agent
from omnia.config import AgentConfig
from omnia.providers import ProviderError, create_provider
from omnia.runtime.routing import ConfigWatcher
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import create_store
from omnia.termination import StartupError
from omnia.tools import Toolbox

log = logging.getLogger(__name__)

MAX_GRPC_MESSAGE_BYTES = 16 * 1024 * 1024
TOOL_DISCOVERY_WAIT_SECONDS = 10.0


RUNTIME_SERVICE = runtime_pb2.DESCRIPTOR.services_by_name["AgentRuntime"].full_name
"""The service name whose health ``grpc.health.v1`` reports besides the server's own (``""``)."""


def build_agent(config: AgentConfig, *, env: Mapping[str, str], toolbox: Toolbox) -> Agent:
    """The agent, its tools served by ``toolbox`` (which the caller starts and closes).

    Raises what the configuration cannot do: ``StoreConfigError``,
    ``PromptError`` and ``CredentialError`` (all ``ValueError``), or
    ``ProviderError`` for a provider that cannot be made (a key not set, a
    model file missing).
    """
    store = create_store(config.session, env=env, namespace=f"{config.namespace}/{config.name}")
    agent = Agent(
        config=config,
        provider=create_provider(config.provider, env=env),
        store=store,
        executor=toolbox,
        tools=toolbox,
        budgets=_budgets(config, env=env),
    )
    agent.check()
    return agent


def _budgets(config: AgentConfig, *, env: Mapping[str, str]) -> budgets.Budgets | None:
    """The agent's budgets, counted in its session store; ``None`` when it has no limit."""
    if not config.budget.enforced:
        return None
    return budgets.Budgets(
        config.budget,
        namespace=config.namespace,
        agent=config.name,
        counter=budgets.create_counter(config.session, env=env),
    )


async def start(
    service: AgentRuntimeService, *, address: str
) -> tuple[grpc.aio.Server, int]:
    """Start serving ``service`` on ``address``; returns the server and its bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_AgentRuntimeServicer_to_server(service, server)
    port = _listen(server, address)
    await server.start()
    return server, port


async def start_health(*, address: str) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Serve ``grpc.health.v1`` on ``address``: SERVING for the server and for :data:`RUNTIME_SERVICE`.

    Returns the server, its bound port and the servicer (whose
    ``enter_graceful_shutdown`` turns every status to NOT_SERVING).
    """
    servicer = health.aio.HealthServicer()
    for name in ("", RUNTIME_SERVICE):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = _listen(server, address)
    await server.start()
    return server, port, servicer


def _listen(server: grpc.aio.Server, address: str) -> int:
    """Add ``address`` to ``server``; OSError when it cannot be bound (grpc says so with 0 or RuntimeError)."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


@dataclass
class Running:
    """A started runtime: conversations on ``port``; health on ``health_port`` when ``health`` is set."""

    agent: Agent
    toolbox: Toolbox
    service: AgentRuntimeService
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer | None = None
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    watcher: asyncio.Task | None = None
    """Follows the config file's prompt rollout (``omnia.runtime.routing``), when launched with its path."""

    async def stop(self, *, grace: float) -> None:
        """Drain, then stop serving and close the agent's connections.

        Health turns NOT_SERVING first and keeps answering while the
        conversations get up to ``grace`` seconds to end (see
        ``AgentRuntimeService.drain``); it stops last.
        """
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        await self.service.drain(grace=grace)
        await self.server.stop(grace=1.0)
        if self.health_server is not None:
            await self.health_server.stop(grace=None)
        await self.toolbox.aclose()
        await self.agent.provider.aclose()
        await self.agent.store.aclose()
        if self.agent.budgets is not None:
            await self.agent.budgets.counter.aclose()


async def launch(
    config: AgentConfig,
    *,
    address: str,
    health_address: str | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Running:
    """Build the agent and start serving it on ``address``, and health on ``health_address`` if given.

    Tool servers get up to ``TOOL_DISCOVERY_WAIT_SECONDS`` to list their
    tools before the first conversation; one that is down does not stop the
    runtime, its tools join when it answers. Raises ``StartupError`` when
    the configuration or the environment cannot run the agent, or an address
    cannot be listened on. With ``config_path`` (the file ``config`` was
    read from), a change of its prompt rollout is applied while serving.
    """
    env = os.environ if env is None else env
    try:
        toolbox = Toolbox(config.tools, env=env)
        agent = build_agent(config, env=env, toolbox=toolbox)
    except (ValueError, ProviderError) as exc:
        raise StartupError(str(exc)) from None
    await _prepare(agent)
    await toolbox.start(wait=TOOL_DISCOVERY_WAIT_SECONDS)
    service = AgentRuntimeService(agent)
    server = None
    try:
        server, port = await start(service, address=address)
        running = Running(agent=agent, toolbox=toolbox, service=service, server=server, port=port)
        if health_address:
            running.health_server, running.health_port, running.health = await start_health(address=health_address)
    except OSError as exc:
        if server is not None:
            await server.stop(grace=None)
        await toolbox.aclose()
        raise StartupError(str(exc)) from None
    if config_path is not None:
        running.watcher = asyncio.create_task(ConfigWatcher(agent, config_path).run())
    return running


async def _prepare(agent: Agent) -> None:
    """Load the model before serving: nobody is told the agent is ready while it still loads."""
    provider = agent.provider
    log.info("preparing the model", extra={"provider": provider.type, "model": provider.model})
    started = time.monotonic()
    try:
        await provider.prepare()
    except ProviderError as exc:
        await provider.aclose()
        raise StartupError(f"the {provider.type} model {provider.model} cannot be loaded: {exc}") from None
    log.info("model ready", extra={"provider": provider.type, "model": provider.model,
                                    "seconds": round(time.monotonic() - started, 2)})


async def serve(
    config: AgentConfig,
    *,
    address: str,
    health_address: str | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> None:
    """Run the runtime (see :func:`launch`) until SIGTERM or SIGINT, then drain and stop."""
    running = await launch(config, address=address, health_address=health_address, env=env,
                           config_path=config_path)
    log.info("runtime serving", extra={"address": address, "port": running.port, "agent": config.name,
                                       "health_port": running.health_port})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await running.stop(grace=config.facade.drain_timeout_seconds)
