"""The WebSocket ↔ Converse relay, against a scripted runtime on loopback gRPC."""

from __future__ import annotations

import pytest

from omnia._proto.omnia.runtime.v1 import runtime_pb2 as pb
from omnia.protocol import sessions

from .conftest import RunningFacade
from .harness import HELLO_CHUNKS, RuntimeDouble, closed, connect, receive, receive_until, send


async def test_a_turn_streams_connected_chunks_and_done_in_order(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        hello = await receive(ws)
        assert hello == {
            "type": "connected",
            "session_id": hello["session_id"],
            "agent": "test-agent",
            "protocol_version": "1",
            "prompt_version": "1.0.0",
            "resumed": False,
            "turns": 0,
        }
        await send(ws, {"type": "message", "content": "hi"})
        frames = await receive_until(ws, "done")
    assert [f["content"] for f in frames if f["type"] == "chunk"] == list(HELLO_CHUNKS)
    assert frames[-1] == {
        "type": "done",
        "finish_reason": "stop",
        "usage": {"input_tokens": 7, "output_tokens": 3, "cost": 0.002},
        "turn_index": 0,
    }


async def test_one_connection_carries_many_turns(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        for _ in range(3):
            await send(ws, {"type": "message", "content": "hi"})
            assert (await receive_until(ws, "done"))[-1]["type"] == "done"


async def test_open_carries_caller_identity_and_trace_context(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """The runtime stores who opened the session and joins the client's trace."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"traceparent": traceparent, "User-Agent": "pytest-client"}
    async with await connect(facade.ws_url, additional_headers=headers) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        await receive_until(ws, "done")
    opened = runtime.servicer.opens[-1]
    assert opened.traceparent == traceparent
    assert dict(opened.metadata) == {
        "auth_method": "none",
        "auth_subject": "anonymous",
        "user_agent": "pytest-client",
    }


async def test_malformed_traceparent_is_not_forwarded(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url, additional_headers={"traceparent": "junk"}) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        await receive_until(ws, "done")
    assert runtime.servicer.opens[-1].traceparent == ""


async def test_message_id_and_metadata_reach_the_runtime(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "hi", "id": "m1", "metadata": {"lang": "fr"}})
        await receive_until(ws, "done")
    message = runtime.servicer.received[-1].message
    assert (message.id, message.content, message.metadata_json) == ("m1", "hi", '{"lang":"fr"}')


async def test_a_new_session_costs_the_runtime_nothing_until_its_first_message(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """``connected`` comes from the facade alone; the first message creates the session.

    Idle connections are most connections: they hold no gRPC stream, no
    conversation in the runtime and no session in the store. The session is
    created under the id and on the prompt version ``connected`` announced.
    """
    async with await connect(facade.ws_url) as ws:
        hello = await receive(ws)
        await send(ws, {"type": "ping", "id": "p"})
        assert (await receive(ws))["type"] == "pong"
        assert runtime.servicer.opens == []
        await send(ws, {"type": "message", "content": "hi"})
        assert (await receive_until(ws, "done"))[-1]["turn_index"] == 0
        await send(ws, {"type": "message", "content": "hi again"})
        await receive_until(ws, "done")
    [opened] = runtime.servicer.opens
    assert (opened.create, opened.session_id, opened.prompt_version) == (
        True, hello["session_id"], hello["prompt_version"],
    )
    assert runtime.servicer.sessions[hello["session_id"]] == 2


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        pytest.param(0, "1.0.0", id="no-canary"),
        pytest.param(100, "2.0.0-rc", id="all-canary"),
    ],
)
async def test_connected_announces_the_version_the_rollout_gives_the_new_id(
    facade: RunningFacade, runtime: RuntimeDouble, weight: int, expected: str
) -> None:
    runtime.servicer.description = pb.Description(
        agent="test-agent", stable_version="1.0.0", canary_version="2.0.0-rc", canary_weight=weight
    )
    async with await connect(facade.ws_url) as ws:
        hello = await receive(ws)
    assert hello["prompt_version"] == expected


async def test_a_canary_split_follows_the_shared_function_of_the_id(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """Facade and runtime must agree, so the facade uses the one shared choice."""
    runtime.servicer.description = pb.Description(
        agent="test-agent", stable_version="1.0.0", canary_version="2.0.0-rc", canary_weight=50
    )
    hellos = []
    for _ in range(12):
        async with await connect(facade.ws_url) as ws:
            hellos.append(await receive(ws))
    for hello in hellos:
        assert hello["prompt_version"] == sessions.prompt_version(
            hello["session_id"], stable="1.0.0", canary="2.0.0-rc", canary_weight=50
        )


async def test_a_store_outage_at_the_first_message_ends_that_turn_and_the_next_retries(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    """Nothing was stored, so the connection stays and the same id is tried again."""
    runtime.servicer.store_down = True
    async with await connect(facade.ws_url) as ws:
        hello = await receive(ws)
        await send(ws, {"type": "message", "content": "hi", "id": "m1"})
        error = await receive(ws)
        runtime.servicer.store_down = False
        await send(ws, {"type": "message", "content": "hi", "id": "m2"})
        frames = await receive_until(ws, "done")
    assert (error["code"], error["retryable"], error["id"]) == ("STORE_UNAVAILABLE", True, "m1")
    assert frames[-1]["turn_index"] == 0
    assert [o.session_id for o in runtime.servicer.opens] == [hello["session_id"]] * 2
    assert facade.metric("omnia_turns_total", {"outcome": "error"}) == 1


async def test_a_resume_opens_the_stream_at_once(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url + "?session_id=known-session") as ws:
        await receive(ws)
    [opened] = runtime.servicer.opens
    assert (opened.create, opened.session_id) == (False, "known-session")


async def test_resume_with_session_id_reopens_that_session(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url + "?session_id=known-session") as ws:
        hello = await receive(ws)
    assert (hello["session_id"], hello["resumed"], hello["turns"]) == ("known-session", True, 2)


async def test_resume_after_reconnect_sees_the_earlier_turns(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        session_id = (await receive(ws))["session_id"]
        await send(ws, {"type": "message", "content": "hi"})
        await receive_until(ws, "done")
    async with await connect(f"{facade.ws_url}?session_id={session_id}") as ws:
        hello = await receive(ws)
    assert (hello["session_id"], hello["resumed"], hello["turns"]) == (session_id, True, 1)


async def test_unknown_session_gets_session_not_found_and_close_4404(
    facade: RunningFacade,
) -> None:
    async with await connect(facade.ws_url + "?session_id=nope") as ws:
        error = await receive(ws)
        code, _ = await closed(ws)
    assert (error["code"], error["retryable"]) == ("SESSION_NOT_FOUND", False)
    assert code == 4404


async def test_overlong_session_id_is_refused_before_the_runtime(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url + "?session_id=" + "x" * 300) as ws:
        error = await receive(ws)
        code, _ = await closed(ws)
    assert (error["code"], code) == ("INVALID_MESSAGE", 1008)


async def test_runtime_errors_are_relayed_and_the_connection_goes_on(
    facade: RunningFacade,
) -> None:
    """A provider failure ends that turn only; the runtime decides if it is retryable."""
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "please fail"})
        error = await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        frames = await receive_until(ws, "done")
    assert error == {
        "type": "error",
        "code": "PROVIDER_ERROR",
        "message": "upstream said 503",
        "retryable": True,
    }
    assert frames[-1]["type"] == "done"


async def test_a_message_during_a_turn_gets_turn_in_progress(
    facade: RunningFacade, runtime: RuntimeDouble
) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        assert (await receive(ws))["content"] == "working"
        await send(ws, {"type": "message", "content": "me too", "id": "m2"})
        refused = await receive(ws)
        runtime.servicer.release.set()
        rest = await receive_until(ws, "done")
    assert (refused["code"], refused["retryable"]) == ("TURN_IN_PROGRESS", True)
    assert refused["id"] == "m2"
    assert [f["type"] for f in rest] == ["chunk", "done"]


async def test_cancel_reaches_the_runtime_and_ends_the_turn(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        await receive(ws)
        await send(ws, {"type": "cancel"})
        done = await receive(ws)
        await send(ws, {"type": "message", "content": "hi"})
        after = await receive_until(ws, "done")
    assert (done["type"], done["finish_reason"]) == ("done", "cancelled")
    assert after[-1]["finish_reason"] == "stop"
    assert facade.metric("omnia_turns_total", {"outcome": "cancelled"}) == 1


async def test_cancel_without_a_turn_is_ignored(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "cancel"})
        await send(ws, {"type": "ping"})
        assert (await receive(ws))["type"] == "pong"


async def test_turn_timeout_cancels_the_turn(start_facade, runtime: RuntimeDouble) -> None:
    from .conftest import TEST_CONFIG

    facade = await start_facade(TEST_CONFIG.model_copy(update={"turn_timeout_seconds": 0.2}))
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "slow"})
        frames = await receive_until(ws, "done")
    assert frames[-1]["finish_reason"] == "cancelled"


async def test_client_tool_call_waits_for_the_clients_result(facade: RunningFacade) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "use the client tool"})
        call = await receive(ws)
        await send(ws, {"type": "tool_result", "id": call["id"], "content": "Lisbon"})
        frames = await receive_until(ws, "done")
    assert call == {
        "type": "tool_call", "id": "call-1", "name": "get_location",
        "arguments": {"precise": True}, "client_side": True, "require_approval": False,
    }
    assert frames[0] == {"type": "chunk", "content": "you are in Lisbon"}


@pytest.mark.parametrize(
    ("approved", "expected"),
    [
        pytest.param(True, ["tool_result", "chunk", "done"], id="approved-runs-the-tool"),
        pytest.param(False, ["chunk", "done"], id="denied-skips-the-tool"),
    ],
)
async def test_approval_is_relayed(facade: RunningFacade, approved: bool, expected: list) -> None:
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, {"type": "message", "content": "approve this"})
        call = await receive(ws)
        await send(ws, {"type": "approval", "id": call["id"], "approved": approved})
        frames = await receive_until(ws, "done")
    assert call["require_approval"] is True
    assert [f["type"] for f in frames] == expected


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"type": "tool_result", "id": "call-9", "content": "x"}, id="tool-result"),
        pytest.param({"type": "approval", "id": "call-9", "approved": True}, id="approval"),
    ],
)
async def test_answers_to_calls_nobody_asked_are_refused(
    facade: RunningFacade, runtime: RuntimeDouble, frame: dict
) -> None:
    """Only an outstanding call may be answered, so a stray answer never reaches the runtime."""
    async with await connect(facade.ws_url) as ws:
        await receive(ws)
        await send(ws, frame)
        error = await receive(ws)
    assert (error["code"], error["id"]) == ("INVALID_MESSAGE", "call-9")
    assert runtime.servicer.received == []
