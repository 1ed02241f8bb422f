"""The runtime dies and comes back: clients are told, and the facade recovers by itself."""

from __future__ import annotations

import asyncio

import httpx

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb

from .conftest import RunningFacade, StartFacade
from .harness import RuntimeDouble, closed, connect, eventually, receive, receive_until, send


async def test_runtime_killed_mid_turn_then_restarted(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """The whole outage story on one facade process.

    During the outage clients get a retryable RUNTIME_UNAVAILABLE and close
    code 1013 (try again later) and /readyz says 503; once the runtime listens
    again on the same port, new connections and /readyz work without any
    restart of the facade — a gRPC channel left in failure must not stick.
    """
    async with facade.http() as http:
        assert (await http.get("/readyz")).status_code == 200
        async with await connect(facade.ws_url) as ws:
            await receive(ws)
            await send(ws, {"type": "message", "content": "slow"})
            assert (await receive(ws))["content"] == "working"
            await runtime.kill()
            error = await receive(ws)
            code, _ = await closed(ws)
        assert (error["code"], error["retryable"], code) == ("RUNTIME_UNAVAILABLE", True, 1013)
        assert facade.metric("omnia_turns_total", {"outcome": "aborted"}) == 1

        down = await http.get("/readyz")
        assert down.status_code == 503
        assert down.json()["status"] == "runtime unavailable"

        # A new connection is announced from the facade's cached description
        # of the runtime; its first message finds the runtime gone.
        async with await connect(facade.ws_url) as ws:
            assert (await receive(ws))["type"] == "connected"
            await send(ws, {"type": "message", "content": "hi"})
            refused = await receive(ws)
            code, _ = await closed(ws)
        assert (refused["code"], refused["retryable"], code) == ("RUNTIME_UNAVAILABLE", True, 1013)

        await runtime.start()
        assert await _ready_within(http, seconds=5)
        async with await connect(facade.ws_url) as ws:
            assert (await receive(ws))["type"] == "connected"
            await send(ws, {"type": "message", "content": "hi"})
            assert (await receive_until(ws, "done"))[-1]["finish_reason"] == "stop"


async def _ready_within(http: httpx.AsyncClient, *, seconds: float) -> bool:
    """Whether /readyz turns 200 within ``seconds``.

    Not immediately: the channel retries a vanished runtime with a back-off of
    up to a second, and a probe may land just before the next attempt.
    """
    async with asyncio.timeout(seconds):
        while (await http.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.1)
    return True


async def test_idle_connections_with_a_stream_are_told_when_the_runtime_dies(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """A connection that holds a stream (it talked, or resumed) loses it with the runtime.

    One that has not talked yet holds nothing there, and stays open.
    """
    async with (
        await connect(facade.ws_url) as talked,
        await connect(facade.ws_url + "?session_id=known-session") as resumed,
        await connect(facade.ws_url) as silent,
    ):
        await receive(talked)
        await send(talked, {"type": "message", "content": "hi"})
        await receive_until(talked, "done")
        await receive(resumed)
        await receive(silent)
        await runtime.kill()
        errors = [await receive(talked), await receive(resumed)]
        codes = [(await closed(talked))[0], (await closed(resumed))[0]]
        await send(silent, {"type": "ping", "id": "still-here"})
        assert (await receive(silent))["type"] == "pong"
    assert [e["code"] for e in errors] == ["RUNTIME_UNAVAILABLE"] * 2
    assert codes == [1013, 1013]
    assert await eventually(lambda: facade.connections() == 0)


async def test_unreachable_runtime_answers_within_the_open_timeout(
    start_facade: StartFacade, runtime: RuntimeDouble
) -> None:
    await runtime.kill()
    facade = await start_facade(open_timeout=0.3)
    async with await connect(facade.ws_url) as ws:
        error = await receive(ws)
        code, _ = await closed(ws)
    assert (error["code"], error["retryable"], code) == ("RUNTIME_UNAVAILABLE", True, 1013)
    assert facade.metric("omnia_connections_total", {"result": "open_failed"}) == 1


async def test_readyz_fails_while_the_store_is_down(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    runtime.servicer.health.store_ok = False
    runtime.servicer.health.detail = "redis: connection refused"
    async with facade.http() as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "agent": "test-agent",
        "runtime": True,
        "store": False,
        "detail": "redis: connection refused",
    }


async def test_new_sessions_are_refused_once_the_cached_description_of_a_dead_runtime_expires(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """``connected`` is answered from a cached ``Describe``; a failed refresh drops it.

    So a runtime that died is noticed by new connections within seconds (the
    answer's second of life, then a refresh that waits up to the open
    timeout), not only at their first message.
    """
    async with await connect(facade.ws_url) as ws:
        assert (await receive(ws))["type"] == "connected"
    await runtime.kill()
    async with asyncio.timeout(10):
        while True:
            async with await connect(facade.ws_url) as ws:
                first = await receive(ws)
                if first["type"] == "error":
                    code, _ = await closed(ws)
                    break
            await asyncio.sleep(0.2)
    assert (first["code"], first["retryable"], code) == ("RUNTIME_UNAVAILABLE", True, 1013)
    await runtime.start()
    async with asyncio.timeout(10):
        while True:
            async with await connect(facade.ws_url) as ws:
                if (await receive(ws))["type"] == "connected":
                    break
            await asyncio.sleep(0.2)


async def test_after_a_quiet_spell_the_first_new_session_follows_the_runtime_s_current_rollout(
    facade: RunningFacade, runtime: RuntimeDouble, monkeypatch
) -> None:
    """Why: a cached ``Describe`` of any age was served while a refresh ran, so the first session after a
    quiet spell got the rollout of whenever the last one started (a weight step seemed not to apply). An
    answer older than the staleness bound now waits for the refresh.

    The bounds are shortened so that the quiet spell is short; what is compared is versions, not times.
    """
    from omnia.facade import relaying

    monkeypatch.setattr(relaying, "_DESCRIPTION_TTL_SECONDS", 0.05)
    monkeypatch.setattr(relaying, "_DESCRIPTION_STALE_SECONDS", 0.1)
    async with await connect(facade.ws_url) as ws:
        assert (await receive(ws))["prompt_version"] == runtime.servicer.description.stable_version
    runtime.servicer.description = pb.Description(agent=runtime.servicer.description.agent,
                                                  stable_version="1.0.0", canary_version="2.0.0",
                                                  canary_weight=100)
    await asyncio.sleep(0.3)
    async with await connect(facade.ws_url) as ws:
        assert (await receive(ws))["prompt_version"] == "2.0.0"
