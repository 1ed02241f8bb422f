"""A WebSocket to an agent at zero waits in the activator, then is relayed to the agent's pod.

The agent is real (runtime and facade processes, mock model); so is the
activator's server, on loopback. The backends are in memory: giving the
agent an address is what a new ready EndpointSlice does in a cluster.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from omnia.activator import ActivatorServer, Address, AgentRef, MemoryBackends

from .harness import AGENT, REPLY, dial, frame, held, turn


def _reply(frames: list[dict]) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "chunk")


async def test_client_waits_for_the_agent_then_gets_connected_and_a_streamed_turn(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    """The first connection to an agent at zero is not refused: it is held until a pod is ready."""
    async with dial(activator) as ws:
        await held(activator, 1)
        waiting = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0.2)
        assert not waiting.done(), "the client was answered before the agent had a pod"
        assert activator.app is not None and activator.app.demand.held(AGENT) == 1

        await backends.set_ready(AGENT, [agent_address])
        connected = json.loads(await asyncio.wait_for(waiting, timeout=30))
        assert (connected["type"], connected["agent"]) == ("connected", AGENT.name)
        assert activator.app.demand.total_held == 0

        frames = await turn(ws, "hi")
        assert [f["type"] for f in frames[:-1]] == ["chunk"] * (len(frames) - 1) and len(frames) > 2
        assert frames[-1]["type"] == "done" and _reply(frames) == REPLY


async def test_frames_sent_before_connected_reach_the_agent_once_it_is_up(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    async with dial(activator) as ws:
        await held(activator, 1)
        await ws.send(json.dumps({"type": "message", "content": "are you there?"}))
        await backends.set_ready(AGENT, [agent_address])
        assert (await frame(ws))["type"] == "connected"
        frames = [await frame(ws)]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(await frame(ws))
        assert frames[-1]["type"] == "done" and _reply(frames) == REPLY


async def test_a_session_resumed_through_the_activator_keeps_its_history(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    """The query (``session_id``) reaches the pod as the client sent it."""
    await backends.set_ready(AGENT, [agent_address])
    async with dial(activator) as ws:
        session_id = (await frame(ws))["session_id"]
        await turn(ws, "first")
    async with dial(activator, path=f"/ws?session_id={session_id}") as ws:
        connected = await frame(ws)
    assert (connected["session_id"], connected["resumed"], connected["turns"]) == (session_id, True, 1)


async def test_the_pods_close_code_and_reason_reach_the_client(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    await backends.set_ready(AGENT, [agent_address])
    async with dial(activator, path="/ws?session_id=no-such-session") as ws:
        error = await frame(ws)
        with pytest.raises(ConnectionClosed):
            await frame(ws)
    assert (error["type"], error["code"]) == ("error", "SESSION_NOT_FOUND")
    assert ws.close_code == 4404


async def test_wake_timeout_is_a_retryable_runtime_unavailable_with_a_retry_hint(start_activator) -> None:
    activator = await start_activator(wake_timeout=0.5)
    async with dial(activator) as ws:
        error = await frame(ws)
        with pytest.raises(ConnectionClosed):
            await frame(ws)
    assert error["type"] == "error" and error["code"] == "RUNTIME_UNAVAILABLE"
    assert error["retryable"] is True and error["retry_after_seconds"] > 0
    assert ws.close_code == 1013
    assert activator.app is not None and activator.app.demand.total_held == 0


async def test_connections_beyond_max_held_are_refused_and_the_held_ones_keep_waiting(
    start_activator, backends: MemoryBackends, agent_address: Address
) -> None:
    activator = await start_activator(max_held=2)
    async with dial(activator) as first, dial(activator) as second:
        await held(activator, 2)
        async with dial(activator) as third:
            error = await frame(third)
            with pytest.raises(ConnectionClosed):
                await frame(third)
        assert (error["code"], error["retryable"], third.close_code) == ("RUNTIME_UNAVAILABLE", True, 1013)
        assert error["retry_after_seconds"] > 0
        assert activator.app is not None and activator.app.demand.total_held == 2

        await backends.set_ready(AGENT, [agent_address])
        assert (await frame(first))["type"] == "connected"
        assert (await frame(second))["type"] == "connected"


async def test_connections_beyond_max_held_per_agent_are_refused_while_other_agents_still_wake(
    start_activator, backends: MemoryBackends, agent_address: Address
) -> None:
    other = AgentRef(namespace="team-b", name="billing")
    backends.add_agent(other)
    activator = await start_activator(max_held=10, max_held_per_agent=1)
    async with dial(activator) as first:
        await held(activator, 1)
        async with dial(activator) as second:
            error = await frame(second)
        assert (error["code"], error["retryable"], second.close_code) == ("RUNTIME_UNAVAILABLE", True, 1013)
        assert "support-agent" in error["message"]
        async with dial(activator, host="billing.team-b.svc.cluster.local"):
            await held(activator, 2)
            assert activator.app is not None and activator.app.demand.held(other) == 1
        await backends.set_ready(AGENT, [agent_address])
        assert (await frame(first))["type"] == "connected"


async def test_a_client_that_leaves_while_held_is_released(
    activator: ActivatorServer, backends: MemoryBackends
) -> None:
    """Its place is given back at once, and the watch of its agent ends with the last waiter."""
    async with dial(activator):
        await held(activator, 1)
        assert backends.watching[AGENT] == 1
    await held(activator, 0)
    while backends.watching[AGENT]:
        await asyncio.sleep(0.01)
    assert activator.app is not None
    while activator.app.connections:
        await asyncio.sleep(0.01)


async def test_a_client_leaving_a_relayed_connection_closes_it_on_the_pod(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    await backends.set_ready(AGENT, [agent_address])
    async with httpx.AsyncClient(base_url=f"http://{agent_address}", trust_env=False) as http:
        async with dial(activator) as ws:
            await frame(ws)
            assert _gauge((await http.get("/metrics")).text) == 1
        while _gauge((await http.get("/metrics")).text) != 0:
            await asyncio.sleep(0.05)


def _gauge(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("omnia_active_connections{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no omnia_active_connections in the facade's metrics")


async def test_headers_subprotocol_path_frames_and_close_codes_are_relayed_both_ways(
    activator: ActivatorServer, backends: MemoryBackends
) -> None:
    """Against a plain WebSocket server that records what reaches it and echoes."""
    seen: list[dict] = []
    closed: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        seen.append({"path": ws.request.path, "headers": ws.request.headers, "subprotocol": ws.subprotocol})
        try:
            async for message in ws:
                if message == "close please":
                    await ws.close(4321, "as asked")
                    return
                await ws.send(message)
        except ConnectionClosed:
            pass
        if not closed.done():
            closed.set_result((ws.close_code, ws.close_reason))

    def select_subprotocol(ws: ServerConnection, offered: list[str]) -> str | None:
        return offered[0] if offered else None

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as pod:
        port = pod.sockets[0].getsockname()[1]
        await backends.set_ready(AGENT, [Address("127.0.0.1", port)])
        headers = {"Authorization": "Bearer sk-test", "Origin": "https://chat.example", "X-Trace": "abc"}
        async with dial(activator, path="/ws?session_id=s1", additional_headers=headers,
                        subprotocols=["omnia.v1"]) as ws:
            assert ws.subprotocol == "omnia.v1"
            await ws.send("text frame")
            assert await ws.recv() == "text frame"
            await ws.send(b"\x00binary\xff")
            assert await ws.recv() == b"\x00binary\xff"
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4321, "as asked")

        async with dial(activator) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            await ws.close(4000, "client done")
        assert await asyncio.wait_for(closed, timeout=10) == (4000, "client done")

    assert [(each["path"], each["subprotocol"]) for each in seen] == [("/ws?session_id=s1", "omnia.v1"), ("/ws", None)]
    received = seen[0]["headers"]
    assert received["Authorization"] == "Bearer sk-test" and received["Origin"] == "https://chat.example"
    assert received["X-Trace"] == "abc" and received["X-Forwarded-For"] == "127.0.0.1"
    assert received["X-Forwarded-Host"].startswith("support-agent.team-a.svc.cluster.local")
    assert "Sec-WebSocket-Key" in received and received.get_all("Authorization") == ["Bearer sk-test"]


@pytest.mark.parametrize(
    ("host", "says"),
    [
        pytest.param("billing.team-a", "no scale-to-zero agent team-a/billing", id="unknown agent"),
        pytest.param("support-agent.team-b", "no scale-to-zero agent team-b/support-agent", id="other namespace"),
        pytest.param("support-agent.team-a.example.com", "names no agent Service", id="not a Service name"),
    ],
)
async def test_a_host_naming_no_scale_to_zero_agent_is_misdirected(
    activator: ActivatorServer, host: str, says: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with dial(activator, host=host):
            pass
    assert refused.value.response.status_code == 421
    assert says in refused.value.response.body.decode()


async def test_a_bare_agent_name_is_accepted_when_one_namespace_has_it(
    activator: ActivatorServer, backends: MemoryBackends, agent_address: Address
) -> None:
    await backends.set_ready(AGENT, [agent_address])
    async with dial(activator, host="support-agent") as ws:
        assert (await frame(ws))["type"] == "connected"
    backends.add_agent(AgentRef(namespace="team-b", name="support-agent"))
    with pytest.raises(InvalidStatus) as refused:
        async with dial(activator, host="support-agent"):
            pass
    assert refused.value.response.status_code == 421
    assert "2 namespaces" in refused.value.response.body.decode()


async def test_a_plain_http_request_gets_503_with_retry_after_and_wakes_the_agent(
    activator: ActivatorServer,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{activator.port}", trust_env=False) as http:
        response = await http.post("/v1/chat/completions", headers={"Host": "support-agent.team-a"}, json={})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert activator.app is not None and activator.app.demand.requested(AGENT)


async def test_probes_and_metrics_answer_requests_by_address(activator: ActivatorServer) -> None:
    async with dial(activator):
        await held(activator, 1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{activator.port}", trust_env=False) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            metrics = (await http.get("/metrics")).text
    assert "omnia_activator_held_connections 1.0" in metrics
    assert 'omnia_activator_connections_total{result="timeout"} 0.0' in metrics


async def test_stopping_tells_held_clients_to_reconnect(start_activator) -> None:
    activator = await start_activator()
    async with dial(activator) as ws:
        await held(activator, 1)
        stopping = asyncio.ensure_future(activator.stop())
        error = await frame(ws)
        with pytest.raises(ConnectionClosed):
            await frame(ws)
        await stopping
    assert (error["code"], error["retryable"], ws.close_code) == ("DRAINING", True, 1012)


FRAME = "x" * 65536
FRAMES = 1000
"""64 MB in all: far beyond every socket and protocol buffer on the way, so only back-pressure stops it."""


async def _stalled(count) -> int:
    """Wait until ``count()`` stops growing (the sender is blocked), and return it."""
    last = -1
    while count() != last:
        last = count()
        await asyncio.sleep(0.5)
    return last


async def test_a_client_that_does_not_read_stops_the_pod_sending(
    activator: ActivatorServer, backends: MemoryBackends
) -> None:
    """The activator does not buffer what its client does not take: the pod's sends block instead."""
    sent = 0

    async def flood(ws: ServerConnection) -> None:
        nonlocal sent
        for _ in range(FRAMES):
            await ws.send(FRAME)
            sent += 1
        await ws.wait_closed()

    async with serve(flood, "127.0.0.1", 0, max_size=None) as pod:
        await backends.set_ready(AGENT, [Address("127.0.0.1", pod.sockets[0].getsockname()[1])])
        async with dial(activator, max_size=None) as ws:
            assert await _stalled(lambda: sent) < FRAMES
            received = 0
            while received < FRAMES:
                assert await asyncio.wait_for(ws.recv(), timeout=30) == FRAME
                received += 1
        assert sent == FRAMES


