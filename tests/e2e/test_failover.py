"""Failover between replicas that share a Redis session store.

The promise under test (SPEC §4, §5): ``?session_id=`` resumes a session on
any replica when the store is shared, and a turn the client saw ``done`` for
is never lost, whatever happens to the replica afterwards. Each replica is a
real runtime + facade process pair, as in a pod.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from redis.asyncio import Redis

from omnia.config import AgentConfig, MockScript, ProviderConfig, ScriptedReply, SessionConfig
from omnia.sessions.redis import RedisStore
from omnia.testing import servers

from .processes import AgentProcesses

pytestmark = pytest.mark.services

FRAME_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[servers.RedisServer]:
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.close()


@pytest.fixture
def replicas(tmp_path, redis_server) -> Iterator[tuple[AgentProcesses, AgentProcesses]]:
    """Two replicas of one agent on one Redis. The mock model echoes, except for
    ``slow`` messages, whose reply streams for seconds."""
    config = AgentConfig(
        name="failover-agent",
        provider=ProviderConfig(
            type="mock",
            model="mock",
            mock=MockScript(replies=[ScriptedReply(match="slow", text="word " * 60, chunk_size=5, chunk_delay_ms=100)]),
        ),
        session=SessionConfig(type="redis", url_env="OMNIA_SESSION_URL"),
    )
    started = []
    try:
        for name in ("replica-1", "replica-2"):
            workdir = tmp_path / name
            workdir.mkdir()
            started.append(AgentProcesses(config, workdir, env={"OMNIA_SESSION_URL": redis_server.url}).start())
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def _kill(replica: AgentProcesses) -> None:
    """SIGKILL the runtime and the facade: the pod is gone, nothing drains.

    The runtime goes first: a runtime that outlived its facade even briefly
    would see the hang-up and commit the cut turn as ``cancelled`` (which is
    what a client hang-up does), and the test is about a lost pod.
    """
    replica.kill_runtime()
    replica.facade.kill()
    replica.facade.wait()


async def _frame(ws) -> dict:
    async with asyncio.timeout(FRAME_TIMEOUT_SECONDS):
        return json.loads(await ws.recv())


async def _turn(ws, text: str) -> dict:
    """Send one message and read until its ``done``; returns the ``done`` frame."""
    await ws.send(json.dumps({"type": "message", "content": text}))
    while True:
        frame = await _frame(ws)
        if frame["type"] == "done":
            return frame
        assert frame["type"] == "chunk", frame


async def _history(redis_url: str, session_id: str) -> list[str]:
    """The user messages of the session, read from the shared store itself.

    The store's namespace is the runtime's choice; it is read off the key.
    """
    client = Redis.from_url(redis_url)
    try:
        [key] = await client.keys(f"omnia:*:session:{{{session_id}}}")
    finally:
        await client.aclose()
    namespace = key.decode().removeprefix("omnia:").removesuffix(f":session:{{{session_id}}}")
    store = RedisStore.from_url(redis_url, namespace=namespace)
    try:
        session = await store.get(session_id)
    finally:
        await store.aclose()
    return [turn.messages[0]["content"] for turn in session.turns]


async def test_client_resumes_on_the_other_replica_with_the_full_history(replicas, redis_server):
    one, two = replicas
    async with websockets.connect(one.ws_url) as ws:
        session_id = (await _frame(ws))["session_id"]
        for n in range(3):
            assert (await _turn(ws, f"message {n}"))["turn_index"] == n

    async with websockets.connect(f"{two.ws_url}?session_id={session_id}") as ws:
        connected = await _frame(ws)
        assert (connected["session_id"], connected["resumed"], connected["turns"]) == (session_id, True, 3)
        assert (await _turn(ws, "message 3"))["turn_index"] == 3

    assert await _history(redis_server.url, session_id) == [f"message {n}" for n in range(4)]


async def test_killing_a_replica_mid_turn_loses_no_turn_acknowledged_with_done(replicas, redis_server):
    """Replica 1 is SIGKILLed while it streams a reply; every turn it had confirmed is on replica 2."""
    one, two = replicas
    acknowledged = [f"message {n}" for n in range(3)]
    async with websockets.connect(one.ws_url) as ws:
        session_id = (await _frame(ws))["session_id"]
        for text in acknowledged:
            await _turn(ws, text)
        await ws.send(json.dumps({"type": "message", "content": "slow one, cut short"}))
        assert (await _frame(ws))["type"] == "chunk"
        _kill(one)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await _frame(ws)

    async with websockets.connect(f"{two.ws_url}?session_id={session_id}") as ws:
        connected = await _frame(ws)
        assert connected["turns"] == len(acknowledged), "the cut turn was never committed"
        assert (await _turn(ws, "after the failover"))["turn_index"] == len(acknowledged)

    assert await _history(redis_server.url, session_id) == [*acknowledged, "after the failover"]
