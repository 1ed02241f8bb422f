"""Bad input, floods and crowds: each gets an error frame, nothing else breaks."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest

from omnia.facade import auth

from .conftest import TEST_CONFIG, RunningFacade, StartFacade
from .harness import closed, connect, eventually, receive, receive_until, send

SMALL = TEST_CONFIG.model_copy(update={"max_message_bytes": 1024})


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param("not json at all", "INVALID_MESSAGE", id="non-json"),
        pytest.param('{"type": "shout"}', "INVALID_MESSAGE", id="unknown-type"),
        pytest.param('{"content": "hi"}', "INVALID_MESSAGE", id="missing-type"),
        pytest.param('{"type": "message"}', "INVALID_MESSAGE", id="missing-content"),
        pytest.param('{"type": "message", "content": 3}', "INVALID_MESSAGE", id="wrong-field-type"),
        pytest.param("[]", "INVALID_MESSAGE", id="not-an-object"),
        pytest.param(b"\x00\x01binary", "INVALID_MESSAGE", id="binary"),
        pytest.param(
            json.dumps({"type": "message", "content": "x" * 2000}), "MESSAGE_TOO_LARGE",
            id="oversized-text",
        ),
        pytest.param(b"x" * 2000, "MESSAGE_TOO_LARGE", id="oversized-binary"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_keeps_working(
    start_facade: StartFacade, payload: str | bytes, code: str
) -> None:
    facade = await start_facade(SMALL)
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await ws.send(payload)
        error = await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        frames = await receive_until(ws, "done")
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, False)
    assert frames[-1]["type"] == "done"
    assert facade.metric("omnia_errors_total", {"code": code}) == 1
    assert facade.metric("omnia_messages_received_total", {"type": "refused"}) == 1


async def test_frames_above_the_hard_limit_close_with_1009(start_facade: StartFacade) -> None:
    """Past four times the message limit the server will not even buffer the frame."""
    facade = await start_facade(SMALL)
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await ws.send("x" * (64 * 1024 + 1))
        code, _ = await closed(ws)
    assert code == 1009


async def test_ping_is_answered_by_the_facade(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "ping", "id": "p1"})
        assert await receive(ws) == {"type": "pong", "id": "p1"}


BAD_FRAMES = (
    "garbage",
    '{"type": "nope"}',
    b"\xff\xfe",
    '{"type": "message", "content": ""}',
    "x" * 1500,
)


async def _send_bad_frames(ws, count: int) -> None:
    """Send ``count`` bad frames in batches, reading the error after each batch.

    Batching keeps both directions moving: a client that only writes would
    (rightly) be stopped by the server's backpressure.
    """
    batch = 50
    for start in range(0, count, batch):
        for index in range(start, start + batch):
            await ws.send(BAD_FRAMES[index % len(BAD_FRAMES)])
        for _ in range(batch):
            assert (await receive(ws))["type"] == "error"


async def test_thousands_of_bad_frames_do_not_grow_memory(start_facade: StartFacade) -> None:
    """Memory retained after 1,000 more bad frames is the same as after the first few.

    Measured with tracemalloc on this process, which hosts both the facade and
    the client, as allocations still alive after each phase: a per-frame leak
    of even a few dozen bytes would show as tens of kilobytes.
    """
    facade = await start_facade(SMALL)
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await _send_bad_frames(ws, 500)  # warm caches, buffers and lazily built objects
        gc.collect()
        tracemalloc.start()
        try:
            await _send_bad_frames(ws, 1000)
            gc.collect()
            after_1000, _ = tracemalloc.get_traced_memory()
            await _send_bad_frames(ws, 3000)
            gc.collect()
            after_4000, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await send(ws, {"type": "message", "content": "still there?"})
        frames = await receive_until(ws, "done")
    assert frames[-1]["type"] == "done"
    assert after_4000 - after_1000 < 48 * 1024, (after_1000, after_4000)


async def test_a_flood_is_rate_limited_per_connection(start_facade: StartFacade) -> None:
    """Past the burst, frames are refused with RATE_LIMITED; other connections are unaffected."""
    facade = await start_facade(
        TEST_CONFIG.model_copy(update={"messages_per_second": 1, "message_burst": 3})
    )
    async with await connect(facade.ws_url) as flooder, await connect(facade.ws_url) as calm:
        await receive(flooder)
        await receive(calm)
        for index in range(5):
            await send(flooder, {"type": "ping", "id": str(index)})
        answers = [await receive(flooder) for _ in range(5)]
        await send(calm, {"type": "ping"})
        calm_answer = await receive(calm)
    assert [a["type"] for a in answers] == ["pong", "pong", "pong", "error", "error"]
    assert {a.get("code") for a in answers[3:]} == {"RATE_LIMITED"}
    assert answers[3]["retryable"] is True
    assert calm_answer["type"] == "pong"
    assert facade.metric("omnia_errors_total", {"code": "RATE_LIMITED"}) == 2


async def test_connections_beyond_the_limit_are_refused_with_1013(
    start_facade: StartFacade,
) -> None:
    facade = await start_facade(TEST_CONFIG.model_copy(update={"max_connections": 2}))
    async with await connect(facade.ws_url) as first, await connect(facade.ws_url) as second:
        await receive(first)
        await receive(second)
        async with await connect(facade.ws_url) as third:
            refused = await receive(third)
            code, _ = await closed(third)
        assert facade.connections() == 2
    assert (refused["code"], refused["retryable"], code) == ("CAPACITY_EXCEEDED", True, 1013)
    # A freed slot is usable again.
    assert await eventually(lambda: facade.connections() == 0)
    async with await connect(facade.ws_url) as fourth:
        assert (await receive(fourth))["type"] == "connected"
    assert facade.metric("omnia_connections_total", {"result": "rejected_capacity"}) == 1


async def test_one_principal_holds_at_most_its_share_of_connections(start_facade: StartFacade) -> None:
    """One API key cannot take every connection of a replica: past its share it is refused,
    over WebSockets and the open protocols alike, while another key still gets in."""
    facade = await start_facade(
        TEST_CONFIG.model_copy(update={"max_connections": 10, "max_connections_per_principal": 2}),
        authenticator=auth.ApiKeys(["greedy", "other"]),
    )
    greedy, other = f"{facade.ws_url}?api_key=greedy", f"{facade.ws_url}?api_key=other"
    async with await connect(greedy) as first, await connect(greedy) as second:
        assert [(await receive(ws))["type"] for ws in (first, second)] == ["connected", "connected"]
        async with await connect(greedy) as third:
            refused = await receive(third)
            code, _ = await closed(third)
        async with facade.http() as http:
            completion = await http.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer greedy"},
                json={"model": "support-agent", "messages": [{"role": "user", "content": "hi"}]},
            )
            served = await http.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer other"},
                json={"model": "support-agent", "messages": [{"role": "user", "content": "hi"}]},
            )
        async with await connect(other) as calm:
            assert (await receive(calm))["type"] == "connected"
    assert (refused["code"], refused["retryable"], code) == ("CAPACITY_EXCEEDED", True, 1013)
    assert "2 connections" in refused["message"]
    assert completion.status_code == 503, completion.text
    assert completion.json()["error"]["code"] == "CAPACITY_EXCEEDED"
    assert served.status_code == 200, served.text
    assert facade.metric("omnia_connections_total", {"result": "rejected_principal"}) == 2
    # The slots come back when the connections close, and a refused one held none.
    assert await eventually(lambda: facade.connections() == 0)
    async with await connect(greedy) as first, await connect(greedy) as second:
        assert [(await receive(ws))["type"] for ws in (first, second)] == ["connected", "connected"]


async def test_without_authentication_there_is_no_principal_to_bound(start_facade: StartFacade) -> None:
    """With auth none every client is the same anonymous caller: the bound would be the
    replica's, so it does not apply (maxConnections does)."""
    facade = await start_facade(TEST_CONFIG.model_copy(update={"max_connections_per_principal": 1}))
    async with await connect(facade.ws_url) as first, await connect(facade.ws_url) as second:
        assert [(await receive(ws))["type"] for ws in (first, second)] == ["connected", "connected"]
