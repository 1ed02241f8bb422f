"""The runtime process: provider, store and agent behind a gRPC server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping

import grpc

from omnia._proto.omnia.runtime.v1 import runtime_pb2_grpc as pb_grpc
from omnia.agent import Agent
from omnia.config import AgentConfig
from omnia.providers import create_provider
from omnia.runtime.service import AgentRuntimeService
from omnia.sessions import create_store
from omnia.tools import Toolbox

log = logging.getLogger(__name__)

MAX_GRPC_MESSAGE_BYTES = 16 * 1024 * 1024
TOOL_DISCOVERY_WAIT_SECONDS = 10.0


def build_agent(config: AgentConfig, *, env: Mapping[str, str], toolbox: Toolbox) -> Agent:
    """The agent, its tools served by ``toolbox`` (which the caller starts and closes)."""
    agent = Agent(
        config=config,
        provider=create_provider(config.provider, env=env),
        store=create_store(config.session, env=env, namespace=f"{config.namespace}/{config.name}"),
        executor=toolbox,
        tools=toolbox,
    )
    agent.check()
    return agent


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
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port


async def serve(
    config: AgentConfig, *, address: str, env: Mapping[str, str] | None = None
) -> None:
    """Run the runtime until SIGTERM or SIGINT, then drain and stop.

    Tool servers get up to ``TOOL_DISCOVERY_WAIT_SECONDS`` to list their
    tools before the first conversation; one that is down does not stop the
    runtime, its tools join when it answers.
    """
    env = os.environ if env is None else env
    toolbox = Toolbox(config.tools, env=env)
    agent = build_agent(config, env=env, toolbox=toolbox)
    await toolbox.start(wait=TOOL_DISCOVERY_WAIT_SECONDS)
    service = AgentRuntimeService(agent)
    server, port = await start(service, address=address)
    log.info("runtime serving", extra={"address": address, "port": port, "agent": config.name})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    grace = config.facade.drain_timeout_seconds
    await service.drain(grace=grace)
    await server.stop(grace=1.0)
    await toolbox.aclose()
    await agent.provider.aclose()
    await agent.store.aclose()
