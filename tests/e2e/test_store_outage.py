"""A session store outage, seen by a client of a real runtime + facade pair.

SPEC §5: a store outage yields error frames and a failing ``/readyz``, then
recovery without restart. Redis here keeps an append-only file, so the
session outlives the outage and the same connection carries on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from omnia.config import AgentConfig, ProviderConfig, SessionConfig
from omnia.testing import servers

from .processes import AgentProcesses

pytestmark = pytest.mark.services

FRAME_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def redis_server() -> Iterator[servers.RedisServer]:
    server = servers.start_for_pytest(servers.RedisServer, appendonly=True)
    yield server
    server.close()


@pytest.fixture
def agent(tmp_path, redis_server) -> Iterator[AgentProcesses]:
    config = AgentConfig(
        name="outage-agent",
        provider=ProviderConfig(type="mock", model="mock"),
        session=SessionConfig(type="redis", url_env="OMNIA_SESSION_URL"),
    )
    processes = AgentProcesses(config, tmp_path, env={"OMNIA_SESSION_URL": redis_server.url})
    try:
        yield processes.start()
    finally:
        processes.stop()


async def _frame(ws) -> dict:
    async with asyncio.timeout(FRAME_TIMEOUT_SECONDS):
        return json.loads(await ws.recv())


async def _send(ws, text: str) -> dict:
    """Send one message; returns its last frame (``done`` or ``error``)."""
    await ws.send(json.dumps({"type": "message", "content": text}))
    while True:
        frame = await _frame(ws)
        if frame["type"] in ("done", "error"):
            return frame


async def _readyz(url: str) -> int:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return (await client.get(f"{url}/readyz")).status_code


async def test_store_outage_gives_error_frames_and_unready_then_recovers_without_restart(agent, redis_server):
    async with websockets.connect(agent.ws_url) as ws:
        await _frame(ws)  # connected
        assert (await _send(ws, "before"))["type"] == "done"

        redis_server.stop()
        assert await _readyz(agent.url) == 503
        failed = await _send(ws, "during")
        assert (failed["type"], failed["code"], failed["retryable"]) == ("error", "STORE_UNAVAILABLE", True)

        redis_server.start()
        assert await _readyz(agent.url) == 200
        done = await _send(ws, "after")
        assert (done["type"], done["turn_index"]) == ("done", 1)
    assert agent.runtime.poll() is None and agent.facade.poll() is None, "nothing was restarted"