async def test_a_pod_that_does_not_read_stops_the_client_sending(
    activator: ActivatorServer, backends: MemoryBackends
) -> None:
    reading = asyncio.Event()
    received = 0

    async def slow(ws: ServerConnection) -> None:
        nonlocal received
        await reading.wait()
        async for message in ws:
            assert message == FRAME
            received += 1
            if received == FRAMES:
                await ws.send("all received")

    async with serve(slow, "127.0.0.1", 0, max_size=None) as pod:
        await backends.set_ready(AGENT, [Address("127.0.0.1", pod.sockets[0].getsockname()[1])])
        async with dial(activator) as ws:
            sent = 0

            async def flood() -> None:
                nonlocal sent
                for _ in range(FRAMES):
                    await ws.send(FRAME)
                    sent += 1

            sending = asyncio.ensure_future(flood())
            try:
                assert await _stalled(lambda: sent) < FRAMES
                reading.set()
                await asyncio.wait_for(sending, timeout=60)
                assert await asyncio.wait_for(ws.recv(), timeout=30) == "all received"
            finally:
                sending.cancel()


class Unreachable(MemoryBackends):
    async def scale_to_zero_namespaces(self, name: str):
        raise httpx.ConnectError("the API server is unreachable")


async def test_when_the_cluster_cannot_be_asked_the_client_is_told_to_retry(start_activator) -> None:
    """An API outage is not the client's mistake: retryable, not misdirected."""
    activator = await start_activator(backends=Unreachable())
    async with dial(activator) as ws:
        error = await frame(ws)
        with pytest.raises(ConnectionClosed):
            await frame(ws)
    assert (error["code"], error["retryable"], ws.close_code) == ("RUNTIME_UNAVAILABLE", True, 1013)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{activator.port}", trust_env=False) as http:
        response = await http.get("/v1/models", headers={"Host": "support-agent.team-a"})
    assert response.status_code == 503 and "Retry-After" in response.headers
