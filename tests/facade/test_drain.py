"""SIGTERM: stop accepting, let running turns finish, then close with a reconnect hint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
import pytest

from .conftest import TEST_CONFIG, RunningFacade, StartFacade
from .harness import RuntimeDouble, closed, connect, receive, receive_until, send

DRAINING = ("DRAINING", True)


async def _draining(facade: RunningFacade) -> asyncio.Task[None]:
    task = asyncio.create_task(facade.server.stop())
    while not facade.server.relay.draining:
        await asyncio.sleep(0.01)
    return task


async def test_drain_lets_a_running_turn_finish_then_closes_with_1012(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url) as busy, await connect(facade.ws_url) as idle:
        await receive(busy)
        await receive(idle)
        await send(busy, {"type": "message", "content": "slow"})
        await receive(busy)

        stopping = await _draining(facade)

        # Idle connections go at once, with the reason and the reconnect hint.
        idle_error = await receive(idle)
        assert ((idle_error["code"], idle_error["retryable"]), await closed(idle)) == (
            DRAINING, (1012, "service restart"),
        )
        # New connections are refused, and the load balancer is told to stop routing here.
        async with facade.http() as http:
            assert (await http.get("/readyz")).status_code == 503
        async with await connect(facade.ws_url) as late:
            late_error = await receive(late)
            assert (await closed(late))[0] == 1012
        assert (late_error["code"], late_error["retryable"]) == DRAINING

        # The running turn completes, then its connection is closed the same way.
        runtime.servicer.release.set()
        frames = await receive_until(busy, "done")
        busy_error = await receive(busy)
        assert (await closed(busy))[0] == 1012
    assert frames[-1]["finish_reason"] == "stop"
    assert (busy_error["code"], busy_error["retryable"]) == DRAINING
    await stopping


async def test_a_new_message_during_drain_is_refused(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        await receive(ws)
        stopping = await _draining(facade)
        await send(ws, {"type": "cancel"})
        frames = await receive_until(ws, "done")
        assert (await receive(ws))["code"] == "DRAINING"
    assert frames[-1]["finish_reason"] == "cancelled"
    await stopping


async def test_turns_still_running_at_the_drain_timeout_are_closed(
    start_facade: StartFacade, runtime: RuntimeDouble
) -> None:
    facade = await start_facade(TEST_CONFIG.model_copy(update={"drain_timeout_seconds": 0.3}))
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        await receive(ws)
        stopping = await _draining(facade)
        error = await receive(ws)
        code, _ = await closed(ws)
    await stopping
    assert ((error["code"], error["retryable"]), code) == (DRAINING, 1012)
    assert facade.metric("omnia_turns_total", {"outcome": "aborted"}) == 1


FACADE_PROCESS = """
import sys
from omnia.config import AgentConfig, FacadeConfig
from omnia.facade.server import serve

config = AgentConfig(name="drained", facade=FacadeConfig(drain_timeout_seconds=5))
serve(config, runtime_address=sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_the_real_process_and_exits_cleanly(
    runtime: RuntimeDouble, sig: signal.Signals, spawned
) -> None:
    """The process entry point: a signal mid-turn waits for ``done``, then exits 0."""
    port = _free_port()
    process = spawned(
        [sys.executable, "-c", FACADE_PROCESS, runtime.address, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(200):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    async with await connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        await receive(ws)
        process.send_signal(sig)
        await asyncio.sleep(0.3)
        assert process.poll() is None, "exited before the turn finished"
        runtime.servicer.release.set()
        frames = await receive_until(ws, "done")
        error = await receive(ws)
        code, _ = await closed(ws)
    returncode = await asyncio.to_thread(process.wait, 10)
    output = process.stdout.read().decode() if process.stdout else ""
    assert frames[-1]["type"] == "done"
    assert (error["code"], code) == ("DRAINING", 1012)
    assert returncode == 0, output


async def test_drain_tells_a_session_that_never_talked_to_start_anew(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """Its id was never stored, so resuming it would only get SESSION_NOT_FOUND."""
    async with (
        await connect(facade.ws_url) as silent,
        await connect(facade.ws_url + "?session_id=known-session") as resumed,
    ):
        await receive(silent)
        await receive(resumed)
        stopping = await _draining(facade)
        silent_error, resumed_error = await receive(silent), await receive(resumed)
    await stopping
    assert (silent_error["code"], resumed_error["code"]) == ("DRAINING", "DRAINING")
    assert "start a new session" in silent_error["message"]
    assert "session_id" in resumed_error["message"]


async def test_a_lingering_facade_answers_late_connections_with_draining_until_it_stops(
    start_facade: StartFacade,
) -> None:
    """After the drain, a connection still routed here is told to reconnect, not refused."""
    facade = await start_facade(linger_seconds=30.0)
    stopping = await _draining(facade)
    while facade.server.relay.connections:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert not stopping.done(), "stopped without lingering"

    async with await connect(facade.ws_url) as late:
        error = await receive(late)
        code, _ = await closed(late)
    async with facade.http() as http:
        ready = (await http.get("/readyz")).status_code

    facade.server.force_stop()
    await asyncio.wait_for(stopping, 10)
    assert ((error["code"], error["retryable"]), code, ready) == (DRAINING, 1012, 503)
