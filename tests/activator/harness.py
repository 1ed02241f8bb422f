"""The agent the activator tests wake, and helpers to talk to an activator."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import ClientConnection, connect

from omnia.activator import ActivatorServer, AgentRef
from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply

AGENT = AgentRef(namespace="team-a", name="support-agent")
HOST = "support-agent.team-a.svc.cluster.local"
REPLY = "Hello from the mock model."


def agent_config() -> AgentConfig:
    script = MockScript(replies=[ScriptedReply(text=REPLY, chunk_size=1, chunk_delay_ms=10)])
    return AgentConfig(name=AGENT.name, provider=ProviderConfig(type="mock", model="mock", mock=script))


def dial(server: ActivatorServer, *, host: str = HOST, path: str = "/ws", **options) -> connect:
    """A WebSocket to ``server`` that names ``host``, as a client of the agent's Service does."""
    return connect(f"ws://{host}:{server.port}{path}", host="127.0.0.1", port=server.port, proxy=None,
                   open_timeout=10, **options)


async def held(server: ActivatorServer, count: int) -> None:
    """Wait until ``count`` connections are held (accepted, waiting for a pod)."""
    assert server.app is not None
    while server.app.demand.total_held != count:
        await asyncio.sleep(0.01)


async def frame(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=30))


async def turn(ws: ClientConnection, text: str) -> list[dict]:
    """Send a message and read up to its ``done`` (or ``error``)."""
    await ws.send(json.dumps({"type": "message", "content": text}))
    frames = []
    while True:
        frames.append(await frame(ws))
        if frames[-1]["type"] in ("done", "error"):
            return frames
